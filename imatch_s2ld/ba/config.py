"""Bundle-adjustment options (merged strictly: a misspelt key fails with its name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..conf import merge_conf
from ..errors import InputError
from .robust import check_kernel

BACKENDS = ("schur", "pypose_dense", "ceres", "theseus")
SCALE_GAUGES = ("distance", "prior", "none")

DEFAULT_CONF: dict[str, Any] = {
    # schur (this package), pypose_dense (pp.optim.LM, small problems only), ceres (pycolmap),
    # theseus (optional extra)
    "backend": "schur",
    "max_iterations": 100,
    # Termination, with Ceres' meanings and defaults: relative cost change, max |gradient|, relative step.
    "function_tolerance": 1e-6,
    "gradient_tolerance": 1e-10,
    "parameter_tolerance": 1e-8,
    "robust_kernel": "none",  # none | huber | cauchy
    "robust_scale_px": 1.0,
    "inlier_threshold_px": 4.0,  # reported inlier mask; not used by the cost
    # Levenberg-Marquardt damping on diag(J^T J) (Marquardt scaling), trust-region update.
    "initial_lambda": 1e-4,
    "max_lambda": 1e12,
    # Scale gauge when fewer than two frames are fixed: "distance" keeps the distance between the first
    # fixed frame and `scale_frame` (default: the first free frame) exactly (a similarity rescale after each
    # step, cost-invariant); "prior" adds a soft residual on it; "none" leaves scale to the damping.
    "scale_gauge": "distance",
    "scale_frame": None,
    "scale_prior_weight": 1e4,
    # Degenerate-input guards (return a failed result with a reason).
    "min_points": 6,
    "max_behind_fraction": 0.5,
    "min_baseline_ratio": 1e-4,  # pure rotation: max camera-centre spread / median depth below this
    "dtype": "float64",  # float64 | float32
    "chunk_elements": 1 << 22,  # entries of the dense per-chunk block matrix of the Schur complement
}


def ba_conf(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults merged with ``config`` and validated."""
    conf = merge_conf(DEFAULT_CONF, config)
    if conf["backend"] not in BACKENDS:
        raise InputError(f"unknown BA backend {conf['backend']!r}; choose one of {BACKENDS}")
    check_kernel(conf["robust_kernel"])
    if conf["scale_gauge"] not in SCALE_GAUGES:
        raise InputError(f"unknown scale_gauge {conf['scale_gauge']!r}; choose one of {SCALE_GAUGES}")
    if conf["dtype"] not in ("float64", "float32"):
        raise InputError(f"BA dtype must be 'float64' or 'float32', got {conf['dtype']!r}")
    if int(conf["max_iterations"]) < 0:
        raise InputError("max_iterations must be >= 0")
    if float(conf["robust_scale_px"]) <= 0 or float(conf["inlier_threshold_px"]) <= 0:
        raise InputError("robust_scale_px and inlier_threshold_px must be positive")
    return conf
