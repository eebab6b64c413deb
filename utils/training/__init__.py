"""Tier 3's building blocks: `train()` and its settings and result."""

from utils.training.config import TrainConfig, TrainConfigError
from utils.training.trainer import TrainingOOMError, TrainResult, resolve_precision, train

__all__ = ["TrainConfig", "TrainConfigError", "TrainResult", "TrainingOOMError",
           "resolve_precision", "train"]
