"""User-facing errors: one clear line naming the file, line or argument at fault."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (file, line, argument). CLIs print ``str(err)`` and exit with code 2."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
