"""Tier 1: critical validation. In about a minute, is the model correct and trainable, and if
not, what exactly is wrong and how to fix it?

    report = run_tier1(model)                  # nn.Module, AdaptedModel or LoadedModel
    report.status, report["causality"].advice

Every check runs in float32 on the chosen device with fixed seeds, on a model whose weights,
train/eval flags, hooks and random-number state are exactly as before when the tier returns.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from utils._frames import describe
from utils.adapters import AdaptedModel, AdaptError, adapt
from utils.checks.report import TierReport
from utils.checks.runner import Check, run_checks
from utils.errors import OptionError
from utils.tiers.tier1.behaviour import forward_signature, output_shape
from utils.tiers.tier1.budget import ForwardClock, OutOfTime, clocked, free_memory, weight_bytes
from utils.tiers.tier1.causality import causality
from utils.tiers.tier1.context import DEFAULT_TRAIN_BATCH, Tier1Context, pick_sizes
from utils.tiers.tier1.invariance import batch_independence, determinism, padding_invariance
from utils.tiers.tier1.numerics import gradient_flow, initial_loss, numerical_stability
from utils.tiers.tier1.resources import device_portability, inference_speed, memory_footprint
from utils.tiers.tier1.training import label_leakage, overfit_batch, plan_training
from utils.tiers.tier1.weights import parameter_initialization, state_dict_roundtrip, weight_sharing
from utils.vocabulary import position_embedding

log = logging.getLogger(__name__)

TIER1_NAME = "Tier 1: critical validation"
DEFAULT_TIME_BUDGET = 60.0
CHECKS: tuple[Check, ...] = (
    forward_signature,
    output_shape,
    causality,
    batch_independence,
    padding_invariance,
    determinism,
    numerical_stability,
    initial_loss,
    gradient_flow,
    parameter_initialization,
    weight_sharing,
    device_portability,
    overfit_batch,
    label_leakage,
    state_dict_roundtrip,
    memory_footprint,
    inference_speed,
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
    time_budget: float | None = None,
    checks: Sequence[str] | None = None,
    progress: bool = True,
) -> TierReport:
    """Run Tier 1 on an nn.Module, an AdaptedModel or a LoadedModel (`.model`, `.config`).

    `task`, `vocab_size`, `max_seq_len` override what the adapter finds. `batch_size` and
    `seq_len` set the probe batch (default 3 x up to 16 tokens; at most 8 rows) and the
    training shape that memory_footprint estimates (default 8 x max_seq_len). `time_budget`
    (seconds; default 60, or $TBUILDER_TIME_BUDGET) bounds the whole tier: each check gets a
    share of what is left, and one that cannot finish in its share (or fit in memory) skips
    with the numbers. `checks` picks a subset
    of CHECK_IDS. A model that cannot be adapted still gets a report: forward_signature
    fails with the adapter's message and every other check skips.
    """
    selected = _select(checks)
    time_budget = default_time_budget() if time_budget is None else time_budget
    _validate(batch_size, seq_len, time_budget, vocab_size, max_seq_len, seed)
    dev = tier_device(device)
    for module in _modules(model_or_adapted):
        check_overrides(module, vocab_size, max_seq_len)
    started = time.perf_counter()
    clock = ForwardClock(deadline=started + time_budget, tier_deadline=started + time_budget)
    with clocked(_modules(model_or_adapted), clock):
        try:
            adapted, error = _adapted(model_or_adapted, config, task, vocab_size, max_seq_len)
            adapt_out_of_time = False
        except OutOfTime:
            adapted, error = None, _adapt_out_of_time(clock, time_budget)
            adapt_out_of_time = True
    moved = adapted is not None and any(p.device != dev for p in adapted.model.parameters())
    with torch.random.fork_rng(devices=_cuda_devices(dev)), _placed(adapted, dev):
        ctx = _context(adapted, error, dev, seed, batch_size, seq_len, time_budget, started)
        ctx.clock, ctx.pending = clock, [c.id for c in selected]
        ctx.adapt_out_of_time = adapt_out_of_time
        if adapted is not None:
            ctx.free_memory, ctx.weight_bytes = free_memory(dev), weight_bytes(adapted.model)
        meta = {
            "profile": adapted.profile.summary() if adapted else None,
            "device": str(dev),
            "seed": seed,
            "batch_size": ctx.batch_size,
            "seq_len": ctx.seq_len,
            "train_batch_size": ctx.train_batch_size,
            "train_seq_len": ctx.train_seq_len,
            "time_budget": time_budget,
            "torch": torch.__version__,
        }
        hooked = [adapted, adapted.model] if adapted is not None else []
        with clocked(hooked, clock):
            if adapted is not None:
                ctx.out_of_reach = _planned_skips(ctx, retime=moved)
                ctx.pending = [c for c in ctx.pending if c not in ctx.out_of_reach]
            report = run_checks(TIER1_NAME, selected, ctx, meta=meta, progress=progress)
    report.meta["first_forward_s"] = clock.first_forward_s
    report.meta["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _planned_skips(ctx: Tier1Context, retime: bool) -> dict[str, tuple[str, str, dict]]:
    """The training checks priced out of reach (see `plan_training`). Calls timed while
    adapting describe the device the model was built on: when the tier moved it (`retime`),
    they are dropped and the plan times its own probe forward on the tier's device. No time
    left for that probe plans nothing: the checks' own caps still hold."""
    if retime:
        ctx.clock.calls.clear()
    try:
        return plan_training(ctx)
    except OutOfTime:
        return {}


