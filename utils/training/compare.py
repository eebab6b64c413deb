"""Your design against a standard transformer of the same size, on the same data and budget.

    cmp = compare_to_baseline(adapted, texts, tokenizer=tok, max_steps=300)
    cmp.loss_gap            # your final validation loss minus the baseline's (> 0: worse)
    print(cmp.to_markdown()); cmp.figure  # PNG: validation loss against tokens, both runs

Both runs use the same `train()` settings, seed, tokenizer and data, so they see the same
batches in the same order for the same number of tokens; the only difference is the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.adapters import AdaptedModel, adapt
from utils.training.baseline import (
    BaselineSizing,
    build_baseline,
    model_dropout,
    size_baseline,
)


@dataclass
class BaselineComparison:
    """Both training runs, the baseline's shape, and the comparison as a table and figure."""

    sizing: BaselineSizing
    model: Any  # TrainResult of the user's model
    baseline: Any  # TrainResult of the baseline
    figure: bytes

    @property
    def loss_gap(self) -> float:
        """The user's final validation loss minus the baseline's, in nats (> 0: worse)."""
        return _final(self.model) - _final(self.baseline)

    def rows(self) -> list[dict[str, Any]]:
        """One row per model: parameters, final loss, perplexity, tokens/s, peak memory."""
        s = self.sizing
        names = ("your model", f"{s.family} baseline ({s.n_layer}L x {s.n_embd}, {s.n_head} heads)")
        counts = ((s.target_total, s.target_non_embedding), (s.total, s.non_embedding))
        out = []
        for name, result, (total, non_emb) in zip(names, (self.model, self.baseline), counts):
            loss = _final(result)
            out.append(
                {
                    "model": name,
                    "parameters": total,
                    "non_embedding": non_emb,
                    "val_loss": loss,
                    "perplexity": math.exp(min(loss, 30)),
                    "tokens_per_second": result.tokens_per_second,
                    "peak_memory_bytes": result.peak_memory_bytes,
                    "tokens": result.tokens_seen,
                }
            )
        return out

    def to_markdown(self) -> str:
        lines = [
            "| model | parameters | non-embedding | val loss | perplexity | tokens/s | peak memory |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows():
            mem = r["peak_memory_bytes"]
            lines.append(
                f"| {r['model']} | {r['parameters']:,} | {r['non_embedding']:,} | "
                f"{r['val_loss']:.4f} | {r['perplexity']:.2f} | "
                f"{r['tokens_per_second']:,.0f} | "
                f"{'-' if mem is None else f'{mem / 2**20:.1f} MiB'} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"sizing": self.sizing.to_dict(), "rows": self.rows(), "loss_gap": self.loss_gap}


def compare_to_baseline(
    model_or_adapted: Any,
    data: Any,
    *,
    tokenizer: Any,
    model_result: Any = None,
    out_dir: str = "tbuilder_runs/baseline",
    **train_overrides: Any,
) -> BaselineComparison:
    """Train the user's model (unless `model_result` is its finished run with these same
    settings) and a size-matched GPT-2 (BERT for a masked LM, BART for an encoder-decoder)
    the same way; compare them."""
    from utils.training.trainer import train

    adapted = _adapted(model_or_adapted)
    sizing = size_baseline(adapted)
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    seed = train_overrides.get("seed", 0)
    baseline = build_baseline(
        sizing,
        dropout=model_dropout(adapted.model),
        pad_token_id=getattr(tok, "pad_token_id", None),
        eos_token_id=getattr(tok, "eos_token_id", None),
        seed=seed,
    )
    out = Path(out_dir)
    if model_result is None:
        model_result = train(adapted, data, tokenizer=tokenizer, out_dir=str(out / "model"), **train_overrides)
    base_adapted = adapt(baseline, task=adapted.profile.task)
    baseline_result = train(base_adapted, data, tokenizer=tokenizer, out_dir=str(out / "baseline"), **train_overrides)
    return BaselineComparison(sizing, model_result, baseline_result, _figure(sizing, model_result, baseline_result))


def _adapted(obj: Any) -> AdaptedModel:
    if isinstance(obj, AdaptedModel):
        return obj
    if hasattr(obj, "model") and hasattr(obj, "config") and not hasattr(obj, "forward"):
        return adapt(obj.model, obj.config)  # a LoadedModel
    return adapt(obj)


def _final(result: Any) -> float:
    """The last validation loss of a run (the budget's end, not its best moment)."""
    value = result.val_loss
    return float(value) if value is not None else float("nan")


def _curve(result: Any) -> tuple[list[float], list[float]]:
    rows = [r for r in result.history if r.get("val_loss") is not None]
    return [r["tokens"] for r in rows], [r["val_loss"] for r in rows]


def _figure(sizing: BaselineSizing, model_result: Any, baseline_result: Any) -> bytes:
    import matplotlib.pyplot as plt

    from utils.checks.report import figure_to_png

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, result in (("your model", model_result), (f"{sizing.family} baseline", baseline_result)):
        x, y = _curve(result)
        ax.plot(x, y, "o-", markersize=3, label=f"{label} ({_final(result):.3f})")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats)")
    ax.set_title(
        f"same data, budget and recipe; baseline {sizing.total:,} params ({sizing.total_error:+.1%})", fontsize=9
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return figure_to_png(fig)
