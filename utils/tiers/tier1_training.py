"""Tier 1 checks that train a copy of the model for a few steps: it can memorise one batch,
and it cannot beat chance on random tokens (which only a model that sees its targets can).

Both train a deep copy, so the user's weights never move."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch._dynamo  # noqa: F401 - the first AdamW imports it (seconds); here it is not the tier's time
from torch import nn

from utils.adapters.losses import lm_loss
from utils.tiers.report import CheckResult
from utils.tiers.tier1_behaviour import causal_advice, locate_future_leak
from utils.tiers.tier1_context import LOSS_TASKS, Needs, Tier1Context, eval_mode, tier1_check

# Learning rates of the short runs, AdamW: models up to ~20M parameters take 1e-2 for the
# leak run (a leak is learnt in tens of steps) but only 3e-3 for memorising a batch, where
# 1e-2 makes a pre-LN GPT with tied embeddings oscillate just short of the 90% drop for some
# initialisations; larger models need 1e-3 to stay stable.
SMALL_MODEL_PARAMS = 20_000_000
LR_SMALL, LR_LARGE = 1e-2, 1e-3
OVERFIT_LR_SMALL = 3e-3
# overfit_batch: 4 sequences of up to 16 tokens; pass when the loss falls by more than 90%
# within 200 steps. Correct models (GPT-2, Llama, BERT, nanoGPT, the designer's exports) get
# there in 5-75 steps; a model that ignores its input tokens plateaus at ln(4) (~70% drop).
OVERFIT_BATCH = 4
OVERFIT_MAX_T = 16
OVERFIT_MAX_STEPS = 200
OVERFIT_DROP = 0.9
OVERFIT_PLATEAU = 50  # stop early when the best loss has not improved by 1% for this many steps
# label_leakage: fresh random tokens every step, drawn from 8 tokens so the chance level is
# ln(8) = 2.08, in pairs (T = 2) so that a position that sees the next token gives it half
# its attention and a leak is learnt fast: a model that sees it, even through one attention
# layer of several or an off-by-one mask, copies it within ~60 steps and its loss heads to 0
# (at T = 8 the leaked token is diluted among 8 and such leaks go unlearnt in 300 steps). A
# causal model stays at chance: its lowest 5-step mean is ln(8) - 0.04 at worst. Fail when
# the mean loss over 5 steps goes below half of ln(8).
LEAK_VOCAB = 8
LEAK_T = 2
LEAK_BATCH = 32
LEAK_MAX_STEPS = 150
LEAK_FRACTION = 0.5
LEAK_WINDOW = 5
# The model's own loss matches one of ours when they agree to this relative tolerance (the
# same cross-entropy, summed in another order, differs by ~1e-7).
OWN_LOSS_RTOL = 1e-4
# Each of the two runs may use this share of the tier's time budget.
TRAIN_TIME_SHARE = 0.3


def _learning_rate(model: nn.Module, small: float = LR_SMALL) -> float:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return small if n < SMALL_MODEL_PARAMS else LR_LARGE


def _train(model: nn.Module, step_loss: Callable[[int], torch.Tensor], max_steps: int,
           seconds: float, stop: Callable[[list[float]], bool], lr: float
           ) -> tuple[list[float], str]:
    """Run AdamW steps until `stop(history)`, the step budget, the time cap or a non-finite
    loss. Returns the loss history and why it ended: stop | steps | time | nonfinite | nograd."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return [], "nograd"
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
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


# -- overfit_batch ---------------------------------------------------------------------------


