"""Supervised pretraining of S2LD: ``accelerate launch scripts/pretrain.py --config configs/X.yaml``.

See :mod:`imatch_s2ld.train.pretrain` (``--help`` lists the options; overrides ``key.sub=value``).
"""

from imatch_s2ld.train.pretrain import cli

if __name__ == "__main__":
    raise SystemExit(cli())
