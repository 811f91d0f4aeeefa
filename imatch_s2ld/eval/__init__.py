"""Relative-pose evaluation: export predictions (cached), then score them."""

from .cli import EvalConfig, config_from_dict, evaluate, main
from .export import ExportConfig, Prediction, load_prediction
from .score import ScoreConfig, default_threshold, score_pair, summarize

__all__ = [
    "EvalConfig", "ExportConfig", "Prediction", "ScoreConfig", "config_from_dict",
    "default_threshold", "evaluate", "load_prediction", "main", "score_pair", "summarize",
]
