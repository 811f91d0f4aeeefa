"""The ``imatch`` console command: one sub-command per pipeline step.

    imatch demo      generate the synthetic default scenes and evaluate the baseline matchers
    imatch generate  render a synthetic preset (images, depths, poses) in several layouts
    imatch evaluate  relative-pose evaluation of a matcher on a dataset
    imatch match     match one image pair; draw and/or save the matches
    imatch ba        solve a saved (or synthetic) bundle-adjustment problem
    imatch finetune  self-supervised fine-tuning on an unlabeled video (= scripts/finetune_unlabeled.py)

Each sub-command is the ``main(argv)`` of an importable module; ``imatch CMD --help`` shows its options.
:class:`ArgumentParser` and :func:`run_command` give sub-commands the common error contract: bad input
prints ``PROG: error: ...`` (one line) and returns exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence

from .errors import InputError

COMMANDS = {
    "demo": ("imatch_s2ld.demo", "render the default scenes, evaluate S2LD and baselines"),
    "generate": ("imatch_s2ld.synthetic.cli", "render a synthetic preset"),
    "evaluate": ("imatch_s2ld.eval.cli", "relative-pose evaluation of a matcher on a dataset"),
    "match": ("imatch_s2ld.match_cli", "match one image pair; draw and/or save the matches"),
    "ba": ("imatch_s2ld.ba.cli", "solve a saved (or synthetic) bundle-adjustment problem"),
    "finetune": ("imatch_s2ld.finetune.cli", "self-supervised fine-tuning on an unlabeled video"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`InputError` (one line, exit 2) instead of printing usage."""

    def error(self, message: str):  # type: ignore[override]
        raise InputError(message)


MATCHER_NAMES = ("s2ld (default checkpoint), s2ld:PATH, sift, orb, loftr:PATH, aliked+lightglue, "
                 "disk+lightglue, dfm:disk|aliked, gcm:disk|aliked (training-free hierarchical matching)")


def add_matcher_arguments(parser: argparse.ArgumentParser, default: str, opt_note: str = "") -> None:
    """``--matcher NAME`` and the repeatable ``--matcher-opt KEY=VALUE`` (parse the latter with
    :func:`imatch_s2ld.matchers.parse_matcher_options`)."""
    parser.add_argument("--matcher", default=default, help=f"{MATCHER_NAMES} (default {default})")
    parser.add_argument("--matcher-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="a matcher option (repeatable; values parsed as int, float, true/false or "
                        f"text), e.g. max_keypoints=1024{opt_note}")


def run_command(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                body: Callable[[argparse.Namespace], int | None], intermixed: bool = False) -> int:
    """Parse ``argv`` and run ``body(args)``; return its exit code (0 for None), 0 after ``--help``,
    or 2 after printing ``"{prog}: error: {message}"`` for an :class:`InputError` (printed by the
    first process only when several run: ``torchrun`` / ``accelerate launch`` set ``RANK``)."""
    try:
        try:
            args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
        except SystemExit as exit_:  # --help
            return int(exit_.code or 0)
        return int(body(args) or 0)
    except InputError as err:
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        return 2


def _usage() -> str:
    lines = ["usage: imatch COMMAND [options]   (imatch COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"imatch: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if "prog" in inspect.signature(module.main).parameters:  # errors and usage say "imatch NAME"
        return int(module.main(rest, prog=f"imatch {name}") or 0)
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
