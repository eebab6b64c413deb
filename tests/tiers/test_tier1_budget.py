"""Tier 1's whole-tier time budget and memory estimate: a slow or huge model gets honest
skips with numbers, never a verdict against it and never an hour of waiting."""

from __future__ import annotations

import time

import torch
import torch._dynamo  # noqa: F401 - the first AdamW imports it (seconds): not what is timed here
from torch import nn

from utils.loading import load_model
from utils.tiers.tier1 import run_tier1
from utils.tiers.tier1.budget import (
    ForwardClock,
    OutOfTime,
    clocked,
    is_out_of_memory,
    out_of_time_skip,
    run_out_of_reach,
    step_seconds,
)


class SlowLM(nn.Module):
    """A correct causal LM whose forward sleeps: its cost is time, not compute."""

    def __init__(self, seconds: float, vocab: int = 40, d: int = 8, max_len: int = 12):
        super().__init__()
        self.seconds = seconds
        self.max_seq_len = max_len
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        T = input_ids.shape[1]
        if T > self.max_seq_len:
            raise ValueError(f"{T} tokens; this model takes at most {self.max_seq_len}")
        return self.head(self.emb(input_ids) + self.pos(torch.arange(T, device=input_ids.device)))  # (B, T, V)


def test_the_budget_holds_for_the_whole_tier_and_what_did_not_fit_skips():
    budget = 3.0
    start = time.perf_counter()
    report = run_tier1(SlowLM(0.25), task="causal_lm", time_budget=budget, progress=False)
    elapsed = time.perf_counter() - start
    assert elapsed < budget * 1.5, elapsed
    assert not report.complete
    assert 0.2 < report.meta["first_forward_s"] < 2.0
    timed_out = [r for r in report if "time budget" in r.summary]
    assert timed_out and all(r.status == "skip" for r in timed_out)
    assert "one forward takes about 0.2" in timed_out[0].summary
    assert "--time-budget" in timed_out[0].advice
    assert not report.failed
    assert "All checks passed" not in report.verdict()


def test_a_forward_slower_than_the_budget_stops_while_adapting():
    start = time.perf_counter()
    report = run_tier1(SlowLM(1.2), task="causal_lm", time_budget=1.0, progress=False)
    assert time.perf_counter() - start < 4.0
    first = report["forward_signature"]
    assert first.status == "skip" and "the 1 s time budget ran out after 1" in first.summary
    assert report.status == "skip" and not report.failed


def test_the_clock_refuses_a_call_that_cannot_finish_and_leaves_no_hooks():
    model = SlowLM(0.05)
    clock = ForwardClock()
    with clocked([model], clock):
        model(torch.zeros(1, 4, dtype=torch.long))
        clock.deadline = time.perf_counter() + 0.01
        try:
            model(torch.zeros(1, 4, dtype=torch.long))
            raise AssertionError("the clock let a call past its deadline")
        except OutOfTime:
            pass
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert len(clock.calls) == 1 and clock.calls[0][1] >= 0.05


