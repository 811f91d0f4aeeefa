"""Fine-tuning geometry sources against ground truth (see :mod:`imatch_s2ld.finetune.measure`)."""

from imatch_s2ld.finetune.measure import cli

if __name__ == "__main__":
    raise SystemExit(cli())
