"""User-facing errors: one clear line naming the file, line or argument at fault."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (file, line, argument). CLIs print ``str(err)`` and exit with code 2."""
