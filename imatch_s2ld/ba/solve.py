"""``solve(problem, config) -> BAResult``: input checks, then the chosen backend."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from .checks import check_problem
from .config import ba_conf
from .problem import BAResult, BundleProblem

__all__ = ["solve"]

# backend name -> (module, function); imported on first use (theseus is an optional extra).
_BACKENDS: dict[str, tuple[str, str]] = {
    "schur": ("imatch_s2ld.ba.schur", "solve_schur"),
    "pypose_dense": ("imatch_s2ld.ba.backends.pypose_dense", "solve_pypose_dense"),
    "ceres": ("imatch_s2ld.ba.backends.ceres", "solve_ceres"),
    "theseus": ("imatch_s2ld.ba.backends.theseus_ba", "solve_theseus"),
}


def _backend(name: str) -> Callable[[BundleProblem, dict[str, Any]], BAResult]:
    module, func = _BACKENDS[name]
    return getattr(importlib.import_module(module), func)


def solve(problem: BundleProblem, config: Mapping[str, Any] | None = None) -> BAResult:
    """Bundle-adjust ``problem`` (not modified) and return a :class:`BAResult`.

    Args:
        problem: see :class:`BundleProblem`.
        config: overrides of :data:`imatch_s2ld.ba.config.DEFAULT_CONF` (strict: unknown keys fail).
    Returns:
        The result; degenerate input (non-finite values, too few tracks, points behind the cameras,
        no baseline) gives ``success=False`` with the reason and the initial values, never NaN.
    Raises:
        InputError: bad configuration (unknown key or value, backend not installed).
    """
    conf = ba_conf(config)
    start = time.perf_counter()
    reason = check_problem(problem, conf)
    if reason is not None:
        return BAResult.failed(problem, reason, conf["backend"], time.perf_counter() - start)
    return _backend(conf["backend"])(problem, conf)
