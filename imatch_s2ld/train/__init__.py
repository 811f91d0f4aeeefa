"""Training: a generic accelerate trainer and the S2LD supervised pretraining glue.

- :mod:`.config`: YAML + dotted overrides, merged strictly (typos fail naming the key).
- :mod:`.trainer`: the generic loop (:class:`Trainer`, :func:`create_accelerator`); the model
  contract is ``batch_inputs(batch)``, ``forward(**inputs)``, ``loss(pred, batch)``.
- :mod:`.checkpoint`: training-state checkpoints (``weights_only``-loadable, per-rank RNG states).
- :mod:`.validate`: periodic relative-pose validation (:class:`Validator`).
- :mod:`.pretrain`: S2LD pretraining (``main(conf)``, ``cli(argv)``; ``scripts/pretrain.py``).
"""

from .config import build_config, parse_overrides, save_config
from .pretrain import build_model, cli, default_conf, main, register_model
from .trainer import TRAIN_DEFAULTS, Trainer, TrainingInterrupted, TrainResult, create_accelerator
from .validate import VAL_DEFAULTS, Validator

__all__ = [
    "TRAIN_DEFAULTS",
    "VAL_DEFAULTS",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "Validator",
    "build_config",
    "build_model",
    "cli",
    "create_accelerator",
    "default_conf",
    "main",
    "parse_overrides",
    "register_model",
    "save_config",
]
