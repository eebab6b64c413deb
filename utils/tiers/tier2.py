"""Tier 2: what is the model doing inside? For any model the adapter accepts.

    report = run_tier2(model)                                  # seeded random tokens
    report = run_tier2(model, tokenizer=tok, texts=texts)      # real text, tokens by name
    report["representation_health"].metrics["layers"]

Each analysis is a check with a stable id returning a CheckResult with figures. The model's
weights, train/eval flags, hooks and random-number state are exactly as before when the tier
returns; an analysis that cannot measure (a crash of the measuring code, the time budget
spent) skips with the reason and never fails the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.adapters import AdaptedModel, AdaptError, adapt
from utils.checks import Check, TierReport, run_checks
from utils.tiers.tier1.context import keep_modes
from utils.tiers.tier1.run import _cuda_devices, _id_high, _placed
from utils.tiers.tier2_attention import attention_patterns
from utils.tiers.tier2_context import Tier2Context, build_inputs, token_text, within_budget
from utils.tiers.tier2_inputs import adversarial_tokens, attribution, perturbation_sensitivity
from utils.tiers.tier2_internals import representation_health, weight_spectrum

log = logging.getLogger(__name__)

TIER2_NAME = "Tier 2: what the model does inside"
ANALYSES: tuple[Check, ...] = (
    attention_patterns,
    attribution,
    perturbation_sensitivity,
    adversarial_tokens,
    representation_health,
    weight_spectrum,
)
ANALYSIS_IDS: tuple[str, ...] = tuple(c.id for c in ANALYSES)


def run_tier2(
    model_or_adapted: Any,
    config: Any = None,
    *,
    tokenizer: Any = None,
    texts: Sequence[str] | None = None,
    task: str | None = None,
    vocab_size: int | None = None,
    max_seq_len: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    seq_len: int | None = None,
    time_budget: float = 240.0,
    analyses: Sequence[str] | None = None,
    progress: bool = True,
) -> TierReport:
    """Run Tier 2 on an nn.Module, an AdaptedModel or a LoadedModel (`.model`, `.config`).

    With `tokenizer` (an object with encode/decode, or a path to one) and `texts` it
    analyses windows of the real text; otherwise seeded random tokens and repeated random
    sequences. `seq_len` sets the tokens per row (default up to 32). `time_budget` (seconds)
    caps the whole tier: analyses that no longer fit skip with the reason. `analyses` picks a
    subset of ANALYSIS_IDS. A model that cannot be adapted still gets a report in which every
    analysis skips with the adapter's message.
    """
    selected = _select(analyses)
    _validate(seq_len, time_budget, tokenizer, texts)
    started = time.perf_counter()
    tok = _tokenizer(tokenizer)
    adapted, error = _adapted(model_or_adapted, config, task, vocab_size, max_seq_len)
    dev = _device(device)
    with torch.random.fork_rng(devices=_cuda_devices(dev)), _placed(adapted, dev), keep_modes(adapted):
        if adapted is not None:
            adapted.eval()
        ctx = _context(adapted, error, dev, seed, seq_len, time_budget, started, tok, texts)
        meta = _meta(ctx, time_budget)
        report = run_checks(TIER2_NAME, [within_budget(c) for c in selected], ctx, meta=meta, progress=progress)
    report.meta["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _select(analyses: Sequence[str] | None) -> list[Check]:
    if analyses is None:
        return list(ANALYSES)
    if isinstance(analyses, str):
        analyses = [analyses]
    unknown = [a for a in analyses if a not in ANALYSIS_IDS]
    if unknown:
        raise ValueError(
            f"run_tier2(analyses=...): unknown analysis id(s) "
            f"{', '.join(map(repr, unknown))}; known: {', '.join(ANALYSIS_IDS)}"
        )
    return [c for c in ANALYSES if c.id in set(analyses)]


def _validate(seq_len: int | None, time_budget: float, tokenizer: Any, texts: Sequence[str] | None) -> None:
    if seq_len is not None and (not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 2):
        raise ValueError(f"run_tier2(seq_len={seq_len!r}): give an integer of 2 or more, or None")
    if not time_budget or time_budget <= 0:
        raise ValueError(f"run_tier2(time_budget={time_budget!r}): give a positive number of seconds")
    if isinstance(texts, str):
        raise TypeError("run_tier2(texts=...): give a list of strings, not one string")
    if texts is not None and tokenizer is None:
        raise ValueError(
            "run_tier2(texts=...) needs tokenizer=... (the one the model was "
            "trained with) to turn the texts into its token ids; without both, "
            "Tier 2 analyses random tokens"
        )


def _tokenizer(tokenizer: Any) -> Any:
    """The tokenizer object: as given, or loaded from a path (a tokenizer.json, a Hugging
    Face folder, a sentencepiece model, a vocab file)."""
    if isinstance(tokenizer, (str, Path)):
        from utils.tokenization.user_tokenizer import load_user_tokenizer

        return load_user_tokenizer(tokenizer)
    if tokenizer is not None and not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")):
        raise TypeError(
            f"run_tier2(tokenizer=...): {type(tokenizer).__name__} has no "
            "encode/decode; give a Hugging Face-style tokenizer or a path to one"
        )
    return tokenizer


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"run_tier2(device={str(device)!r}): no CUDA device is available here; use device='cpu' (or a GPU runtime)"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"run_tier2(device={str(device)!r}): Tier 2 runs on 'cpu' or 'cuda'")
    return dev


def _adapted(
    obj: Any, config: Any, task: str | None, vocab_size: int | None, max_seq_len: int | None
) -> tuple[AdaptedModel | None, str | None]:
    """Adapt what was given (as Tier 1 does); an AdaptedModel keeps its adapter, with
    overrides applied to a copy of its profile."""
    overrides = {
        k: v for k, v in (("task", task), ("vocab_size", vocab_size), ("max_seq_len", max_seq_len)) if v is not None
    }
    if isinstance(obj, AdaptedModel):
        return (obj.with_overrides(**overrides) if overrides else obj), None
    if not isinstance(obj, nn.Module) and hasattr(obj, "model"):
        config = config if config is not None else getattr(obj, "config", None)
        obj = obj.model
    if not isinstance(obj, nn.Module):
        return None, (
            f"run_tier2 needs an nn.Module, an AdaptedModel or a loaded model (with .model); got {type(obj).__name__}"
        )
    try:
        return adapt(obj, config, **overrides), None
    except AdaptError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported in the report, not raised
        log.debug("adapt crashed", exc_info=True)
        return None, f"adapting the model raised {type(exc).__name__}: {exc}"


def _context(
    adapted: AdaptedModel | None,
    error: str | None,
    device: torch.device,
    seed: int,
    seq_len: int | None,
    time_budget: float,
    started: float,
    tokenizer: Any,
    texts: Sequence[str] | None,
) -> Tier2Context:
    p = adapted.profile if adapted else None
    max_len = p.max_seq_len if p else None
    if seq_len is not None and max_len is not None and seq_len > max_len:
        raise ValueError(
            f"run_tier2(seq_len={seq_len}): the model takes at most "
            f"max_seq_len={max_len} tokens ({p.max_seq_len_source})"
        )
    high = _id_high(adapted)
    ids, strings, data = build_inputs(high, max_len, seed, seq_len, tokenizer, texts)
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    return Tier2Context(
        adapted=adapted,
        adapt_error=error,
        device=device,
        seed=seed,
        input_ids=ids.to(device),
        attention_mask=None,
        token_strings=strings,
        data=data,
        time_budget=float(time_budget),
        started=started,
        id_high=high,
        pad_id=pad if isinstance(pad, int) and pad < high else None,
        decode=(lambda i: token_text(tokenizer, i)) if tokenizer is not None else None,
    )


def _meta(ctx: Tier2Context, time_budget: float) -> dict[str, Any]:
    B, T = ctx.input_ids.shape
    what = (
        f"real text: {B} windows of {T} tokens"
        if ctx.data == "text"
        else f"seeded random tokens: {B - B // 2} random rows and {B // 2} rows of a random "
        f"sequence said twice, {T} tokens each"
    )
    meta = {
        "profile": ctx.adapted.profile.summary() if ctx.adapted else None,
        "device": str(ctx.device),
        "seed": ctx.seed,
        "data": ctx.data,
        "input": what,
        "batch_size": B,
        "seq_len": T,
        "time_budget": time_budget,
        "torch": torch.__version__,
    }
    if ctx.adapted is not None:
        loss, uniform = ctx.loss, ctx.uniform_loss
        meta.update(
            loss=loss,
            uniform_loss=uniform,
            trained=ctx.trained,
            model_state=_model_state(ctx.trained, loss, uniform),
        )
    return meta


def _model_state(trained: bool | None, loss: float | None, uniform: float | None) -> str:
    """One line on whether the model looks trained, and the numbers that say so."""
    if loss is None or not uniform:
        return "training state unknown: there is no loss to judge by for this task and input"
    if trained is None:
        return (
            f"training state unclear: loss {loss:.3f} on the input is far above ln V = {uniform:.3f} "
            "(confident and wrong: trained on other data, or initialised too large); pass the model's "
            "tokenizer and text for a clear reading"
        )
    return f"looks {'trained' if trained else 'untrained'}: loss {loss:.3f} on the input against ln V = {uniform:.3f}"
