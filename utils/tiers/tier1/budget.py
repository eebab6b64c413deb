"""Tier 1's time and memory budgets: the whole tier, not only its training checks, ends within
`time_budget`, and a check that cannot fit in time or memory skips with the numbers.

Time: a `ForwardClock` hooks the model's forward. It measures every call (the first one, made
while adapting, tells how slow this model is here) and, by raising `OutOfTime`, refuses to
start a call that even at the cost measured for calls no larger cannot end before the
running check's deadline, or that by a straight line through the sizes measured would not
end before the tier's. Each check's deadline is its share of what is left, weighted by what
it costs (`CHECK_WEIGHTS`), so a cheap check that ends early leaves its time to the ones
after it.

Training checks: before any check runs, the shortest run that lets each of them conclude
(so many AdamW steps, each a forward, a backward and an update) is priced from that first
forward and a timed AdamW update; one that cannot fit in its cap skips at once, and its share
goes to the others instead of being spent finding out.

Memory: before any check runs, each check's need (copies of the weights it makes, plus
activations) is compared with the memory free on the device; what cannot fit skips.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

# Relative cost of each check, in units of "a few forwards at the probe size": the share of
# the remaining time each gets. Training checks run hundreds of steps when they can.
CHECK_WEIGHTS = {
    "forward_signature": 0.2,
    "output_shape": 2.0,
    "causality": 3.0,
    "batch_independence": 2.0,
    "padding_invariance": 1.0,
    "determinism": 1.0,
    "numerical_stability": 2.0,
    "initial_loss": 0.5,
    "gradient_flow": 1.0,
    "parameter_initialization": 0.5,
    "weight_sharing": 1.0,
    "device_portability": 1.0,
    "overfit_batch": 6.0,
    "label_leakage": 6.0,
    "state_dict_roundtrip": 1.0,
    "memory_footprint": 1.5,
    "inference_speed": 1.5,
}
# Copies of the weights (float32) a check holds at once beyond the model itself: a trained
# copy with its gradients and AdamW's two moments is four; a round trip holds a copy and
# its serialised bytes.
WEIGHT_COPIES = {
    "overfit_batch": 4.0,
    "label_leakage": 4.0,
    "state_dict_roundtrip": 2.0,
    "memory_footprint": 3.0,
    "gradient_flow": 1.0,
    "weight_sharing": 1.0,
    "output_shape": 1.0,
}
# Each training check may use this share of the tier's budget.
TRAIN_TIME_SHARE = 0.3
# AdamW is timed on a tensor of this many elements: past the caches, as a model's weights are.
ADAMW_PROBE_NUMEL = 1 << 22
# A check may use this fraction of the memory free when the tier starts.
MEMORY_FRACTION = 0.8


class OutOfTime(BaseException):
    """The running check's share of the time budget is spent (`limit` "check"), or what is
    left of the whole tier's ("tier"). A BaseException, so the `except Exception` a check
    uses to judge the model's own errors never swallows it."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


