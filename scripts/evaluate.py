"""Relative-pose evaluation CLI (thin wrapper of :func:`imatch_s2ld.eval.cli.main`)."""

import sys

from imatch_s2ld.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