class Hungry(nn.Module):
    """A correct model until a training-mode forward (memory_footprint's activation probe):
    then the allocator gives up, as it does for a model too large for the machine."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.head = nn.Linear(8, 30)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                "can't allocate memory: you tried to allocate 9000000000 bytes."
            )
        return self.head(self.emb(input_ids))


def test_out_of_memory_is_a_skip_never_a_fail():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory")) and is_out_of_memory(MemoryError())
    report = run_tier1(
        Hungry(),
        task="causal_lm",
        vocab_size=30,
        max_seq_len=8,
        progress=False,
        checks=["memory_footprint", "initial_loss"],
    )
    result = report["memory_footprint"]
    assert result.status == "skip", result.summary
    assert "ran out of memory" in result.summary and "says nothing about the model" in result.summary


def test_checks_whose_weight_copies_cannot_fit_skip_before_running(monkeypatch):
    import utils.tiers.tier1.run as tier1

    monkeypatch.setattr(tier1, "free_memory", lambda device: 10_000)  # 10 kB free
    report = run_tier1(SlowLM(0.0), task="causal_lm", progress=False, checks=["overfit_batch", "initial_loss"])
    skipped = report["overfit_batch"]
    assert skipped.status == "skip" and "4 x the" in skipped.summary
    assert "is free here" in skipped.summary and skipped.metrics == {}
    assert report["initial_loss"].status == "pass"


def test_the_clock_extrapolates_past_the_sizes_it_has_seen():
    clock = ForwardClock(calls=[(10, 0.11), (10, 0.12), (20, 0.21), (40, 0.41)])
    assert clock.estimate(5) == 0.11 and clock.estimate(20) == 0.21  # a fixed cost; never faster than smaller
    assert ForwardClock().estimate(10) == 0.0  # nothing measured yet
    warm = ForwardClock(calls=[(10, 3.0), (10, 0.1), (10, 0.1)])  # a first call's warm-up
    assert warm.estimate(10) == 0.1
    assert 3.8 < clock.estimate(400) < 4.2  # about 0.01 s fixed + 0.01 s per element
    flat = ForwardClock(calls=[(10, 0.5), (40, 0.5)])  # a cost that does not grow (a sleep)
    assert flat.estimate(10_000) == 0.5


def test_a_training_check_that_cannot_conclude_in_its_cap_skips_at_once_with_the_numbers():
    # 0.25 s a forward: a step costs at least 0.75 s, so neither 5 overfitting steps nor the
    # 150 steps of the leak run fit the 0.3 x 3 s a training check may use.
    report = run_tier1(SlowLM(0.25), task="causal_lm", time_budget=3.0, progress=False)
    for check_id, steps in (("overfit_batch", 5), ("label_leakage", 150)):
        result = report[check_id]
        assert result.status == "skip" and result.seconds < 0.05, (check_id, result.summary)
        assert f"at least {steps} training steps to conclude" in result.summary
        assert "0.9 s of the 3 s time budget" in result.summary and "says nothing about the model" in result.summary
        assert "--time-budget" in result.advice


def test_a_model_that_trains_fast_enough_runs_its_training_checks():
    report = run_tier1(
        load_model("example:gpt-mini"), time_budget=60.0, progress=False, checks=["overfit_batch", "label_leakage"]
    )
    assert report["overfit_batch"].status == "pass", report["overfit_batch"].summary
    assert report["label_leakage"].status == "pass", report["label_leakage"].summary


def test_the_price_of_a_run_names_steps_seconds_and_the_cap():
    assert run_out_of_reach(150, 0.1, 18.0, 60.0, "32 x 2 tokens") is None  # 15 s fit in 18 s
    summary, advice, metrics = run_out_of_reach(150, 1.0, 18.0, 60.0, "32 x 2 tokens and 124 parameters")
    assert "at least 150 training steps" in summary and "at least 150 s at 1 s a step" in summary
    assert "may use 18 s of the 60 s time budget" in summary and "at least 500 s" in advice
    assert metrics == {"steps_needed": 150, "step_s": 1.0, "need_s": 150.0, "cap_s": 18.0}
    assert "at least 1,500 s at 10 s a step" in run_out_of_reach(150, 10.0, 18.0, 60.0, "x")[0]
    assert step_seconds(0.5, 1_000, 1e-4) == 1.5 + 0.1  # forward, backward twice it, update


def test_a_line_drawn_from_short_calls_alone_never_refuses_a_call_the_tier_has_time_for():
    long_call = (torch.zeros(1, 1024, dtype=torch.long),)
    now = time.perf_counter()
    clock = ForwardClock(calls=[(1, 0.01), (15, 0.1)], deadline=now + 1.0, tier_deadline=now + 60.0)
    assert clock.estimate(1024) > 5.0 and clock.bound(1024) == 0.1
    clock.before(long_call)  # the line says 6 s, the check has 1 s: the tier has 60 s, so it runs
    clock.after()
    clock = ForwardClock(calls=[(1, 0.01), (15, 0.1)], deadline=now + 1.0, tier_deadline=now + 2.0)
    try:
        clock.before(long_call)
        raise AssertionError("a call the line prices past the tier's deadline was started")
    except OutOfTime as exc:
        assert exc.limit == "tier"
    measured = ForwardClock(calls=[(1024, 2.0)], deadline=time.perf_counter() + 1.0)
    try:
        measured.before(long_call)  # a call as long as one measured at 2 s cannot fit 1 s
        raise AssertionError("the clock started a call slower than the check's share")
    except OutOfTime as exc:
        assert exc.limit == "check"
    why, _ = out_of_time_skip(measured, 1.0, 60.0, "tier")
    assert "would have run past the tier's 60 s time budget" in why


class RaisesEarlyOrLate(nn.Module):
    """Four tokens take 0.05 s; five raise at once (a length check); three raise after 0.2 s
    (an error found only at the end of a long forward)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > 4:
            raise ValueError("too long")
        time.sleep(0.2 if T == 3 else 0.05)
        if T == 3:
            raise RuntimeError("failed late")
        return input_ids.float()