def default_time_budget() -> float:
    """60 s, or $TBUILDER_TIME_BUDGET: a slow shared machine (a CI runner) can give every
    run more time without each call saying so."""
    text = os.environ.get("TBUILDER_TIME_BUDGET")
    if not text:
        return DEFAULT_TIME_BUDGET
    try:
        return float(text)
    except ValueError:
        raise OptionError("time_budget", text, "$TBUILDER_TIME_BUDGET must be a number of seconds") from None


def _modules(obj: Any) -> list[nn.Module]:
    """The user's module inside whatever run_tier1 was given, to time while adapting."""
    model = obj.model if not isinstance(obj, nn.Module) and hasattr(obj, "model") else obj
    if isinstance(model, AdaptedModel):
        model = model.model
    return [model] if isinstance(model, nn.Module) else []


def _adapt_out_of_time(clock: ForwardClock, budget: float) -> str:
    first = clock.first_forward_s or 0.0
    return (
        f"Adapting the model needs several forward calls; the {budget:g} s time budget "
        f"ran out after {len(clock.calls)} (the first took {first:.3g} s). Give the tier "
        "more time (time_budget= / --time-budget) or run on a GPU."
    )


def _select(checks: Sequence[str] | None) -> list[Check]:
    if checks is None:
        return list(CHECKS)
    if isinstance(checks, str):
        checks = [checks]
    unknown = [c for c in checks if c not in CHECK_IDS]
    if unknown:
        raise OptionError(
            "checks",
            ",".join(unknown),
            f"unknown check id(s) {', '.join(map(repr, unknown))}; known: {', '.join(CHECK_IDS)}",
        )
    return [c for c in CHECKS if c.id in set(checks)]


def _validate(
    batch_size: int | None,
    seq_len: int | None,
    time_budget: float,
    vocab_size: int | None,
    max_seq_len: int | None,
    seed: int,
) -> None:
    lowest = {"batch_size": 1, "seq_len": 1, "max_seq_len": 1, "vocab_size": 2}
    given = {"batch_size": batch_size, "seq_len": seq_len, "vocab_size": vocab_size, "max_seq_len": max_seq_len}
    for name, value in given.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < lowest[name]):
            raise OptionError(
                name, value, f"give a whole number >= {lowest[name]}, or leave it out to use what the model says"
            )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise OptionError("seed", seed, "give a whole number >= 0")
    if not isinstance(time_budget, (int, float)) or not 0 < time_budget < float("inf"):
        raise OptionError("time_budget", time_budget, "give a positive number of seconds")


