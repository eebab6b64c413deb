"""Tier 1 checks that train a copy of the model for a few steps: it can memorise one batch,
and it cannot beat chance on random tokens (which only a model that sees its targets can).

Both train a deep copy, so the user's weights never move."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch._dynamo  # noqa: F401 - the first AdamW imports it (seconds); here it is not the tier's time
from torch import nn

from utils.adapters.losses import lm_loss
from utils.checks import CheckResult, Verdict
from utils.tiers.tier1.budget import (
    TRAIN_TIME_SHARE,
    adamw,
    adamw_seconds_per_parameter,
    run_out_of_reach,
    step_seconds,
)
from utils.tiers.tier1.causality import causal_advice, locate_future_leak
from utils.tiers.tier1.context import LOSS_TASKS, Needs, Tier1Context, check, eval_mode

# Learning rates of the short runs, AdamW: models up to ~20M parameters take 1e-2 for the
# leak run (a leak is learnt in tens of steps) but only 3e-3 for memorising a batch, where
# 1e-2 makes a pre-LN GPT with tied embeddings oscillate just short of the 90% drop for some
# initialisations; larger models need 1e-3 to stay stable.
SMALL_MODEL_PARAMS = 20_000_000
LR_SMALL, LR_LARGE = 1e-2, 1e-3
OVERFIT_LR_SMALL = 3e-3


@dataclass(frozen=True)
class OverfitThresholds:
    # 4 sequences of up to 16 tokens; pass when the loss falls by more than 90% within 200
    # steps. Correct models (GPT-2, Llama, BERT, nanoGPT, the designer's exports) get there
    # in 5-75 steps; a model that ignores its input tokens plateaus at ln(4) (~70% drop).
    batch: int = 4
    max_len: int = 16
    max_steps: int = 200
    drop: float = 0.9
    plateau: int = 50  # stop early when the best loss has not improved by 1% for this many steps
    fewest_steps: int = 5  # no correct model has passed in fewer: a cap that holds fewer skips at once


@dataclass(frozen=True)
class LeakageThresholds:
    # Fresh random tokens every step, drawn from 8 tokens so the chance level is ln(8) =
    # 2.08, in pairs (T = 2) so that a position that sees the next token gives it half its
    # attention and a leak is learnt fast: a model that sees it, even through one attention
    # layer of several or an off-by-one mask, copies it within ~60 steps and its loss heads
    # to 0 (at T = 8 the leaked token is diluted among 8 and such leaks go unlearnt in 300
    # steps). A causal model stays at chance: its lowest 5-step mean is ln(8) - 0.04 at
    # worst. Fail when the mean loss over 5 steps goes below half of ln(8).
    vocab: int = 8
    seq_len: int = 2
    batch: int = 32
    max_steps: int = 150
    fraction: float = 0.5
    window: int = 5
    # The model's own loss matches one of ours when they agree to this relative tolerance
    # (the same cross-entropy, summed in another order, differs by ~1e-7).
    own_loss_rtol: float = 1e-4


def _learning_rate(model: nn.Module, small: float = LR_SMALL) -> float:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return small if n < SMALL_MODEL_PARAMS else LR_LARGE


def _train(
    model: nn.Module,
    step_loss: Callable[[int], torch.Tensor],
    max_steps: int,
    seconds: float,
    stop: Callable[[list[float]], bool],
    lr: float,
) -> tuple[list[float], str]:
    """Run AdamW steps until `stop(history)`, the step budget, the time cap or a non-finite
    loss. Returns the loss history and why it ended: stop | steps | time | nonfinite | nograd."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return [], "nograd"
    opt = adamw(params, lr)
    history: list[float] = []
    start = time.perf_counter()
    for step in range(max_steps):
        loss = step_loss(step)
        if not loss.requires_grad:
            return history, "nograd"
        value = float(loss.detach())
        history.append(value)
        if not math.isfinite(value):
            return history, "nonfinite"
        if stop(history):
            return history, "stop"
        if time.perf_counter() - start > seconds:
            return history, "time"
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return history, "steps"


