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


_WHAT = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fits_scalar(ref: Any, value: Any) -> bool | None:
    """Whether ``value`` has the type of the scalar default ``ref`` (None: a type that is not checked)."""
    if isinstance(ref, bool):
        return isinstance(value, bool)
    if isinstance(ref, int | float):
        allowed = int if isinstance(ref, int) else (int, float)
        return isinstance(value, allowed) and not isinstance(value, bool)
    if isinstance(ref, str):
        return isinstance(value, str)
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
        if not ok and ref and len({type(v) for v in ref}) == 1:  # one element stands for a list of one
            ok, what = bool(_fits_scalar(ref[0], value)), f"a list (or one {type(ref[0]).__name__})"
    elif isinstance(value, Mapping):
        ok, what = False, "a single value"
    else:
        fits = _fits_scalar(ref, value)
        if fits is None:
            return
        ok, what = fits, next(w for k, w in _WHAT.items() if isinstance(ref, k))  # bool before int
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
