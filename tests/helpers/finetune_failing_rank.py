"""``torchrun ... tests/helpers/finetune_failing_rank.py [imatch finetune arguments]``: the fine-tuning
command with every training window of process rank 1 failing its step gate (as a failed bundle
adjustment would), for the two-process test. A test-only patch, not an option of the command."""

from __future__ import annotations

import os
import sys

from imatch_s2ld.finetune.cli import main
from imatch_s2ld.finetune.model import FinetuneModel

REASON = "test: every window of rank 1 fails"
_gate = FinetuneModel._step_gate


def _failing_gate(self, rec, num_frames):
    if int(os.environ.get("RANK", "0")) == 1:
        return False, REASON
    return _gate(self, rec, num_frames)


if __name__ == "__main__":
    FinetuneModel._step_gate = _failing_gate
    sys.exit(main(sys.argv[1:]))