def _time_cap(ctx: Tier1Context) -> float:
    return max(0.0, min(ctx.time_budget * TRAIN_TIME_SHARE, ctx.check_left()))


def _curve(history: list[float]) -> list[float]:
    step = max(1, len(history) // 20)
    return [round(v, 4) for v in history[::step]]


def _leak_run(
    history: list[float], width: int, tokens: int, chance: float, floor: float, why: str, cap: float
) -> tuple[list[float], dict[str, Any]]:
    """The moving means of a leak run's losses (a leak shows as a sustained drop, not one lucky
    step) and the metrics both leak checks report about it."""
    window = [sum(history[i : i + width]) / width for i in range(max(0, len(history) - width + 1))]
    metrics = {
        "tokens_in_use": tokens,
        "chance_loss": chance,
        "fail_below": floor,
        "steps": len(history),
        "lowest_window_mean": min(window) if window else None,
        "ended_by": why,
        "time_cap_s": cap,
        "curve": _curve(history),
    }
    return window, metrics


def _leak_test(t: LeakageThresholds, K: int) -> tuple[float, float, Callable[[list[float]], bool]]:
    """(chance, the loss a leak goes below, whether a run's history shows a leak): a
    sustained drop, the mean of the last `window` steps below `fraction` of ln(K)."""
    chance = math.log(K)
    floor = t.fraction * chance

    def leaked(h: list[float]) -> bool:
        return len(h) >= t.window and sum(h[-t.window :]) / t.window < floor

    return chance, floor, leaked


def _no_leak(
    v: Verdict,
    why: str,
    history: list[float],
    window: list[float],
    metrics: dict[str, Any],
    cap: float,
    K: int,
    data: str,
    exact: str,
) -> CheckResult:
    """The verdict of a leak run that did not stop on a leak (`why` is how it ended): a pass
    after all its steps, else a skip saying why (`data` names what it trained on, `exact`
    what causality checks exactly instead)."""
    steps = v.thresholds.max_steps
    if why in ("nograd", "nonfinite"):
        trouble = "no gradient" if why == "nograd" else "the loss became NaN/Inf"
        return v.skip(
            f"Could not train ({trouble}).", metrics, "Fix what gradient_flow and overfit_batch report, then run again."
        )
    if why == "time":
        return v.skip(
            f"Stopped by the time cap ({cap:.1f} s) after {len(history)} of {steps} steps with no leak so "
            "far; too slow here to conclude.",
            metrics,
            f"Run on a GPU (device='cuda') or raise time_budget; causality checks {exact} for the same leak exactly.",
        )
    lowest = min(window) if window else float("nan")
    return v.pass_(
        f"After {len(history)} steps on {data} the loss stays near chance (lowest 5-step mean "
        f"{lowest:.3f}, chance ln({K}) = {math.log(K):.3f}).",
        metrics,
    )


# -- overfit_batch ---------------------------------------------------------------------------


@check("overfit_batch", thresholds=OverfitThresholds(), needs=Needs(tasks=LOSS_TASKS))
def overfit_batch(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """The model can memorise one small batch

    What it checks: a few hundred AdamW steps on one small batch bring the loss down by more
    than 90%.
    Why it matters: a model that cannot memorise four sequences cannot learn anything; it
    usually ignores its input tokens or has a broken loss path.
    Known false alarms: very large models on a small time budget skip when the time runs out
    (at once when not even five steps fit their cap), never fail.
    Broken example: PositionOnlyLM, whose output depends on positions only.
    How to fix: make the logits depend on the input tokens (the token embedding must reach
    the output), and check the loss path the other checks name.
    """
    t = v.thresholds
    trainee = copy.deepcopy(ctx.adapted).eval()  # eval: dropout would only add noise here
    ids = ctx.ids(t.batch, min(ctx.seq_len, t.max_len), offset=v.stream("tokens"))
    labels = ctx.labels_for(ids, v.stream("labels"))

    def stop(h: list[float]) -> bool:
        if h[-1] < (1 - t.drop) * h[0]:
            return True
        recent, before = h[-t.plateau :], h[: -t.plateau]
        return bool(before) and min(recent) > 0.99 * min(before)  # plateau

    cap = _time_cap(ctx)
    lr = _learning_rate(trainee, OVERFIT_LR_SMALL)
    history, why = _train(trainee, lambda s: ctx.loss(trainee(ids), labels), t.max_steps, cap, stop, lr)
    drop = 1 - min(history) / history[0] if history and history[0] > 0 else 0.0
    metrics = {
        "steps": len(history),
        "start_loss": history[0] if history else None,
        "best_loss": min(history) if history else None,
        "drop": drop,
        "lr": lr,
        "batch": list(ids.shape),
        "ended_by": why,
        "time_cap_s": cap,
        "curve": _curve(history),
    }
    if why == "nograd":
        return v.fail(
            "Nothing to train: no parameter requires grad or the loss has no gradient.", metrics, "See gradient_flow."
        )
    if why == "nonfinite":
        return v.fail(
            f"The loss became {history[-1]} after {len(history)} steps at lr {lr}.",
            metrics,
            "Training diverges on a single batch: look for missing "
            "normalisation, an unscaled attention score, or a huge init.",
        )
    if drop > t.drop:
        return v.pass_(
            f"Loss fell {drop:.0%} ({history[0]:.3f} -> {min(history):.3f}) in {len(history)} steps.", metrics
        )
    if why == "time":
        return v.skip(
            f"Stopped by the time cap after {len(history)} steps "
            f"({cap:.1f} s); the loss had fallen {drop:.0%}. Too slow "
            "here to conclude.",
            metrics,
            "Run on a GPU (device='cuda') or raise time_budget.",
        )
    return v.fail(
        f"Could not memorise {t.batch} sequences: the loss fell only {drop:.0%} "
        f"({history[0]:.3f} -> {min(history):.3f}) in {len(history)} steps.",
        metrics,
        "A working model memorises a tiny batch quickly. Check that the output depends on the "
        "input tokens (token embedding used and added), that nothing detaches the hidden state "
        "or freezes most weights, and that the head sees the final hidden state.",
    )


# -- label_leakage ----------------------------------------------------------------------------


def _own_convention(ctx: Tier1Context, own: torch.Tensor, ids: torch.Tensor, rtol: float) -> str:
    """Whether the model's own loss `own` on `ids` is the shifted next-token loss ('shifted'),
    the loss against the same position ('unshifted'), or something else ('other')."""
    hf = ctx.adapted.labels_are_inputs
    x = ids if hf else ids[:, :-1].contiguous()
    with torch.no_grad(), eval_mode(ctx.adapted):
        logits = ctx.adapted(x)
        kind = ctx.profile.output_kind
        if hf:
            shifted = lm_loss(logits, x, "causal_lm", kind)[0]
        else:
            shifted = lm_loss(logits, ids[:, 1:].contiguous(), "masked_lm", kind)[0]
        same = lm_loss(logits, x, "masked_lm", kind)[0]

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return abs(float(a) - float(b)) <= rtol * max(1.0, abs(float(b)))

    if close(own, shifted):
        return "shifted"
    return "unshifted" if hf and close(own, same) else "other"


@check("label_leakage", thresholds=LeakageThresholds(), needs=Needs(tasks=("causal_lm", "seq2seq"), min_len=2))
def label_leakage(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Training on random tokens cannot beat chance

    What it checks: training on fresh random tokens, whose next token cannot be predicted,
    never brings the loss far below chance (ln of the token pool); the model's own loss, if
    it computes one, is the shifted one.
    Why it matters: a loss below chance on unpredictable data means the model sees its
    targets: an unshifted loss or a mask leak.
    Known false alarms: bidirectional models skip; a run out of time skips, never fails (at
    once when its 150 steps cannot fit their cap, as on a 124M-parameter model on a CPU). An
    encoder-decoder is judged on the target side, with sources drawn apart from the targets.
    Broken example: UnshiftedLossLM (loss without the shift), NoCausalMaskGPT and
    PeekingDecoderSeq2Seq.
    How to fix: shift the targets (logits[:, :-1] against labels[:, 1:]) and mask attention
    causally in every layer.
    """
    t = v.thresholds
    K = min(t.vocab, ctx.id_high)
    g = ctx.generator(v.stream("tokens"))
    pool = torch.randperm(ctx.id_high, generator=g)[:K].to(ctx.device)
    batches = [pool[torch.randint(0, K, (t.batch, t.seq_len), generator=g)].to(ctx.device) for _ in range(t.max_steps)]
    if ctx.task == "seq2seq":
        return _target_leakage(ctx, v, batches, pool, K)
    with torch.no_grad(), eval_mode(ctx.adapted):
        own = ctx.adapted.own_loss(batches[0])
    convention = None if own is None else _own_convention(ctx, own, batches[0], t.own_loss_rtol)
    trainee = copy.deepcopy(ctx.adapted).eval()

    def step_loss(s: int) -> torch.Tensor:
        if own is not None:
            return trainee.own_loss(batches[s])
        return ctx.loss(trainee(batches[s]), batches[s])

    chance, floor, leaked = _leak_test(t, K)
    cap = _time_cap(ctx)
    history, why = _train(trainee, step_loss, t.max_steps, cap, leaked, _learning_rate(trainee))
    window, metrics = _leak_run(history, t.window, K, chance, floor, why, cap)
    metrics = {
        "loss_used": "model's own (labels)" if own is not None else "shifted next-token loss",
        "own_loss_convention": convention,
        **metrics,
    }
    if why == "stop":
        if convention == "unshifted":
            return v.fail(
                f"The model's own loss compares the logits at t with the label at t (no shift): "
                f"on random tokens it fell to {window[-1]:.3f}, far below chance "
                f"ln({K}) = {chance:.3f}.",
                metrics,
                f"With Hugging Face's convention (labels = input_ids) forward must shift: "
                "`loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), "
                f"{ctx.profile.signature.label_param}[:, 1:].reshape(-1))`.",
            )
        where = locate_future_leak(ctx, ctx.ids(offset=v.stream("locate")), 0)
        metrics["first_leaking_module"] = where
        return v.fail(
            f"On random tokens the loss fell to {window[-1]:.3f}, far below chance ln({K}) = "
            f"{chance:.3f}: the model reads the token it must predict" + (f" (through `{where}`)." if where else "."),
            metrics,
            causal_advice(ctx, where),
        )
    return _no_leak(v, why, history, window, metrics, cap, K, "random tokens", "the model's logits")


def _target_leakage(
    ctx: Tier1Context, v: Verdict, targets: list[torch.Tensor], pool: torch.Tensor, K: int
) -> CheckResult:
    """The target side of an encoder-decoder: sources and targets drawn apart, so nothing in
    the source tells the target; only a decoder that reads the token it must predict (an
    unshifted decoder input, a decoder self-attention without its causal mask) beats chance."""
    t = v.thresholds
    g = ctx.generator(v.stream("sources"))
    sources = [pool[torch.randint(0, K, tuple(y.shape), generator=g)].to(ctx.device) for y in targets]
    trainee = copy.deepcopy(ctx.adapted).eval()
    chance, floor, leaked = _leak_test(t, K)

    def step_loss(s: int) -> torch.Tensor:
        """Scored at every target position but the last, which a decoder that sees one token
        ahead has nothing to read from (so a leak there shows undiluted)."""
        out = trainee(sources[s], target_ids=targets[s])  # (B, S, V)
        return ctx.loss(out[:, :-1], targets[s][:, :-1])

    cap = _time_cap(ctx)
    history, why = _train(trainee, step_loss, t.max_steps, cap, leaked, _learning_rate(trainee))
    window, metrics = _leak_run(history, t.window, K, chance, floor, why, cap)
    metrics = {
        "loss_used": "target cross-entropy (decoder fed the target shifted right)",
        "target_shift": ctx.profile.target_shift,
        **metrics,
    }
    if why == "stop":
        return v.fail(
            f"On random sources and targets the loss fell to {window[-1]:.3f}, far below chance "
            f"ln({K}) = {chance:.3f}: the decoder reads the target token it must predict.",
            metrics,
            "The decoder's input at position s must be the target up to s - 1 (the target shifted "
            "right after the decoder start token), and its self-attention needs a causal mask; see "
            "causality for the leaking module.",
        )
    return _no_leak(v, why, history, window, metrics, cap, K, "random sources and targets", "the decoder")


# -- planning -------------------------------------------------------------------------------


def _shortest_runs(ctx: Tier1Context) -> dict[str, tuple[int, tuple[int, int]]]:
    """check id -> (the fewest steps that can conclude it, the token batch of each step), for the
    training checks still to run whose preconditions hold (a check that skips for its task or
    fails for its forward says so, not that it is out of time). Overfitting can pass once the
    loss has fallen; the leak run passes only when all its steps stayed at chance. Pricing the
    leak run at the ~60 steps a leak takes to show instead would spend the cap of every correct
    model that cannot reach 150 steps; causality checks the same leaks exactly."""
    runs = {}
    if "overfit_batch" in ctx.pending and ctx.task in LOSS_TASKS:
        t = overfit_batch.thresholds
        runs["overfit_batch"] = (t.fewest_steps, (t.batch, min(ctx.seq_len, t.max_len)))
    needs = label_leakage.needs
    if "label_leakage" in ctx.pending and ctx.task in needs.tasks and ctx.seq_len >= needs.min_len:
        t = label_leakage.thresholds
        # a seq2seq step also feeds a target, as a keyword the clock does not count
        runs["label_leakage"] = (t.max_steps, (t.batch, t.seq_len))
    return {} if runs and ctx.forward_error else runs  # the probe forward, timed by the clock


def plan_training(ctx: Tier1Context) -> dict[str, tuple[str, str, dict]]:
    """Before any check runs: the training checks whose shortest conclusive run cannot fit in
    their time cap, each with (summary, advice, metrics) for its skip. A step is priced at
    least at three forwards as long as the clock has measured for a batch no larger, plus
    AdamW's measured cost per parameter, so a model too slow here to conclude skips at once
    instead of spending its cap to find out. Nothing is planned without trainable weights
    (overfit_batch fails for that) or when AdamW cannot be timed."""
    trainable = sum(p.numel() for p in ctx.model.parameters() if p.requires_grad)
    runs = _shortest_runs(ctx) if trainable else {}
    if not runs or not ctx.clock.calls:
        return {}
    try:
        per_parameter = adamw_seconds_per_parameter(str(ctx.device))
    except Exception:  # noqa: BLE001 - out of memory or an unusual device: the runs' caps still hold
        return {}
    cap = ctx.time_budget * TRAIN_TIME_SHARE
    out_of_reach = {}
    for check_id, (steps, (B, T)) in runs.items():
        step_s = step_seconds(ctx.clock.bound(B * T), trainable, per_parameter)
        batch = f"{B} x {T} tokens and {trainable:,} parameters"
        skip = run_out_of_reach(steps, step_s, cap, ctx.time_budget, batch)
        if skip:
            out_of_reach[check_id] = skip
    return out_of_reach