@tier1_check("overfit_batch", "The model can memorise one small batch", Needs(tasks=LOSS_TASKS))
def overfit_batch(ctx: Tier1Context) -> CheckResult:
    title = "The model can memorise one small batch"
    trainee = copy.deepcopy(ctx.adapted).eval()  # eval: dropout would only add noise here
    ids = ctx.ids(OVERFIT_BATCH, min(ctx.seq_len, OVERFIT_MAX_T), offset=51)
    labels = ctx.labels_for(ids, 51)

    def stop(h: list[float]) -> bool:
        if h[-1] < (1 - OVERFIT_DROP) * h[0]:
            return True
        recent, before = h[-OVERFIT_PLATEAU:], h[:-OVERFIT_PLATEAU]
        return bool(before) and min(recent) > 0.99 * min(before)  # plateau

    cap = _time_cap(ctx)
    lr = _learning_rate(trainee, OVERFIT_LR_SMALL)
    history, why = _train(trainee, lambda s: ctx.loss(trainee(ids), labels), OVERFIT_MAX_STEPS,
                          cap, stop, lr)
    drop = 1 - min(history) / history[0] if history and history[0] > 0 else 0.0
    metrics = {"steps": len(history), "start_loss": history[0] if history else None,
               "best_loss": min(history) if history else None, "drop": drop, "lr": lr,
               "batch": list(ids.shape), "ended_by": why, "time_cap_s": cap,
               "curve": _curve(history)}
    if why == "nograd":
        return CheckResult("overfit_batch", title, "fail",
                           "Nothing to train: no parameter requires grad or the loss has no "
                           "gradient.", metrics, "See gradient_flow.")
    if why == "nonfinite":
        return CheckResult("overfit_batch", title, "fail",
                           f"The loss became {history[-1]} after {len(history)} steps at lr "
                           f"{lr}.", metrics,
                           "Training diverges on a single batch: look for missing "
                           "normalisation, an unscaled attention score, or a huge init.")
    if drop > OVERFIT_DROP:
        return CheckResult("overfit_batch", title, "pass",
                           f"Loss fell {drop:.0%} ({history[0]:.3f} -> {min(history):.3f}) in "
                           f"{len(history)} steps.", metrics)
    if why == "time":
        return CheckResult("overfit_batch", title, "skip",
                           f"Stopped by the time cap after {len(history)} steps "
                           f"({cap:.1f} s); the loss had fallen {drop:.0%}. Too slow "
                           "here to conclude.", metrics,
                           "Run on a GPU (device='cuda') or raise time_budget.")
    return CheckResult(
        "overfit_batch", title, "fail",
        f"Could not memorise {OVERFIT_BATCH} sequences: the loss fell only {drop:.0%} "
        f"({history[0]:.3f} -> {min(history):.3f}) in {len(history)} steps.", metrics,
        "A working model memorises a tiny batch quickly. Check that the output depends on the "
        "input tokens (token embedding used and added), that nothing detaches the hidden state "
        "or freezes most weights, and that the head sees the final hidden state.")


# -- label_leakage ----------------------------------------------------------------------------


def _loss_in(out: Any) -> torch.Tensor | None:
    """The scalar loss in a forward's output: `.loss`, `['loss']`, or a 0-d tensor in a tuple."""
    if isinstance(out, Mapping) and isinstance(out.get("loss"), torch.Tensor):
        return out["loss"]
    if isinstance(getattr(out, "loss", None), torch.Tensor):
        return out.loss
    if isinstance(out, (tuple, list)):
        return next((t for t in out if isinstance(t, torch.Tensor) and t.dim() == 0), None)
    return None


def own_loss(ctx: Tier1Context) -> Callable[[nn.Module, torch.Tensor], torch.Tensor | None] | None:
    """How to get the model's own training loss, for models whose forward takes labels.

    `labels` follows the Hugging Face convention (labels = input_ids, the model shifts);
    `targets`/`target`/`y` the nanoGPT one (the caller passes the next tokens)."""
    p = ctx.profile
    sig = p.signature
    if sig.label_param is None or p.uses_graph_executor:
        return None
    hf = sig.label_param in ("labels", "label")
    static = {"use_cache": False} if "use_cache" in sig.params else {}
    positional = bool(sig.params) and sig.params[0] == p.input_name

    def call(model: nn.Module, ids: torch.Tensor) -> torch.Tensor | None:
        x, y = (ids, ids) if hf else (ids[:, :-1].contiguous(), ids[:, 1:].contiguous())
        if not p.batch_first:
            x, y = x.t(), y.t()
        kwargs = {sig.label_param: y, **static}
        out = model(x, **kwargs) if positional else model(**{p.input_name: x}, **kwargs)
        return _loss_in(out)

    return call


def _own_convention(ctx: Tier1Context, call, ids: torch.Tensor) -> str:
    """Whether the model's own loss is the shifted next-token loss ('shifted'), the loss
    against the same position ('unshifted'), or something else ('other')."""
    hf = ctx.profile.signature.label_param in ("labels", "label")
    x = ids if hf else ids[:, :-1].contiguous()
    with torch.no_grad(), eval_mode(ctx.adapted):
        own = call(ctx.model, ids)
        logits = ctx.adapted(x)
        kind = ctx.profile.output_kind
        if hf:
            shifted = lm_loss(logits, x, "causal_lm", kind)[0]
        else:
            shifted = lm_loss(logits, ids[:, 1:].contiguous(), "masked_lm", kind)[0]
        same = lm_loss(logits, x, "masked_lm", kind)[0]

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return abs(float(a) - float(b)) <= OWN_LOSS_RTOL * max(1.0, abs(float(b)))

    if close(own, shifted):
        return "shifted"
    return "unshifted" if hf and close(own, same) else "other"


