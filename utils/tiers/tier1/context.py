"""What every Tier 1 check receives: the adapted model, the sizes to probe with, the time left,
and the few helpers (token batches, loss, skips) that all checks share.

Probe sizes are chosen so that batch, length and vocabulary all differ: a check that expects
exact zeros along one axis can then never be fooled by a transposed tensor.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from utils._frames import describe
from utils.adapters import AdaptedModel, ModelProfile
from utils.checks import Check, CheckResult, CheckSet, Verdict
from utils.tiers.tier1.budget import (
    MEMORY_FRACTION,
    ForwardClock,
    OutOfTime,
    check_deadline,
    is_out_of_memory,
    memory_need,
    memory_skip,
    out_of_memory_skip,
    out_of_time_skip,
)
from utils.vocabulary import LM_TASKS, LOSS_TASKS  # noqa: F401 - re-exported to the checks

DEFAULT_BATCH = 3  # probe batch: small, odd, and different from every default length
MAX_PROBE_BATCH = 8  # a larger batch_size sets the training shape only, not the probes
DEFAULT_MAX_T = 16  # probe length cap: long enough to see leaks, short enough to be quick
DEFAULT_TRAIN_BATCH = 8  # the batch memory_footprint estimates for when none is given


@dataclass
class Tier1Context:
    """Shared state for one Tier 1 run. `adapted` is None when the model could not be adapted
    (then `adapt_error` says why and every check but forward_signature skips)."""

    adapted: AdaptedModel | None
    adapt_error: str | None
    device: torch.device
    seed: int
    batch_size: int
    seq_len: int
    train_batch_size: int
    train_seq_len: int
    time_budget: float
    started: float = field(default_factory=time.perf_counter)
    id_high: int = 0  # token ids are drawn from [0, id_high)
    clock: ForwardClock = field(default_factory=ForwardClock)
    pending: list[str] = field(default_factory=list)  # ids of the checks not yet run
    out_of_reach: dict[str, tuple[str, str, dict]] = field(default_factory=dict)  # planned time skips
    free_memory: int | None = None  # bytes free on the device when the tier started
    weight_bytes: int = 0
    adapt_out_of_time: bool = False

    # -- facts -------------------------------------------------------------------------

    @property
    def profile(self) -> ModelProfile:
        assert self.adapted is not None
        return self.adapted.profile

    @property
    def model(self) -> nn.Module:
        """The user's module (inside the adapter)."""
        assert self.adapted is not None
        return self.adapted.model

    @property
    def task(self) -> str:
        return self.profile.task

    @property
    def vocab_size(self) -> int | None:
        return self.profile.vocab_size

    def remaining(self) -> float:
        """Seconds left to the whole tier."""
        return self.time_budget - (time.perf_counter() - self.started)

    def check_left(self) -> float:
        """Seconds left to the running check (its share of the tier's budget)."""
        return self.clock.deadline - time.perf_counter()

    # -- inputs ------------------------------------------------------------------------

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run's seed; `offset` keeps checks' draws apart."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)

    def ids(self, B: int | None = None, T: int | None = None, offset: int = 0, high: int | None = None) -> torch.Tensor:
        """(B, T) random token ids on the run's device, contiguous, reproducible."""
        B = self.batch_size if B is None else B
        T = self.seq_len if T is None else T
        g = self.generator(offset)
        return torch.randint(0, high or self.id_high, (B, T), generator=g).to(self.device)

    def labels_for(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Training labels for `ids` under the model's task: the ids themselves for a causal
        LM (the loss shifts them) and for a seq2seq model (the target is the source: the
        adapter shifts it into the decoder), random tokens for a masked LM (every position
        scored), random classes for a classifier."""
        g = self.generator(offset + 7)
        if self.task in ("causal_lm", "seq2seq"):
            return ids
        if self.task == "classification":
            return torch.randint(0, self.profile.num_classes or 2, (ids.shape[0],), generator=g).to(ids.device)
        return torch.randint(0, self.id_high, tuple(ids.shape), generator=g).to(ids.device)

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss the toolkit uses for this task (shifted for a causal LM)."""
        return self.adapted.loss(out, labels)

    def expected_initial_loss(self) -> float:
        """ln(number of classes): the loss of a uniform prediction."""
        n = self.profile.num_classes if self.task == "classification" else self.vocab_size
        return math.log(n or 2)

    # -- preconditions -----------------------------------------------------------------

    @functools.cached_property
    def forward_error(self) -> str | None:
        """Why a plain forward at the probe sizes fails, or None when it works."""
        try:
            with torch.no_grad(), eval_mode(self.adapted):
                self.adapted(self.ids())
        except Exception as exc:  # noqa: BLE001 - reported by the checks that need it
            return describe(exc)
        return None

    @functools.cached_property
    def incomparable(self) -> str | None:
        """Why two forwards cannot be compared, or None. The checks that change part of the
        input and look for a change in the output would blame whatever they perturb for NaN
        or for randomness in eval mode, which numerical_stability and determinism report."""
        ids = self.ids()
        with torch.no_grad(), eval_mode(self.adapted):
            first, second = self.adapted(ids), self.adapted(ids)
        if not bool(torch.isfinite(first).all()):
            return "the output holds NaN/Inf (see numerical_stability)"
        if not torch.equal(first, second):
            return "two eval-mode calls on the same input give different outputs (see determinism)"
        return None


@dataclass(frozen=True)
class Needs:
    """Preconditions of a check; unmet ones make it `skip` with the reason."""

    adapted: bool = True
    forward: bool = True
    tasks: tuple[str, ...] | None = None
    mask: bool = False
    min_len: int = 1
    comparable: bool = False  # outputs finite and repeatable in eval mode


def _guard(ctx: Tier1Context, check: Check, v: Verdict, call: Callable[[], CheckResult]) -> CheckResult:
    """What every Tier 1 check needs around it: skips for what cannot fit in memory or in
    its share of the time budget (a training run priced out of reach skips before it starts)
    and for unmet preconditions, a fixed seed, and the model's train/eval flags restored
    afterwards whatever happens. Running out of time or memory is
    a skip, never a verdict on the model."""
    too_big = _over_memory(ctx, check.id)
    if too_big:
        return v.skip(too_big[0], advice=too_big[1])
    if check.id in ctx.out_of_reach:
        why, advice, metrics = ctx.out_of_reach[check.id]
        return v.skip(why, metrics, advice=advice)
    share = _start_clock(ctx, check.id)
    try:
        unmet = _unmet(ctx, check.needs or Needs())
        if unmet:
            return v.skip(unmet[0], advice=unmet[1])
        torch.manual_seed(ctx.seed)
        with keep_modes(ctx.adapted):
            return call()
    except OutOfTime as exc:
        why, advice = out_of_time_skip(ctx.clock, share, ctx.time_budget, exc.limit)
        return v.skip(why, {"time_share_s": round(share, 2)}, advice=advice)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        why, advice = out_of_memory_skip(exc)
        return v.skip(why, advice=advice)


TIER1_CHECKS = CheckSet("tier1", guard=_guard)
# @check(id, thresholds=..., needs=Needs(...)) declares a Tier 1 check `fn(ctx, v)`.
check = TIER1_CHECKS.check


def _start_clock(ctx: Tier1Context, check_id: str) -> float:
    """Set the clock's deadline to this check's share of the time left; returns the share."""
    now = time.perf_counter()
    pending = ctx.pending[ctx.pending.index(check_id) :] if check_id in ctx.pending else [check_id]
    ctx.pending = pending[1:]
    ctx.clock.deadline = check_deadline(now, ctx.started + ctx.time_budget, pending, ctx.clock.typical())
    ctx.clock.reset_depth()
    return ctx.clock.deadline - now


def _over_memory(ctx: Tier1Context, check_id: str) -> tuple[str, str] | None:
    """(why, what to do) when the check's copies of the weights cannot fit in free memory."""
    if ctx.adapted is None or ctx.free_memory is None:
        return None
    need = memory_need(check_id, ctx.weight_bytes)
    if need <= MEMORY_FRACTION * ctx.free_memory:
        return None
    return memory_skip(check_id, need, ctx.free_memory, ctx.weight_bytes)


def other_task(p: ModelProfile, tasks: tuple[str, ...]) -> tuple[str, str]:
    """(why, what to do) for a check that does not apply to the model's task."""
    return (
        f"Applies to {' / '.join(tasks)} models; this one is {p.task} ({p.task_source}).",
        f'Nothing to do if it is a {p.task} model; if not, pass task=... to run_tier1 (or put "task" in config.json).',
    )


def _unmet(ctx: Tier1Context, needs: Needs) -> tuple[str, str] | None:
    """(why, what to do) for the first unmet precondition, or None."""
    if ctx.adapted is None and ctx.adapt_out_of_time and needs.adapted:
        return (
            "Not run: the time budget ran out while adapting the model (see forward_signature).",
            "Give the tier more time (time_budget= / --time-budget), or run on a GPU.",
        )
    if ctx.adapted is None:
        return (
            (
                "Not run: the model could not be adapted (see forward_signature).",
                "Fix what forward_signature reports, then run the tier again.",
            )
            if needs.adapted
            else None
        )
    p = ctx.profile
    if needs.tasks is not None and p.task not in needs.tasks:
        return other_task(p, needs.tasks)
    if needs.mask and not p.accepts_mask:
        return (
            "forward takes no padding mask, so there is nothing to check.",
            "Nothing to do unless you train on padded batches: then give forward an "
            "attention_mask (B, T) parameter, 1 = real token, and pass it to every "
            "attention.",
        )
    if ctx.seq_len < needs.min_len:
        return (
            f"Needs sequences of at least {needs.min_len} tokens; seq_len is {ctx.seq_len}.",
            f"Pass seq_len={needs.min_len} or more to run_tier1.",
        )
    if needs.forward and ctx.forward_error:
        return (
            f"Not run: the forward pass at (B={ctx.batch_size}, T={ctx.seq_len}) raised "
            f"{ctx.forward_error} (see output_shape).",
            "Fix the error output_shape reports, then run the tier again.",
        )
    if needs.comparable and ctx.incomparable:
        return (
            f"Not run: {ctx.incomparable}, so comparing two forwards would show nothing.",
            "Fix that first, then run the tier again.",
        )
    return None


# -- model state guards -------------------------------------------------------------------


class keep_modes:
    """Context manager: restore every module's train/eval flag on exit."""

    def __init__(self, model: nn.Module | None):
        self.flags = [] if model is None else [(m, m.training) for m in model.modules()]

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.flags:
            m.training = flag


class eval_mode(keep_modes):
    """Context manager: eval mode inside, the previous flags restored on exit."""

    def __init__(self, model: nn.Module | None):
        super().__init__(model)
        if model is not None:
            model.eval()


def pick_sizes(batch_size: int | None, seq_len: int | None, vocab: int | None, max_len: int | None) -> tuple[int, int]:
    """Probe (B, T): the user's sizes when given (B at most 8), else B=3 and T up to 16,
    nudged so that B, T and the vocabulary all differ (a transposed axis then cannot pass for
    the right one)."""
    T = seq_len or min(max_len or DEFAULT_MAX_T, DEFAULT_MAX_T)
    B = min(batch_size, MAX_PROBE_BATCH) if batch_size else DEFAULT_BATCH
    if seq_len is None and T in (B, vocab) and T > 2:
        T -= 1
    if batch_size is None and B in (T, vocab):
        B = next(b for b in (2, 4, 5, 6) if b not in (T, vocab))
    return B, T
