"""Re-export an S2LD checkpoint under a changed configuration (see :mod:`imatch_s2ld.models.export`)."""

from imatch_s2ld.models.export import cli

if __name__ == "__main__":
    raise SystemExit(cli())
