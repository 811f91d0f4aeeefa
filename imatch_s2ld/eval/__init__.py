"""Relative-pose evaluation: export predictions (cached), then score them.

``evaluate(conf) -> summary`` (:mod:`.pipeline`); the ``imatch evaluate`` command is :mod:`.cli`.
"""

from .export import ExportConfig, Prediction, load_prediction
from .pipeline import EvalConfig, config_from_dict, dataset_keys, evaluate
from .score import ScoreConfig, default_threshold, score_pair, summarize

__all__ = [
    "EvalConfig", "ExportConfig", "Prediction", "ScoreConfig", "config_from_dict", "dataset_keys",
    "default_threshold", "evaluate", "load_prediction", "score_pair", "summarize",
]
