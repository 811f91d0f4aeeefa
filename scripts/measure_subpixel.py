"""Sub-pixel accuracy of S2LD checkpoints or matchers on pairs with exact ground truth
(:mod:`imatch_s2ld.eval.subpixel`).

    python scripts/measure_subpixel.py CKPT_OR_MATCHER [...] --data datasets/synthetic/held_out \
        [--resize 640] [--max-pairs 24] [--out results.json]

Each argument is an S2LD checkpoint file or a matcher name (``dfm:disk``, ``disk+lightglue``, ``sift``).

``--data`` is a MegaDepth-layout folder with ``scene_info/`` (``imatch generate`` writes one). Prints one
line per checkpoint (MMA at 0.5/1/3/5 px, median error, uncertainty calibration, time per pair).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imatch_s2ld.cli import ArgumentParser, run_command


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="measure_subpixel.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", metavar="CKPT_OR_MATCHER",
                   help="S2LD checkpoints (s2ld_default.pt, model.pt, last.pt) or matcher names")
    p.add_argument("--data", required=True, help="MegaDepth-layout folder with scene_info/")
    p.add_argument("--resize", type=int, default=640, help="longer side the pairs are read at")
    p.add_argument("--max-pairs", type=int, default=24, help="pairs measured (the first ones)")
    p.add_argument("--min-overlap", type=float, default=0.1, help="pairs with at least this overlap")
    p.add_argument("--out", help="write the results as JSON")
    return p


def _run(args: argparse.Namespace) -> int:
    import torch

    from imatch_s2ld.data.megadepth_train import build_megadepth_dataset
    from imatch_s2ld.errors import InputError
    from imatch_s2ld.eval.subpixel import measure
    from imatch_s2ld.matchers import load_matcher
    from imatch_s2ld.models import S2LD

    data = Path(args.data)
    if not (data / "scene_info").is_dir():
        raise InputError(f"--data {data}: no scene_info/ folder (a MegaDepth-layout dataset)")
    conf = {"img_resize": args.resize, "img_pad": False, "min_overlap": args.min_overlap, "augment": None}
    ds = build_megadepth_dataset(data / "scene_info", data, conf)
    pairs = [ds[i] for i in range(min(len(ds), args.max_pairs))]
    torch.set_grad_enabled(False)
    results = {}
    for ckpt in args.checkpoints:
        r = measure(S2LD.from_checkpoint(ckpt) if Path(ckpt).is_file() else load_matcher(ckpt), pairs)
        results[ckpt] = r
        mma = " / ".join(f"{r[f'mma@{t}px']:.1f}" for t in ("0.5", "1", "3", "5"))
        levels = ", ".join(f"{lv['median_error_px']:.3f}" for lv in r["levels"])
        print(f"{ckpt}: {r['pairs']} pairs, {r['matches']} matches; MMA@0.5/1/3/5 px {mma}; median "
              f"{r['median_error_px']:.3f} px (levels {levels}); "
              f"std-error Spearman {r['std_error_spearman']:.2f}, within 1/2 std {r['within_1std']:.0f}% / "
              f"{r['within_2std']:.0f}%; {r['seconds_per_pair']:.2f} s/pair")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("measure_subpixel.py", build_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
