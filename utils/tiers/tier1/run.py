"""Tier 1: critical validation. In about a minute, is the model correct and trainable, and if
not, what exactly is wrong and how to fix it?

    report = run_tier1(model)                  # nn.Module, AdaptedModel or LoadedModel
    report.status, report["causality"].advice

Every check runs in float32 on the chosen device with fixed seeds, on a model whose weights,
train/eval flags, hooks and random-number state are exactly as before when the tier returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from utils.adapters import AdaptedModel, AdaptError, adapt
from utils.checks.report import TierReport
from utils.checks.runner import Check, run_checks
from utils.tiers.tier1.behaviour import (
    batch_independence,
    causality,
    determinism,
    forward_signature,
    output_shape,
    padding_invariance,
)
from utils.tiers.tier1.context import DEFAULT_TRAIN_BATCH, Tier1Context, pick_sizes
from utils.tiers.tier1.numerics import gradient_flow, initial_loss, numerical_stability
from utils.tiers.tier1.resources import device_portability, inference_speed, memory_footprint
from utils.tiers.tier1.training import label_leakage, overfit_batch
from utils.tiers.tier1.weights import parameter_initialization, state_dict_roundtrip, weight_sharing

log = logging.getLogger(__name__)

TIER1_NAME = "Tier 1: critical validation"
CHECKS: tuple[Check, ...] = (
    forward_signature, output_shape, causality, batch_independence, padding_invariance,
    determinism, numerical_stability, initial_loss, gradient_flow, parameter_initialization,
    weight_sharing, device_portability, overfit_batch, label_leakage, state_dict_roundtrip,
    memory_footprint, inference_speed,
)
CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECKS)


def run_tier1(
    model_or_adapted: Any,
    config: Any = None,
    *,
    task: str | None = None,
    vocab_size: int | None = None,
    max_seq_len: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch_size: int | None = None,
    seq_len: int | None = None,
    time_budget: float = 60.0,
    checks: Sequence[str] | None = None,
    progress: bool = True,
) -> TierReport:
    """Run Tier 1 on an nn.Module, an AdaptedModel or a LoadedModel (`.model`, `.config`).

    `task`, `vocab_size`, `max_seq_len` override what the adapter finds. `batch_size` and
    `seq_len` set the probe batch (default 3 x up to 16 tokens; at most 8 rows) and the
    training shape that memory_footprint estimates (default 8 x max_seq_len). `time_budget` (seconds) caps the
    training checks, which `skip` with the reason when it runs out. `checks` picks a subset
    of CHECK_IDS. A model that cannot be adapted still gets a report: forward_signature
    fails with the adapter's message and every other check skips.
    """
    selected = _select(checks)
    _validate(batch_size, seq_len, time_budget)
    started = time.perf_counter()
    adapted, error = _adapted(model_or_adapted, config, task, vocab_size, max_seq_len)
    dev = _device(device)
    with torch.random.fork_rng(devices=_cuda_devices(dev)), _placed(adapted, dev):
        ctx = _context(adapted, error, dev, seed, batch_size, seq_len, time_budget, started)
        meta = {
            "profile": adapted.profile.summary() if adapted else None,
            "device": str(dev), "seed": seed, "batch_size": ctx.batch_size,
            "seq_len": ctx.seq_len, "train_batch_size": ctx.train_batch_size,
            "train_seq_len": ctx.train_seq_len, "time_budget": time_budget,
            "torch": torch.__version__,
        }
        report = run_checks(TIER1_NAME, selected, ctx, meta=meta, progress=progress)
    report.meta["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _select(checks: Sequence[str] | None) -> list[Check]:
    if checks is None:
        return list(CHECKS)
    if isinstance(checks, str):
        checks = [checks]
    unknown = [c for c in checks if c not in CHECK_IDS]
    if unknown:
        raise ValueError(f"run_tier1(checks=...): unknown check id(s) {', '.join(map(repr, unknown))}"
                         f"; known: {', '.join(CHECK_IDS)}")
    return [c for c in CHECKS if c.id in set(checks)]


def _validate(batch_size: int | None, seq_len: int | None, time_budget: float) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ValueError(f"run_tier1({name}={value!r}): give a positive integer or None")
    if not time_budget or time_budget <= 0:
        raise ValueError(f"run_tier1(time_budget={time_budget!r}): give a positive number of "
                         "seconds")


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run_tier1(device={str(device)!r}): no CUDA device is available here; "
                         "use device='cpu' (or a GPU runtime)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"run_tier1(device={str(device)!r}): Tier 1 runs on 'cpu' or 'cuda'")
    return dev


def _adapted(obj: Any, config: Any, task: str | None, vocab_size: int | None,
             max_seq_len: int | None) -> tuple[AdaptedModel | None, str | None]:
    """Adapt what was given; an AdaptedModel keeps its adapter, with overrides applied to a
    copy of its profile."""
    overrides = {k: v for k, v in (("task", task), ("vocab_size", vocab_size),
                                   ("max_seq_len", max_seq_len)) if v is not None}
    if isinstance(obj, AdaptedModel):
        if not overrides:
            return obj, None
        return obj.with_overrides(**overrides), None
    if not isinstance(obj, nn.Module) and hasattr(obj, "model"):
        config = config if config is not None else getattr(obj, "config", None)
        obj = obj.model
    if not isinstance(obj, nn.Module):
        return None, (f"run_tier1 needs an nn.Module, an AdaptedModel or a loaded model "
                      f"(with .model); got {type(obj).__name__}")
    try:
        return adapt(obj, config, **overrides), None
    except AdaptError as exc:
        return None, str(exc)
    except Exception as exc:
        log.debug("adapt crashed", exc_info=True)
        return None, f"adapting the model raised {type(exc).__name__}: {exc}"


def _context(adapted: AdaptedModel | None, error: str | None, device: torch.device, seed: int,
             batch_size: int | None, seq_len: int | None, time_budget: float,
             started: float) -> Tier1Context:
    p = adapted.profile if adapted else None
    max_len = p.max_seq_len if p else None
    if seq_len is not None and max_len is not None and seq_len > max_len:
        raise ValueError(f"run_tier1(seq_len={seq_len}): the model takes at most "
                         f"max_seq_len={max_len} tokens ({p.max_seq_len_source})")
    vocab = p.vocab_size if p else None
    B, T = pick_sizes(batch_size, seq_len, vocab, max_len)
    return Tier1Context(
        adapted=adapted, adapt_error=error, device=device, seed=seed, batch_size=B,
        seq_len=T, train_batch_size=batch_size or DEFAULT_TRAIN_BATCH,
        train_seq_len=seq_len or max_len or T, time_budget=float(time_budget),
        started=started, id_high=_id_high(adapted),
    )


def _id_high(adapted: AdaptedModel | None) -> int:
    """Token ids are drawn below the vocabulary size, or below the smallest embedding table
    when the vocabulary is unknown (a classifier without a config)."""
    if adapted is None:
        return 2
    if adapted.profile.vocab_size:
        return adapted.profile.vocab_size
    rows = [m.num_embeddings for m in adapted.model.modules() if isinstance(m, nn.Embedding)]
    return min(rows) if rows else 2


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextmanager
def _placed(adapted: AdaptedModel | None, device: torch.device) -> Iterator[None]:
    """Move the model to `device` in float32 for the run, and put every parameter and buffer
    back where (and in the dtype) it was afterwards."""
    if adapted is None:
        yield
        return
    params = [(p, p.device, p.dtype) for p in adapted.model.parameters()]
    buffers = [(m, k, b.device, b.dtype) for m in adapted.model.modules()
               for k, b in m._buffers.items() if b is not None]
    needed = any(d != device or (t.is_floating_point and t != torch.float32)
                 for _, d, t in params) or any(d != device for *_, d, _ in buffers)
    if not needed:
        yield
        return
    adapted.model.to(device=device)
    adapted.model.float()
    try:
        yield
    finally:
        with torch.no_grad():
            for p, d, t in params:
                p.data = p.data.to(device=d, dtype=t)
            for m, k, d, t in buffers:
                m._buffers[k] = m._buffers[k].to(device=d, dtype=t)