def test_a_call_that_raises_at_once_is_not_timed_and_one_that_raises_late_is():
    model, clock = RaisesEarlyOrLate(), ForwardClock()
    with clocked([model], clock):
        model(torch.zeros(1, 4, dtype=torch.long))
        for T in (5, 3):
            try:
                model(torch.zeros(1, T, dtype=torch.long))
            except (ValueError, RuntimeError):
                pass
    assert [n for n, _ in clock.calls] == [4, 3]
    assert clock.calls[1][1] >= 0.2


def test_a_model_with_nothing_to_train_fails_overfitting_however_slow_it_is():
    frozen = SlowLM(0.1).requires_grad_(False)  # 5 steps would need 1.5 s of a 0.9 s cap
    report = run_tier1(frozen, task="causal_lm", time_budget=3.0, progress=False, checks=["overfit_batch"])
    assert report["overfit_batch"].status == "fail" and "Nothing to train" in report["overfit_batch"].summary
    trainable = run_tier1(SlowLM(0.1), task="causal_lm", time_budget=3.0, progress=False, checks=["overfit_batch"])
    assert "training steps to conclude" in trainable["overfit_batch"].summary


def test_a_forward_no_backward_follows_is_priced_as_one_forward():
    call = (torch.zeros(1, 8, dtype=torch.long),)
    clock = ForwardClock(calls=[(8, 1.0)], deadline=time.perf_counter() + 2.0)
    with torch.enable_grad():
        try:
            clock.before(call)  # a training step: about 3 s, past the 2 s left
            raise AssertionError("a step longer than the share was started")
        except OutOfTime:
            pass
        with clock.without_backward():
            clock.before(call)  # memory_footprint's probe: one forward, 1 s
        clock.after()


def test_a_plan_for_a_model_the_tier_moved_times_its_own_probe_on_the_tiers_device():
    from utils.adapters import adapt
    from utils.tiers.tier1.run import _context, _planned_skips

    adapted = adapt(SlowLM(0.25), task="causal_lm")
    ctx = _context(adapted, None, torch.device("cpu"), 0, None, None, 3.0, time.perf_counter())
    # what another, faster device measured while adapting: it would price every run in reach
    ctx.clock = ForwardClock(calls=[(45, 0.0001)])
    ctx.pending = ["overfit_batch", "label_leakage"]
    with clocked([adapted, adapted.model], ctx.clock):
        planned = _planned_skips(ctx, retime=True)
    assert set(planned) == {"overfit_batch", "label_leakage"}
    assert ctx.clock.calls and ctx.clock.calls[0][1] >= 0.25  # the probe, timed here
