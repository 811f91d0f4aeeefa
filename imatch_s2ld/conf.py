"""Strict configuration handling shared by every component: typos fail with the key named."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InputError


def merge_conf(default: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
               _prefix: str = "") -> dict[str, Any]:
    """Return a new dict: ``default`` updated by ``overrides``, recursively and strictly.

    Neither argument is modified. Nested dicts are merged key by key; any other value replaces
    the default (tuples become lists so the result is a plain, serialisable structure).

    Types follow the default value (:func:`check_type`): a bool option takes a bool, an int option
    an int, a float option any number, a list option a list (or one element of the list's kind, e.g.
    ``spacing: 4`` for ``[4]``), a dict option a dict. ``None`` is accepted everywhere (an option
    switched off or left to its component), and options whose default is ``None`` or a string take
    any value: the component that reads them checks their choices.

    Raises:
        InputError: a key of ``overrides`` is not in ``default`` (names the dotted key), or a value
            of the wrong type (names the key, the expected type and the value).
    """
    merged = {k: _plain(v) for k, v in default.items()}
    for key, value in (overrides or {}).items():
        name = f"{_prefix}{key}"
        if key not in default:
            known = ", ".join(sorted(str(k) for k in default))
            raise InputError(f"unknown configuration key {name!r} (known: {known})")
        if isinstance(default[key], Mapping):
            if not isinstance(value, Mapping):
                raise InputError(f"configuration key {name!r} expects a dict, got {type(value).__name__}")
            merged[key] = merge_conf(default[key], value, _prefix=f"{name}.")
        else:
            check_type(name, default[key], value)
            merged[key] = _plain(value)
    return merged


def _kind(ref: Any) -> tuple[str, Any] | None:
    """(what, predicate) for a default value; None: not checked."""
    if isinstance(ref, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(ref, int):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(ref, float):
        return "a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    return None


def check_type(name: str, ref: Any, value: Any) -> None:
    """Raise :class:`InputError` when ``value`` does not fit the type of the default ``ref`` (rules:
    :func:`merge_conf`). ``name``: the dotted key, for the message."""
    if value is None or ref is None or isinstance(ref, str):
        return
    if isinstance(ref, Mapping):
        ok, what = isinstance(value, Mapping), "a dict"
    elif isinstance(ref, list | tuple):
        ok, what = isinstance(value, list | tuple), "a list"
        kinds = {type(v) for v in ref}
        if not ok and len(kinds) == 1:  # one element of the list's kind stands for a list of one
            element = ref[0]
            fits = isinstance(value, str) if isinstance(element, str) else _kind(element)
            if isinstance(fits, tuple):
                fits = fits[1](value)
            ok, what = bool(fits), f"a list (or one {type(element).__name__})"
    elif isinstance(value, Mapping):
        ok, what = False, "a single value"
    else:
        kind = _kind(ref)
        if kind is None:
            return
        what, fits = kind
        ok = fits(value)
    if not ok:
        raise InputError(f"configuration key {name!r}: expected {what}, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def reject_unknown(keys: Iterable[str], known: Iterable[str], what: str) -> None:
    """Raise :class:`InputError` naming every key of ``keys`` not in ``known`` (``what``: the component)."""
    known = set(known)
    unknown = sorted(set(keys) - known)
    if unknown:
        raise InputError(f"{what}: unknown option(s) {unknown} (known: {sorted(known)})")
