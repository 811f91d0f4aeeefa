"""Self-supervised fine-tuning on an unlabeled video.

    python scripts/finetune_unlabeled.py --video DIR --out OUT

See :mod:`imatch_s2ld.finetune.cli` (``--help`` lists the options; overrides ``key.sub=value``).
Several processes: ``accelerate launch scripts/finetune_unlabeled.py ...`` or ``torchrun``.
"""

from imatch_s2ld.finetune.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
