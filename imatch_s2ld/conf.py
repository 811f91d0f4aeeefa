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

    Raises:
        InputError: a key of ``overrides`` is not in ``default`` (names the dotted key), or a
            dict-valued option is given a non-dict value.
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
            merged[key] = _plain(value)
    return merged


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
