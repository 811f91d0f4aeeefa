"""Pooled pose AUC of evaluations and a paired bootstrap against a baseline (:mod:`imatch_s2ld.eval.compare`).

    python scripts/compare_evaluations.py BASELINE_DIR OTHER_DIR [...] [--include fountain-P11,entry-P10]

Each DIR is an ``imatch evaluate --out`` folder or a folder of them (one per scene); the pairs must be
the same in all. Prints per evaluation the AUC@5/10/20 over all pairs and its difference to the
baseline +- the standard deviation of that difference (1000 paired resamples of the pairs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imatch_s2ld.cli import ArgumentParser, run_command


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="compare_evaluations.py", description=__doc__.split("\n\n")[0])
    p.add_argument("baseline", help="evaluation folder of the baseline")
    p.add_argument("others", nargs="+", metavar="DIR", help="evaluation folders to compare with it")
    p.add_argument("--include", help="comma-separated names of the evaluation folders to pool (default: all)")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--out", help="write the results as JSON")
    return p


def _run(args: argparse.Namespace) -> int:
    from imatch_s2ld.eval.compare import compare, load_errors

    include = args.include.split(",") if args.include else None
    base = load_errors(args.baseline, include)
    others = {d: load_errors(d, include) for d in args.others}
    result = compare(base, others, samples=args.samples)
    rows = {args.baseline: result.pop("baseline"), **result}
    for name, r in rows.items():
        cells = "  ".join(f"AUC@{t} {r[f'auc@{t}']:.1f} ({r[f'diff@{t}']:+.2f} +- {r[f'std@{t}']:.2f})"
                          for t in (5, 10, 20))
        print(f"{name}: {r['pairs']} pairs  {cells}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("compare_evaluations.py", build_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
