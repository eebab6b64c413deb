"""Tier 3's building blocks: training, hyperparameter search, a matched baseline, export."""

from utils.training.config import TrainConfig, TrainConfigError
from utils.training.trainer import TrainingOOMError, TrainResult, resolve_precision, train

__all__ = ["TrainConfig", "TrainConfigError", "TrainResult", "TrainingOOMError", "resolve_precision", "train"]