@dataclass
class ForwardClock:
    """Times the model's forward calls and stops the ones that cannot finish in time (see the
    module docstring). A line drawn from a few short calls overshoots a long one by several
    times, so it alone never refuses a call the tier has time for."""

    deadline: float = float("inf")  # the running check's
    tier_deadline: float = float("inf")
    calls: list[tuple[int, float]] = field(default_factory=list)  # (input numel, seconds)
    _depth: int = 0
    _start: float = 0.0
    _numel: int = 0
    _backward_follows: bool = True

    @property
    def first_forward_s(self) -> float | None:
        return self.calls[0][1] if self.calls else None

    def _typical(self) -> dict[int, float]:
        """input numel -> the lower-median time of calls that size (the median keeps a first
        call's one-off warm-up out)."""
        by_size: dict[int, list[float]] = {}
        for n, s in self.calls:
            by_size.setdefault(n, []).append(s)
        return {n: sorted(t)[(len(t) - 1) // 2] for n, t in by_size.items()}

    def bound(self, numel: int) -> float:
        """The least a call with `numel` input elements should take: the slowest typical time
        of a size no bigger (a call is never faster than a smaller one), or below every size
        measured the fastest typical time (a call's fixed cost); 0 before any call."""
        typical = self._typical()
        smaller = [t for n, t in typical.items() if n <= numel]
        return max(smaller) if smaller else min(typical.values(), default=0.0)

    def estimate(self, numel: int) -> float:
        """The seconds a call with `numel` input elements should take: `bound` within the sizes
        measured; past them a straight line `a + b * numel` through those times (a fixed cost
        plus a cost per token), never below that bound."""
        typical = self._typical()
        bound = self.bound(numel)
        if len(typical) < 2 or numel <= max(typical):
            return bound
        sizes = sorted(typical)
        times = [typical[n] for n in sizes]
        mean_n, mean_t = sum(sizes) / len(sizes), sum(times) / len(times)
        spread = sum((n - mean_n) ** 2 for n in sizes)
        slope = max(0.0, sum((n - mean_n) * (t - mean_t) for n, t in zip(sizes, times)) / spread)
        fixed = max(0.0, mean_t - slope * mean_n)
        return max(bound, fixed + slope * numel)

    def typical(self) -> float:
        """The median call so far, for messages."""
        times = sorted(s for _, s in self.calls)
        return times[len(times) // 2] if times else 0.0

    def before(self, args: tuple) -> None:
        self._depth += 1
        if self._depth > 1:
            return
        numel = sum(a.numel() for a in args if isinstance(a, torch.Tensor))
        factor = 3.0 if torch.is_grad_enabled() and self._backward_follows else 1.0  # a backward follows
        now = time.perf_counter()
        limit = (
            "check"
            if now + factor * self.bound(numel) > self.deadline
            else "tier"
            if now + factor * self.estimate(numel) > self.tier_deadline
            else None
        )
        if limit:
            self._depth -= 1
            raise OutOfTime(limit)
        self._start, self._numel = time.perf_counter(), numel

    def after(self, raised: bool = False) -> None:
        """A call that raised quickly is not timed (failing fast says nothing of what a call
        costs); one that raised after longer than calls its size take still tells the cost,
        once a call has succeeded to compare it with."""
        self._depth -= 1
        if self._depth == 0:
            seconds = time.perf_counter() - self._start
            if not raised or (self.calls and seconds > self.bound(self._numel)):
                self.calls.append((self._numel, seconds))

    @contextmanager
    def without_backward(self) -> Iterator[None]:
        """For forwards under autograd that no backward follows (memory_footprint's probe of
        what autograd keeps): each is priced as one forward, not as a training step."""
        self._backward_follows = False
        try:
            yield
        finally:
            self._backward_follows = True

    def reset_depth(self) -> None:
        """Before each check: an interrupt inside a forward skips the post-hook."""
        self._depth = 0


@contextmanager
def clocked(modules: Sequence[nn.Module], clock: ForwardClock) -> Iterator[ForwardClock]:
    """Hook `clock` onto each module's forward for the duration. The hooks are closures (a
    deep copy of the model shares them, so trained copies are timed too) and are removed on
    exit, leaving the user's model as it was."""

    def pre(module: nn.Module, args: tuple) -> None:
        clock.before(args)

    def post(module: nn.Module, args: tuple, output: object) -> None:
        # an always-called hook gets None, inside torch's `except`, when forward raised
        clock.after(raised=output is None and sys.exc_info()[1] is not None)

    handles = []
    for m in modules:
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post, always_call=True)]
    try:
        yield clock
    finally:
        for h in handles:
            h.remove()


def check_deadline(now: float, tier_deadline: float, pending: Sequence[str], forward_s: float = 0.0) -> float:
    """The deadline of the first of `pending` checks: its weighted share of the time left,
    but never less than two forwards while the tier has them left (a share smaller than one
    call would skip a check that fits)."""
    left = max(0.0, tier_deadline - now)
    weights = [CHECK_WEIGHTS.get(c, 1.0) for c in pending]
    share = max(left * weights[0] / sum(weights), 2.0 * forward_s)
    return now + min(share, left)


def out_of_time_skip(clock: ForwardClock, share: float, budget: float, limit: str) -> tuple[str, str]:
    """(summary, advice) of a check stopped by the budget (`limit`: its own share, or the
    whole tier's), with the numbers behind it."""
    forward = clock.typical()
    pace = f"; one forward takes about {forward:.2g} s here" if forward else ""
    spent = (
        f"its share of the time budget ({share:.1f} s of {budget:g} s) ran out"
        if limit == "check"
        else f"its next forward would have run past the tier's {budget:g} s time budget"
    )
    return (
        f"Not run: {spent}{pace}. This says nothing about the model.",
        "Give the tier more time (run_tier1(time_budget=...) or tbuilder check "
        "--time-budget SECONDS), run on a GPU, or run this check alone (checks=[...]).",
    )


# -- training runs ------------------------------------------------------------------------


def adamw(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The optimizer of the training checks: AdamW without weight decay, fused where PyTorch
    has the kernel (real floating-point weights on a CPU or a CUDA device: several times
    faster on a CPU than the per-tensor loop, the same update), else the default one. Decided
    up front from the weights: PyTorch refuses an unsupported weight only at the first step."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused or None)
    except RuntimeError:  # a PyTorch before 2.4 has no fused kernel for a CPU
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


@functools.cache
def adamw_seconds_per_parameter(device: str) -> float:
    """Seconds one update of `adamw` takes per parameter on `device`: the second of two steps
    on one tensor of ADAMW_PROBE_NUMEL elements (the first allocates the moments). Measured
    once per process; a few milliseconds."""
    dev = torch.device(device)
    weight = nn.Parameter(torch.zeros(ADAMW_PROBE_NUMEL, device=dev))
    weight.grad = torch.ones_like(weight)
    opt = adamw([weight], lr=1e-3)
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - start) / ADAMW_PROBE_NUMEL


def step_seconds(forward_s: float, trainable: int, per_parameter: float) -> float:
    """One training step: the forward, a backward of about twice its cost, and the update."""
    return 3.0 * forward_s + trainable * per_parameter


def run_out_of_reach(steps: int, step_s: float, cap: float, budget: float, batch: str) -> tuple[str, str, dict] | None:
    """(summary, advice, metrics) when `steps` training steps of at least `step_s` seconds
    each cannot fit in `cap` seconds, or None when they can."""
    need = steps * step_s
    if need <= cap:
        return None
    return (
        f"Not run: it needs at least {steps} training steps to conclude, at least "
        f"{_seconds(need)} s at {_seconds(step_s)} s a step (forward, backward and AdamW update "
        f"on {batch}), and a training check may use {_seconds(cap)} s of the {budget:g} s time "
        "budget. This says nothing about the model.",
        "Give the tier more time (run_tier1(time_budget=...) or tbuilder check --time-budget "
        f"SECONDS; at least {need / TRAIN_TIME_SHARE:,.0f} s), or run on a GPU.",
        {"steps_needed": steps, "step_s": step_s, "need_s": need, "cap_s": cap},
    )


def _seconds(x: float) -> str:
    """Seconds for a message: three significant digits, whole seconds past a thousand."""
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


# -- memory -------------------------------------------------------------------------------


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device`: the GPU's free memory, or the machine's available RAM (Linux
    MemAvailable, else what sysconf says); None when it cannot be known."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers in float32, as Tier 1 runs it."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * (4 if t.is_floating_point() else t.element_size())
    return total


def memory_need(check_id: str, weights: int) -> int:
    """Bytes a check needs beyond the model itself."""
    return int(WEIGHT_COPIES.get(check_id, 0.0) * weights)


def memory_skip(check_id: str, need: int, free: int, weights: int) -> tuple[str, str]:
    copies = WEIGHT_COPIES.get(check_id, 0.0)
    return (
        f"Not run: it needs about {_gb(need)} ({copies:g} x the {_gb(weights)} of weights) "
        f"and {_gb(free)} is free here. Running out of memory says nothing about the model.",
        "Run on a machine with more memory (or a GPU with enough of it), or check a smaller "
        "configuration of the same model.",
    )


def out_of_memory_skip(exc: BaseException) -> tuple[str, str]:
    return (
        f"Not run to the end: it ran out of memory ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:200] if str(exc) else 'no message'}). This says nothing "
        "about the model.",
        "Run on a machine with more memory, or check a smaller configuration of the model.",
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text or "out of memory" in text
    )


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def tier_memory_shortfall(weights: int, free: int | None) -> str | None:
    """Why Tier 1 cannot run in `free` bytes, or None when it can (or `free` is unknown). The
    tier holds the model and, for its gradient checks, one gradient per weight: twice the
    weights must fit in MEMORY_FRACTION of what is free. Decided from a meta-device build,
    before a single weight is allocated."""
    need = 2 * weights
    if free is None or need <= MEMORY_FRACTION * free:
        return None
    return (
        f"Tier 1 needs about {_gb(need)} (the {_gb(weights)} of float32 weights and as much "
        f"again for their gradients) and {_gb(free)} is free here, so the model was not "
        "built. This says nothing about the model: run on a machine with more memory (or a "
        "GPU with enough of it), or check a smaller configuration of the same model."
    )