def check_overrides(model: nn.Module, vocab_size: int | None, max_seq_len: int | None) -> None:
    """An override past the model's own tables would crash checks with an IndexError (a
    device-side assert on a GPU): refuse it, naming both numbers."""
    pos = position_embedding(model)
    if max_seq_len is not None and pos is not None and max_seq_len > pos[1].num_embeddings:
        raise OptionError(
            "max_seq_len",
            max_seq_len,
            f"the model's position table '{pos[0]}' has {pos[1].num_embeddings} "
            f"rows; give at most {pos[1].num_embeddings}",
        )
    rows = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    if vocab_size is not None and rows and vocab_size > max(rows):
        raise OptionError(
            "vocab_size",
            vocab_size,
            f"the model's largest embedding has {max(rows)} rows, so ids from "
            f"{max(rows)} up would crash it; give at most {max(rows)}",
        )


def tier_device(device: str | torch.device) -> torch.device:
    """The device Tier 1 runs on, or an OptionError naming `device` when it cannot."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", str(device), "no CUDA device is available here; use 'cpu' (or a GPU runtime)")
    if dev.type not in ("cpu", "cuda"):
        raise OptionError("device", str(device), "Tier 1 runs on 'cpu' or 'cuda'")
    return dev


def _adapted(
    obj: Any, config: Any, task: str | None, vocab_size: int | None, max_seq_len: int | None
) -> tuple[AdaptedModel | None, str | None]:
    """Adapt what was given; an AdaptedModel keeps its adapter, with overrides applied to a
    copy of its profile."""
    overrides = {
        k: v for k, v in (("task", task), ("vocab_size", vocab_size), ("max_seq_len", max_seq_len)) if v is not None
    }
    if isinstance(obj, AdaptedModel):
        if not overrides:
            return obj, None
        return obj.with_overrides(**overrides), None
    if not isinstance(obj, nn.Module) and hasattr(obj, "model"):
        config = config if config is not None else getattr(obj, "config", None)
        obj = obj.model
    if not isinstance(obj, nn.Module):
        return None, (
            f"run_tier1 needs an nn.Module, an AdaptedModel or a loaded model (with .model); got {type(obj).__name__}"
        )
    try:
        return adapt(obj, config, **overrides), None
    except AdaptError as exc:
        return None, str(exc)
    except Exception as exc:
        log.debug("adapt crashed", exc_info=True)
        return None, f"adapting the model raised {describe(exc)}"


def _context(
    adapted: AdaptedModel | None,
    error: str | None,
    device: torch.device,
    seed: int,
    batch_size: int | None,
    seq_len: int | None,
    time_budget: float,
    started: float,
) -> Tier1Context:
    p = adapted.profile if adapted else None
    max_len = p.max_seq_len if p else None
    if seq_len is not None and max_len is not None and seq_len > max_len:
        raise OptionError(
            "seq_len", seq_len, f"the model takes at most max_seq_len={max_len} tokens ({p.max_seq_len_source})"
        )
    vocab = p.vocab_size if p else None
    B, T = pick_sizes(batch_size, seq_len, vocab, max_len)
    return Tier1Context(
        adapted=adapted,
        adapt_error=error,
        device=device,
        seed=seed,
        batch_size=B,
        seq_len=T,
        train_batch_size=batch_size or DEFAULT_TRAIN_BATCH,
        train_seq_len=seq_len or max_len or T,
        time_budget=float(time_budget),
        started=started,
        id_high=_id_high(adapted),
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
    buffers = [
        (m, k, b.device, b.dtype) for m in adapted.model.modules() for k, b in m._buffers.items() if b is not None
    ]
    needed = any(d != device or (t.is_floating_point and t != torch.float32) for _, d, t in params) or any(
        d != device for *_, d, _ in buffers
    )
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
