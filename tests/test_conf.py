"""Strict configuration: every component rejects an unknown key and names it."""

from __future__ import annotations

import pytest

from imatch_s2ld.conf import merge_conf, reject_unknown
from imatch_s2ld.data.augment import PhotometricAugmentConfig
from imatch_s2ld.data.megadepth_train import MegaDepthTrainConfig
from imatch_s2ld.errors import InputError
from imatch_s2ld.eval import config_from_dict
from imatch_s2ld.losses import TriangulationRegularizer
from imatch_s2ld.synthetic import Domain, resolve_config


def test_reject_unknown_names_the_keys():
    reject_unknown({"a": 1}, ["a", "b"], "thing")
    with pytest.raises(InputError, match=r"thing: unknown option\(s\) \['c'\]"):
        reject_unknown({"a": 1, "c": 2}, ["a", "b"], "thing")


def test_merge_conf_is_strict_recursive_and_pure():
    default = {"a": 1, "sub": {"b": 2}}
    assert merge_conf(default, {"sub": {"b": 3}}) == {"a": 1, "sub": {"b": 3}}
    assert default == {"a": 1, "sub": {"b": 2}}
    with pytest.raises(InputError, match="sub.c"):
        merge_conf(default, {"sub": {"c": 1}})


@pytest.mark.parametrize("build, key", [
    (lambda: resolve_config("default", viewz=3), "viewz"),
    (lambda: Domain().replace(fogg=1.0), "fogg"),
    (lambda: config_from_dict({"out": "o", "matchr": "sift"}), "matchr"),
    (lambda: MegaDepthTrainConfig.from_dict({"img_resise": 640}), "img_resise"),
    (lambda: PhotometricAugmentConfig.from_dict({"brightnes": 0.1}), "brightnes"),
    (lambda: TriangulationRegularizer(kernal="cauchy"), "kernal"),
])
def test_components_reject_unknown_keys(build, key):
    with pytest.raises(InputError, match=key):
        build()


@pytest.mark.parametrize("override, expected", [
    ({"n": "x"}, r"'n': expected an integer, got 'x'"),
    ({"n": 1.5}, r"'n': expected an integer"),
    ({"n": True}, r"'n': expected an integer"),
    ({"x": "0.1"}, r"'x': expected a number"),
    ({"flag": 1}, r"'flag': expected true or false"),
    ({"names": 3}, r"'names': expected a list \(or one str\)"),
    ({"sizes": "a"}, r"'sizes': expected a list \(or one int\)"),
    ({"empty": "a"}, r"'empty': expected a list, got 'a'"),
    ({"n": {"a": 1}}, r"'n': expected a single value"),
    ({"sub": {"b": "two"}}, r"'sub.b': expected an integer"),
])
def test_merge_conf_checks_types(override, expected):
    default = {"n": 1, "x": 0.5, "flag": False, "names": ["a"], "sizes": [4], "empty": [], "free": None,
               "mode": "fast", "sub": {"b": 2}}
    with pytest.raises(InputError, match=expected):
        merge_conf(default, override)
    ok = {"n": 2, "x": 1, "flag": True, "names": "all", "sizes": 8, "empty": ["x"], "free": {"any": 1},
          "mode": 3, "sub": {"b": None}}  # ints for floats, one element for a list, anything for None/str
    assert merge_conf(default, ok)["sizes"] == 8
