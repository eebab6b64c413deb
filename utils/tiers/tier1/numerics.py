"""Tier 1 checks of the numbers a model produces at initialisation: finite and in range
(also under autocast), a loss near ln(V), and a gradient for every trainable parameter."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from utils.adapters.tracing import ActivationStats, first_nonfinite
from utils.checks import CheckResult, Verdict
from utils.tiers.probes import bar_figure, max_abs, thin_out
from utils.tiers.tier1.context import LOSS_TASKS, Needs, Tier1Context, check, eval_mode

FP16_MAX = 65504.0  # largest finite float16: any activation above it overflows under fp16


@dataclass(frozen=True)
class InitialLossThresholds:
    # With logits of standard deviation s, the expected loss on random targets is about
    # ln(V) + s^2/2. A correct init keeps s below ~1 (excess < 0.5 nat); warn from s ~ 1.4
    # (excess 1 nat) and fail from s ~ 2.5 (excess 3 nats), where training starts saturated.
    warn_excess: float = 1.0
    fail_excess: float = 3.0
    # A loss this far *below* ln(V) on random targets means the targets are visible.
    low_warn: float = 0.5


@dataclass(frozen=True)
class GradientFlowThresholds:
    # Largest / smallest per-layer gradient norm above which the update sizes of layers are
    # so different that one learning rate cannot suit them all. Correct models at init stay
    # below 1e5 (BERT's attention keys, whose gradient is small while attention is near
    # uniform, give 4e4; GPT-2, Llama, nanoGPT and the designer's exports stay below 2e3).
    max_norm_ratio: float = 1e6
    # Attention query and key projections are left out of that spread: while attention is
    # near uniform (small init) their gradient is second order, and it shrinks again with
    # every near-uniform attention stacked behind it (BART's encoder keys: 1e-7 against 1 at
    # the head, an 8e6 spread in a correct model). Adam scales each update by its own
    # gradient anyway.
    spread_leaves_out: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "query",
        "key",
        "q",
        "k",
        "q_lin",
        "k_lin",
        "wq",
        "wk",
        "to_q",
        "to_k",
    )


FIGURE_MAX_BARS = 40  # figures show at most this many bars, spread evenly


def objective(ctx: Tier1Context, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The training loss for the task; for a headless encoder, the mean square output (it
    reaches every parameter, which is all gradient_flow needs)."""
    if ctx.task in LOSS_TASKS:
        return ctx.loss(out, labels)
    return out.float().pow(2).mean()


# -- numerical_stability -------------------------------------------------------------------


def _nan_advice(stats: dict[str, dict], name: str | None, prev: str | None) -> str:
    if name is None:
        return (
            f"Every module's output is finite, so the NaN/Inf appears in forward's own code "
            f"after `{prev}`: look for log/sqrt of negatives, division by zero or exp()."
        )
    s = stats[name]
    if s["finite_in"]:
        return (
            f"`{name}` ({s['type']}) is the first module whose output is NaN/Inf while its "
            "input is finite: look inside it for log/sqrt of negatives, division by zero, "
            "exp() overflow or a softmax over a row that is all -inf."
        )
    return (
        f"The input of `{name}` already holds NaN/Inf, but no module before it returned NaN "
        f"or +inf: it comes from forward's own code after `{prev}` (log/sqrt of a negative, "
        "division by zero, exp() overflow), or from a -inf (a mask value, log(0)) that "
        "arithmetic turned into NaN."
    )


def _autocast_runs(ctx: Tier1Context, ids: torch.Tensor) -> dict[str, str]:
    """Forward under autocast: bf16 on CPU; fp16 and bf16 on CUDA. 'ok', 'nonfinite' or the
    error."""
    kinds = [torch.bfloat16] if ctx.device.type != "cuda" else [torch.float16, torch.bfloat16]
    results = {}
    for dt in kinds:
        name = str(dt).replace("torch.", "")
        try:
            with torch.no_grad(), eval_mode(ctx.adapted), torch.autocast(ctx.device.type, dtype=dt):
                out = ctx.adapted(ids)
            results[name] = "ok" if bool(torch.isfinite(out.float()).all()) else "nonfinite"
        except Exception as exc:  # noqa: BLE001 - an op without low-precision support
            results[name] = f"{type(exc).__name__}: {str(exc)[:160]}"
    return results


