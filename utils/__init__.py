"""Transformer Builder toolkit: check, understand and train a transformer you designed.

    from utils import load_model, adapt, run_tier1
    loaded = load_model("example:gpt-mini")
    adapted = adapt(loaded.model, loaded.config)
    report = run_tier1(adapted)

Names are imported on first use so that `import utils` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "utils.loading",
    "LoadedModel": "utils.loading",
    "ModelConfig": "utils.loading",
    "adapt": "utils.adapters",
    "AdaptedModel": "utils.adapters",
    "ModelProfile": "utils.adapters",
    "run_tier1": "utils.tiers.tier1",
    "run_tier2": "utils.tiers.tier2",
    "capture_attention": "utils.analysis.attention",
    "AttentionMap": "utils.analysis.attention",
    "run_tier3": "utils.tiers.tier3",
    "train": "utils.training",
    "TrainConfig": "utils.training",
    "TrainResult": "utils.training",
    "search": "utils.training.search",
    "SearchResult": "utils.training.search",
    "compare_to_baseline": "utils.training.compare",
    "BaselineComparison": "utils.training.compare",
    "export": "utils.training.export",
    "ExportResult": "utils.training.export",
    "generate_text": "utils.training.generation",
    "CheckResult": "utils.checks.report",
    "TierReport": "utils.checks.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'utils' has no attribute {name!r}")
