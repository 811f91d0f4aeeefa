"""Training configurations: YAML file + dotted command-line overrides, merged strictly.

A run is described by one nested dict. It is built in three layers::

    default_conf  <-  configs/<name>.yaml  <-  CLI overrides  key.sub=value ...

The YAML file and the overrides are first merged with each other (OmegaConf: ``${...}``
interpolations are resolved), then merged **strictly** into ``default_conf`` with
:func:`imatch_s2ld.conf.merge_conf`: a key that is not in the defaults (a typo) fails with a
one-line :class:`~imatch_s2ld.errors.InputError` naming the dotted key. Values are type-checked
against their defaults (``train.lr=abc`` fails, naming ``train.lr``; rules: ``merge_conf``). Keys whose
default is ``null`` are free-form (any value; dicts given by the YAML file and by overrides are
deep-merged with each other, then replace the ``null``); the component that reads them checks
them (e.g. ``model.overrides`` by ``S2LD.from_config``, ``data.synthetic.overrides`` by the
synthetic generator, ``data.train.dataset.augment`` by
:class:`~imatch_s2ld.data.augment.PhotometricAugmentConfig`).

Override syntax (YAML values)::

    train.lr=1e-4  model.config=base  data.train.dataset.img_resize=320
    data.synthetic.overrides='{views: 20, size: [320, 240]}'  val.megadepth1500.root=null

The resolved configuration is written to ``<run_dir>/config.yaml`` (:func:`save_config`) and
stored in every checkpoint (``run_config``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..conf import merge_conf
from ..errors import InputError, first_line
from ..io import atomic_path

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_@-]*(\.[A-Za-z_0-9][A-Za-z0-9_@-]*)*$")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (``${...}`` interpolations kept unresolved until :func:`resolve`).

    Raises:
        InputError: missing file, YAML syntax error, or not a mapping (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, OSError) as err:
        raise InputError(f"{path}: cannot parse config ({first_line(err)})") from None
    if not OmegaConf.is_dict(cfg):
        raise InputError(f"{path}: config must be a YAML mapping, got {type(cfg).__name__}")
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML).

    Raises:
        InputError: an item without ``=`` or with a malformed key/value (names the item).
    """
    items = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep:
            raise InputError(f"override {item!r}: expected key.sub=value")
        if not _KEY.match(key.strip()):
            raise InputError(f"override {item!r}: malformed key {key!r}")
        items.append(item)
    try:
        cfg = OmegaConf.from_dotlist(items)
    except (OmegaConfBaseException, ValueError) as err:
        raise InputError(f"overrides {list(overrides)}: {first_line(err)}") from None
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def resolve(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``layers`` (later wins; not strict) and resolve ``${...}`` interpolations."""
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(dict(layer)) for layer in layers))
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except (OmegaConfBaseException, ValueError) as err:
        raise InputError(f"configuration: {first_line(err)}") from None


def build_config(
    default: Mapping[str, Any],
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> dict[str, Any]:
    """``default`` <- YAML ``path`` <- ``overrides`` (dotted strings or a nested dict), strictly.

    Raises:
        InputError: missing/malformed file, malformed override, unknown key (names the dotted
            key), or a value of the wrong type.
    """
    layers: list[Mapping[str, Any]] = []
    if path is not None:
        layers.append(read_yaml(path))
    if isinstance(overrides, Mapping):
        layers.append(overrides)
    elif overrides:
        layers.append(parse_overrides(overrides))
    user = resolve(*layers) if layers else {}
    try:
        conf = merge_conf(default, user)
    except InputError as err:
        where = f"{path}: " if path is not None else ""
        raise InputError(f"{where}{err}") from None
    return conf


def save_config(conf: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``conf`` as YAML atomically (``<run_dir>/config.yaml``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(dict(conf))))
    return path


def flatten(conf: Mapping[str, Any], sep: str = "/", _prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a/b": value}`` with bool/int/float/str leaves (others as strings)."""
    flat: dict[str, Any] = {}
    for key, value in conf.items():
        name = f"{_prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, sep, f"{name}{sep}"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
