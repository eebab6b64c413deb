"""Tier 3: how well does the design learn, with which settings, and against what?

    report = run_tier3(model, data=texts, max_steps=300)    # nn.Module, AdaptedModel, LoadedModel
    report["baseline_comparison"].summary

One run folder (`out_dir`) holds everything: the search study (when asked), the training
run's checkpoints and CSV log, the baseline's run, the export, and the report with figures.
The work happens once, in the order the checks need it: search first (its best settings
train the model), then training, the baseline on the same data and budget, samples, and
the export with its parity checks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

from utils.adapters import AdaptedModel, adapt
from utils.checks import TierReport, run_checks
from utils.tiers.tier3_checks import TIER3_CHECK_IDS
from utils.tiers.tier3_context import TIER3_CHECKS, Tier3Context

log = logging.getLogger(__name__)

__all__ = ["TIER3_CHECKS", "TIER3_CHECK_IDS", "TIER3_NAME", "Tier3Context", "run_tier3"]

TIER3_NAME = "Tier 3: training"


# -- running the tier -----------------------------------------------------------------------------


def run_tier3(
    model_or_adapted: Any,
    config: Any = None,
    *,
    data: Any = None,
    tokenizer: Any = None,
    search_trials: int = 0,
    baseline: bool = True,
    export_dir: str | Path | None = None,
    out_dir: str | Path = "tbuilder_runs",
    checks: list[str] | None = None,
    progress: bool = True,
    **train_overrides: Any,
) -> TierReport:
    """Train the model (after a search when `search_trials` > 0), compare it with a matched
    baseline, sample from it and export it; the report is also saved under `out_dir/report`.

    `data`: texts, a .txt/.csv/.jsonl/.parquet file, a datasets Dataset (default: the embedded
    offline corpus).
    `tokenizer`: the user's (default: the adaptive choice for the model's vocabulary).
    `train_overrides`: train()'s settings (max_steps, batch_size, learning_rate, seed, ...).
    """
    started = time.perf_counter()
    if not isinstance(search_trials, int) or search_trials < 0:
        raise ValueError(
            f"run_tier3(search_trials={search_trials!r}): give 0 (no search) or a positive number of trials"
        )
    train_overrides.setdefault("progress", progress)
    adapted = _adapted(model_or_adapted, config)
    texts = _texts(data)
    tok = _tokenizer(tokenizer, adapted, texts)
    out = Path(out_dir)
    ctx = Tier3Context(
        adapted,
        tok,
        texts,
        out,
        dict(train_overrides),
        search_trials,
        baseline,
        Path(export_dir) if export_dir else out / "export",
    )
    selected = TIER3_CHECKS.select(checks) if checks else list(TIER3_CHECKS)
    meta = {
        "profile": adapted.profile.summary(),
        "out_dir": str(out),
        "tokenizer": type(tok).__name__,
        "texts": len(texts),
        "settings": dict(train_overrides),
        "search_trials": search_trials,
    }
    report = run_checks(TIER3_NAME, selected, ctx, meta=meta, progress=progress)
    report.meta["settings"] = ctx.settings if "settings" in ctx.__dict__ else dict(train_overrides)
    report.meta["seconds"] = round(time.perf_counter() - started, 3)
    report.save(out / "report")
    return report


def _adapted(obj: Any, config: Any) -> AdaptedModel:
    if isinstance(obj, AdaptedModel):
        return obj
    if not isinstance(obj, nn.Module) and hasattr(obj, "model"):  # a LoadedModel
        config = config if config is not None else getattr(obj, "config", None)
        obj = obj.model
    if not isinstance(obj, nn.Module):
        raise ValueError(f"run_tier3 needs an nn.Module, an AdaptedModel or a loaded model; got {type(obj).__name__}")
    return adapt(obj, config)


def _texts(data: Any) -> list[str]:
    """The texts to train on: the data given, or the embedded corpus split into paragraphs. A
    .txt file is split into paragraphs; a .csv/.jsonl/.parquet file gives its 'text' column,
    read as the data module reads it (a broken line is named)."""
    if data is None:
        from utils.examples import default_corpus

        return [p for p in default_corpus().split("\n\n") if p.strip()]
    if isinstance(data, (str, Path)):
        data = Path(data).expanduser()
    if isinstance(data, Path) and not data.is_file():
        raise ValueError(
            f"run_tier3(data={str(data)[:60]!r}): not an existing file; pass a list of texts, a "
            ".txt/.csv/.jsonl/.parquet file or a datasets Dataset with a 'text' column"
        )
    if isinstance(data, Path) and data.suffix.lower() == ".txt":
        return [p for p in data.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    if isinstance(data, Path):
        from utils.tokenization.sources import load_corpus

        try:
            return load_corpus(data).train
        except KeyError as exc:  # its message offers text_column=, which run_tier3 does not take
            raise ValueError(f"run_tier3(data={str(data)!r}): no 'text' column; name the texts' column 'text'") from exc
    if isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data):
        return list(data)
    if hasattr(data, "column_names") and "text" in data.column_names:
        return list(data["text"])
    raise ValueError(
        f"run_tier3(data=...): got {type(data).__name__}; pass a list of texts, "
        "a .txt/.csv/.jsonl/.parquet file or a datasets Dataset with a 'text' column"
    )


def _tokenizer(tokenizer: Any, adapted: AdaptedModel, texts: list[str]) -> Any:
    from utils.tokenization import AdaptiveTokenizer

    vocab = adapted.profile.vocab_size
    if not vocab:
        raise ValueError("run_tier3: the model's vocabulary size is unknown; pass a config stating vocab_size")
    return AdaptiveTokenizer.load_or_create(vocab_size=vocab, texts=texts, tokenizer=tokenizer).tokenizer