def _activation_figure(stats: dict[str, dict]) -> bytes:
    items = thin_out(
        list(stats.items()), FIGURE_MAX_BARS, keep=lambda kv: not kv[1]["finite_out"] or kv[1]["max_abs"] > FP16_MAX
    )
    return bar_figure(
        [n for n, _ in items],
        [s["max_abs"] for _, s in items],
        "Largest |activation| per module (forward, float32)",
        "max |output|",
        marker=FP16_MAX,
        marker_label="float16 max (65504)",
        bad=[not s["finite_out"] for _, s in items],
    )


@check("numerical_stability")
def numerical_stability(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Finite outputs and gradients; activations fit float16

    What it checks: no NaN or Inf in outputs or gradients, every activation fits float16's
    range, and the forward also runs under autocast; a problem names the first module.
    Why it matters: NaN ends training at once, and activations past 65504 overflow as soon as
    the model trains in mixed precision.
    Known false alarms: a -inf used as a mask value is fine as long as no output or gradient
    becomes NaN; activations past 65504 only warn (float32 training is unaffected).
    Broken example: NaNLM (a NaN from `head`) and Fp16OverflowLM (`scale` multiplies
    activations past 65504).
    How to fix: normalise before large matmuls, scale attention scores by 1/sqrt(d), and keep
    intermediate values within float16's range.
    """
    ids = ctx.ids(offset=v.stream("tokens"))
    labels = ctx.labels_for(ids, v.stream("labels"))
    named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
    with ActivationStats(ctx.model) as rec, eval_mode(ctx.adapted), torch.enable_grad():
        out = ctx.adapted(ids)
        loss = objective(ctx, out, labels)
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True) if named and loss.requires_grad else []
    bad_grads = [n for (n, _), g in zip(named, grads) if g is not None and not bool(torch.isfinite(g).all())]
    stats = rec.stats
    out_ok = bool(torch.isfinite(out.detach().float()).all()) and math.isfinite(float(loss.detach()))
    name, prev = first_nonfinite(stats)
    over = next((n for n, s in stats.items() if s["max_abs"] > FP16_MAX), None)
    casts = _autocast_runs(ctx, ids) if out_ok else {}
    peak = max((s["max_abs"] for s in stats.values() if s["finite_out"]), default=0.0)
    metrics = {
        "output_finite": out_ok,
        "first_nonfinite_module": name,
        "nonfinite_gradients": bad_grads[:20],
        "max_activation": peak,
        "max_output": max_abs(out),
        "first_fp16_overflow": over,
        "autocast": casts,
        "per_module_max_abs": {n: s["max_abs"] for n, s in stats.items()},
    }
    figures = {"activation_ranges": _activation_figure(stats)} if stats else {}

    def result(status: str, summary: str, advice: str = "") -> CheckResult:
        return v.result(status, summary, metrics, advice, figures)

    if not out_ok or name:
        return result(
            "fail",
            "The forward pass produces NaN/Inf" + (f", first in `{name}`." if name else "."),
            _nan_advice(stats, name, prev),
        )
    if bad_grads:
        return result(
            "fail",
            f"Gradients are NaN/Inf for {len(bad_grads)} parameter(s), e.g. `{bad_grads[0]}`.",
            "The backward pass breaks although the forward is finite: look for sqrt/"
            "norm of zero, pow with a fractional exponent of zero, or a clamp/where "
            "that hides an Inf in the unused branch.",
        )
    if casts.get("bfloat16", "ok") == "nonfinite":
        return result(
            "fail",
            "Under bfloat16 autocast the output has NaN/Inf.",
            "An operation loses too much precision in bf16: keep softmax/normalisation "
            "in float32 (x.float()) and avoid subtracting large nearly-equal values.",
        )
    if over:
        return result(
            "warn",
            f"Activations reach {peak:.3g}, beyond float16's 65504, first in "
            f"`{over}`: fp16 mixed precision would overflow.",
            f"Train in bf16 or float32, or scale `{over}` down (normalise its input, "
            "scale attention scores by 1/sqrt(head_dim), smaller init).",
        )
    odd = {k: v for k, v in casts.items() if v != "ok"}
    if odd:
        return result(
            "warn",
            f"Autocast trouble: {odd}.",
            "Under low precision some operation overflows or is unsupported; keep "
            "that part in float32 or train in float32.",
        )
    return result(
        "pass",
        f"Outputs and gradients are finite; largest activation {peak:.3g} "
        f"fits float16; autocast {', '.join(casts) or '-'} gives finite outputs.",
    )


# -- initial_loss ---------------------------------------------------------------------------


@check("initial_loss", thresholds=InitialLossThresholds(), needs=Needs(tasks=LOSS_TASKS))
def initial_loss(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Loss at initialisation is close to ln(V)

    What it checks: the loss at initialisation on random targets is close to ln(V) (ln(C) for
    a classifier), the loss of a uniform prediction.
    Why it matters: a loss far above ln(V) means saturated logits from a bad init; far below
    means the targets are visible to the model.
    Known false alarms: models whose init deliberately sharpens the output (a large output
    scale) warn.
    Broken example: HugeInitLM, whose output layer starts with weights of std 5.
    How to fix: initialise the output layer with a small std (0.02) or zeros, and keep logits
    of standard deviation about 1 at init.
    """
    ids = ctx.ids(B=max(ctx.batch_size, 8), offset=v.stream("tokens"))
    labels = ctx.labels_for(ids, v.stream("labels"))
    with torch.no_grad(), eval_mode(ctx.adapted):
        out = ctx.adapted(ids)
        loss = float(ctx.loss(out, labels))
    expected = ctx.expected_initial_loss()
    excess = loss - expected
    spread = float(out.float().std(dim=-1).mean()) if ctx.profile.output_kind == "logits" else None
    metrics = {"loss": loss, "expected": expected, "excess": excess, "logit_std": spread}
    what = "ln(num_classes)" if ctx.task == "classification" else "ln(V)"
    if not math.isfinite(loss):
        return v.fail(
            f"The loss at init is {loss} (not finite).",
            metrics,
            "See numerical_stability: the forward pass makes NaN/Inf.",
        )
    summary = f"Loss {loss:.3f} vs {what} = {expected:.3f} (excess {excess:+.3f})."
    high = (
        "The logits at init are too large"
        + (f" (std {spread:.3g})" if spread else "")
        + ": initialise the output layer with a small std (e.g. 0.02), tie it to the token "
        "embedding, or scale the final hidden state (a final LayerNorm before the head)."
    )
    if excess > v.thresholds.fail_excess:
        return v.fail(summary + " Far too high.", metrics, high)
    if excess > v.thresholds.warn_excess:
        return v.warn(summary + " Higher than a uniform prediction.", metrics, high)
    if excess < -v.thresholds.low_warn:
        return v.warn(
            summary + " Below chance on random targets: the model sees them.",
            metrics,
            "See causality and label_leakage.",
        )
    return v.pass_(summary, metrics)


# -- gradient_flow ---------------------------------------------------------------------------


def _layer(param_name: str) -> str:
    """The module a parameter belongs to (the name itself for a parameter of the root)."""
    return param_name.rpartition(".")[0] or param_name


def layer_norms(grads: list[tuple[str, torch.Tensor]]) -> dict[str, float]:
    """Gradient norm per layer (module), in parameter order. Per layer rather than per tensor:
    some tensors get a near-zero gradient by design (an attention key bias shifts all scores
    of a query equally, which softmax ignores) without their layer being starved."""
    squares: dict[str, float] = {}
    for n, g in grads:
        squares[_layer(n)] = squares.get(_layer(n), 0.0) + float(g.double().pow(2).sum())
    return {k: math.sqrt(v) if math.isfinite(v) else math.inf for k, v in squares.items()}


def _gradient_figure(norms: dict[str, float], bad: set[str]) -> bytes:
    items = thin_out(list(norms.items()), FIGURE_MAX_BARS, keep=lambda kv: kv[0] in bad)
    return bar_figure(
        [n for n, _ in items],
        [v for _, v in items],
        "Gradient norm per layer (one backward pass at init)",
        "||grad||",
        bad=[n in bad for n, _ in items],
    )


@check("gradient_flow", thresholds=GradientFlowThresholds())
def gradient_flow(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Every trainable parameter gets a finite, non-zero gradient

    What it checks: one backward pass gives every trainable parameter a finite, non-zero
    gradient, and per-layer gradient norms stay within a factor that one learning rate can
    serve; unused parameters are named.
    Why it matters: a parameter without gradient never trains; norms spanning many orders of
    magnitude leave some layers frozen and others unstable.
    Known false alarms: a gate initialised to exactly zero (ReZero-style) warns rather than
    fails; attention query/key projections, whose gradient is second order while attention
    is near uniform, are left out of the spread between layers.
    Broken example: UnusedLayerLM (a `decoder` layer never called) and VanishingBranchLM.
    How to fix: call every module in forward or delete it, and avoid multiplying branches by
    near-zero factors at init.
    """
    named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in ctx.model.named_parameters() if not p.requires_grad]
    if not named:
        return v.fail(
            "No parameter requires grad.",
            {"frozen": len(frozen)},
            "Nothing can train: set requires_grad=True on the parameters you mean to train.",
        )
    ids = ctx.ids(offset=v.stream("tokens"))
    with eval_mode(ctx.adapted), torch.enable_grad():
        loss = objective(ctx, ctx.adapted(ids), ctx.labels_for(ids, v.stream("labels")))
    if not loss.requires_grad:
        return v.fail(
            "The output has no gradient at all.",
            {"frozen": len(frozen)},
            "forward cuts the graph: remove torch.no_grad(), .detach(), .item() "
            "or .numpy() from the path between the input and the logits.",
        )
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    unused = [n for (n, _), g in zip(named, grads) if g is None]
    broken = [n for (n, _), g in zip(named, grads) if g is not None and not bool(torch.isfinite(g).all())]
    norms = layer_norms([(n, g) for (n, _), g in zip(named, grads) if g is not None])
    zero = [n for n, v in norms.items() if v == 0]
    query_key = [n for n in norms if n.rpartition(".")[2].lower() in v.thresholds.spread_leaves_out]
    live = [x for n, x in norms.items() if 0 < x < math.inf and n not in query_key]
    ratio = max(live) / min(live) if live else math.nan
    metrics = {
        "trainable": len(named),
        "frozen": len(frozen),
        "unused": unused,
        "nonfinite": broken,
        "zero_layers": zero,
        "max_over_min_layer_norm": ratio,
        "spread_leaves_out": query_key,
        "layer_grad_norms": norms,
    }
    layers = {k: norms.get(k, 0.0) for k in dict.fromkeys(_layer(n) for n, _ in named)}
    figures = {"gradient_norms": _gradient_figure(layers, set(zero) | {_layer(n) for n in broken + unused})}

    def result(status: str, summary: str, advice: str = "") -> CheckResult:
        return v.result(status, summary, metrics, advice, figures)

    if unused:
        modules = sorted({n.rpartition(".")[0] or n for n in unused})
        return result(
            "fail",
            f"{len(unused)} parameter(s) get no gradient: forward never uses "
            f"them ({', '.join(unused[:5])}{'...' if len(unused) > 5 else ''}).",
            f"Module(s) {', '.join('`' + m + '`' for m in modules[:5])} are built in "
            "__init__ but never called in forward: call them or delete them. Unused "
            "parameters waste memory and make DDP fail unless "
            "find_unused_parameters=True.",
        )
    if broken:
        return result("fail", f"Non-finite gradients in {', '.join(broken[:5])}.", "See numerical_stability.")
    if zero:
        return result(
            "warn",
            f"{len(zero)} layer(s) get an exactly zero gradient: {', '.join(zero[:5])}.",
            "Fine for a deliberately zero-initialised gate; otherwise something "
            "multiplies their contribution by zero (a zero weight downstream, a "
            "saturated activation, a mask that blocks everything).",
        )
    if ratio > v.thresholds.max_norm_ratio:
        return result(
            "warn",
            f"Gradient norms span a factor {ratio:.3g} between layers.",
            "Layers will learn at very different speeds: check the init scale of the "
            "layers with the smallest gradients, and residual/normalisation paths.",
        )
    return result(
        "pass",
        f"All {len(named)} trainable tensors get finite gradients; "
        f"{len(norms)} layers, largest/smallest layer norm {ratio:.3g}.",
    )