@tier1_check("label_leakage", "Training on random tokens cannot beat chance",
             Needs(tasks=("causal_lm",), min_len=2))
def label_leakage(ctx: Tier1Context) -> CheckResult:
    title = "Training on random tokens cannot beat chance"
    K = min(LEAK_VOCAB, ctx.id_high)
    g = ctx.generator(53)
    pool = torch.randperm(ctx.id_high, generator=g)[:K].to(ctx.device)
    batches = [pool[torch.randint(0, K, (LEAK_BATCH, LEAK_T), generator=g)].to(ctx.device)
               for _ in range(LEAK_MAX_STEPS)]
    call = own_loss(ctx)
    convention = None
    if call is not None:
        with torch.no_grad(), eval_mode(ctx.adapted):
            has_loss = call(ctx.model, batches[0]) is not None
        convention = _own_convention(ctx, call, batches[0]) if has_loss else None
        call = call if has_loss else None
    trainee = copy.deepcopy(ctx.adapted).eval()

    def step_loss(s: int) -> torch.Tensor:
        if call is not None:
            return call(trainee.model, batches[s])
        return ctx.loss(trainee(batches[s]), batches[s])

    chance = math.log(K)
    floor = LEAK_FRACTION * chance

    def leaked(h: list[float]) -> bool:
        return len(h) >= LEAK_WINDOW and sum(h[-LEAK_WINDOW:]) / LEAK_WINDOW < floor

    cap = _time_cap(ctx)
    history, why = _train(trainee, step_loss, LEAK_MAX_STEPS, cap, leaked, _learning_rate(trainee))
    window = [sum(history[i:i + LEAK_WINDOW]) / LEAK_WINDOW
              for i in range(max(0, len(history) - LEAK_WINDOW + 1))]
    metrics = {"loss_used": "model's own (labels)" if call else "shifted next-token loss",
               "own_loss_convention": convention, "tokens_in_use": K, "chance_loss": chance,
               "fail_below": floor, "steps": len(history),
               "lowest_window_mean": min(window) if window else None, "ended_by": why,
               "time_cap_s": cap,
               "curve": _curve(history)}
    if why == "stop":
        if convention == "unshifted":
            return CheckResult(
                "label_leakage", title, "fail",
                f"The model's own loss compares the logits at t with the label at t (no shift): "
                f"on random tokens it fell to {window[-1]:.3f}, far below chance "
                f"ln({K}) = {chance:.3f}.", metrics,
                f"With Hugging Face's convention (labels = input_ids) forward must shift: "
                "`loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), "
                f"{ctx.profile.signature.label_param}[:, 1:].reshape(-1))`.")
        where = locate_future_leak(ctx, ctx.ids(offset=55), 0)
        metrics["first_leaking_module"] = where
        return CheckResult(
            "label_leakage", title, "fail",
            f"On random tokens the loss fell to {window[-1]:.3f}, far below chance ln({K}) = "
            f"{chance:.3f}: the model reads the token it must predict"
            + (f" (through `{where}`)." if where else "."), metrics, causal_advice(ctx, where))
    if why in ("nograd", "nonfinite"):
        trouble = "no gradient" if why == "nograd" else "the loss became NaN/Inf"
        return CheckResult("label_leakage", title, "skip",
                           f"Could not train ({trouble}).", metrics,
                           "Fix what gradient_flow and overfit_batch report, then run again.")
    if why == "time":
        return CheckResult("label_leakage", title, "skip",
                           f"Stopped by the time cap ({cap:.1f} s) after {len(history)} of "
                           f"{LEAK_MAX_STEPS} steps with no leak so far; too slow here to "
                           "conclude.", metrics,
                           "Run on a GPU (device='cuda') or raise time_budget; causality checks "
                           "the model's logits for the same leak exactly.")
    lowest = min(window) if window else float("nan")
    return CheckResult("label_leakage", title, "pass",
                       f"After {len(history)} steps on random tokens the loss stays near chance "
                       f"(lowest 5-step mean {lowest:.3f}, chance ln({K}) = {chance:.3f}).",
                       metrics)
