"""Tier 2 analyses of how predictions depend on the input tokens: which tokens they rest on
(attribution), how fast they degrade under disturbance (perturbation_sensitivity), and the
single swaps that move them most (adversarial_tokens)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from utils.analysis.adversarial import hotflip
from utils.analysis.attribution import COMPLETENESS_TOLERANCE, IG_STEPS, integrated_gradients
from utils.analysis.perturbation import perturbation_curves
from utils.checks import CheckResult, Verdict
from utils.tiers.tier2_context import TIER2_CHECKS, Needs, Tier2Context
from utils.tiers.tier2_figures import attribution_figure, curves_figure

_IGNORED = "The prediction does not change at all when the input changes: the model ignores its tokens."
_IGNORED_ADVICE = (
    "Check that the token embedding's output reaches the blocks (not multiplied by zero, "
    "detached, or replaced by positions only), then run again."
)


@dataclass(frozen=True)
class InsensitiveThresholds:
    # Below this KL (nats) two predictions are the same distribution up to float32 rounding:
    # a random-init model already moves by 1e-3 or more when most of its tokens are replaced.
    insensitive_kl: float = 1e-9


@dataclass(frozen=True)
class AttributionThresholds(InsensitiveThresholds):
    # IG's completeness error must be under this before attributions are reported as
    # trustworthy: the issue's bar, and Sundararajan et al.'s adequate 1-5%.
    completeness: float = COMPLETENESS_TOLERANCE
    top_tokens: int = 8  # tokens listed in `top_tokens`, largest |attribution| first


@TIER2_CHECKS.check("attribution", thresholds=AttributionThresholds(), needs=Needs(embedding=True, min_seconds=2.0))
def attribution(ctx: Tier2Context, v: Verdict) -> CheckResult:
    """Which input tokens each prediction rests on (Integrated Gradients)

    What it checks: Integrated Gradients of each row's predicted token (the next token for a
    causal LM) over the token-embedding output, found automatically, from a pad-token or zero
    baseline, with the number of steps raised until the attributions add up to the change of
    the prediction within 5% (completeness); gradient x input is computed alongside and their
    token rankings compared.
    Why it matters: it shows what a prediction is based on, and a model whose attributions are
    all exactly zero ignores its tokens.
    Known false alarms: none for the warning; in an untrained model attributions describe
    random wiring, and the summary says so.
    Broken example: a model that multiplies its token embedding by zero (tests/analysis/zoo.py
    IgnoresTokensLM).
    How to fix: make the token embedding's output reach the blocks.
    """
    t = v.thresholds
    res = integrated_gradients(
        ctx.adapted,
        ctx.input_ids,
        ctx.attention_mask,
        baseline_id=ctx.pad_id,
        steps=_steps_that_fit(ctx),
        tolerance=t.completeness,
    )
    top = _top_tokens(ctx, res.token_scores, t.top_tokens)
    targets = [ctx.token(int(i)) for i in res.targets]
    metrics = {
        "completeness_error": res.completeness_error,
        "steps": res.steps,
        "history": res.history,
        "baseline": res.baseline,
        "embedding": res.embedding,
        "gxi_rank_agreement": res.rank_agreement,
        "top_tokens": top,
        "targets": targets,
        "delta": [float(d) for d in res.delta],
        "scores": [[round(float(x), 6) for x in row] for row in res.token_scores],
    }
    labels = [[ctx.label(r, i) for i in range(ctx.input_ids.shape[1])] for r in range(ctx.input_ids.shape[0])]
    title = (
        f"Integrated Gradients over '{res.embedding}' ({res.steps} steps, completeness error "
        f"{res.completeness_error:.1%}, {ctx.state()} model)"
    )
    figures = {"tokens": attribution_figure(res.token_scores.tolist(), labels, targets, title)}
    if float(res.token_scores.abs().max()) == 0 and float(res.delta.abs().max()) < t.insensitive_kl:
        return v.warn(f"{_IGNORED} Every attribution is exactly 0.", metrics, _IGNORED_ADVICE, figures)
    if not res.converged:
        return v.skip(
            f"IG did not converge: after {res.steps} steps its attributions still miss completeness "
            f"by {res.completeness_error:.1%} (tolerance {t.completeness:.0%}), so they are not "
            "reported as trustworthy.",
            metrics,
            "A limit of the measurement, not a fault of the model: give a larger time_budget for more "
            "steps, or a shorter seq_len.",
            figures,
        )
    lead = top[0]
    meaning = ctx.reading(
        "In a trained model the largest attributions name the tokens the prediction uses (usually "
        "nearby and content tokens).",
        "The model looks untrained, so these attributions describe its random initial wiring, "
        "not anything learned; rerun after training.",
    )
    return v.pass_(
        f"IG over '{res.embedding}' ({res.baseline} baseline) converged in {res.steps} steps "
        f"(completeness error {res.completeness_error:.2%}); gradient x input ranks the tokens with "
        f"Spearman {res.rank_agreement:.2f}. Strongest: {lead['token']!r} at position {lead['position']} "
        f"({lead['score']:+.3g}). {meaning}",
        metrics,
        figures=figures,
    )


@dataclass(frozen=True)
class PerturbationThresholds(InsensitiveThresholds):
    # A trained model whose top-1 prediction flips under noise of 1% of the embedding's size
    # (about float16's rounding of an embedding) in more than 20% of positions gives
    # predictions that will not survive half precision or any fine-tuning drift.
    noise_probe: float = 0.01
    noise_flip_warn: float = 0.2


@TIER2_CHECKS.check("perturbation_sensitivity", thresholds=PerturbationThresholds(), needs=Needs(vocab=True))
def perturbation_sensitivity(ctx: Tier2Context, v: Verdict) -> CheckResult:
    """How far predictions move when the input is disturbed

    What it checks: the mean next-token KL(clean || perturbed) over every position and the top-1
    flip rate when 5-80% of the tokens are replaced at random, and when Gaussian noise of 1-100%
    of each token vector's norm is added to the token-embedding output; rate 0 gives exactly 0.
    Why it matters: a model whose predictions never move ignores its input; a trained model whose
    predictions flip under 1% noise is numerically fragile.
    Known false alarms: none in untrained models (their near-uniform predictions flip easily and
    are never judged); the fragility rule applies to trained models only.
    Broken example: a model that multiplies its token embedding by zero (IgnoresTokensLM).
    How to fix: connect the token embedding; for fragility, train longer or check the output
    layer's scale.
    """
    t = v.thresholds
    curves = perturbation_curves(
        ctx.adapted,
        ctx.input_ids,
        ctx.attention_mask,
        generator=ctx.generator(v.stream("draws")),
        id_high=ctx.id_high,
    )
    metrics = {
        "curves": {"token_replacement": curves.token, "embedding_noise": curves.noise},
        "positions": curves.positions,
        "embedding": curves.embedding,
    }
    figures = {"curves": curves_figure(curves.token, curves.noise)}
    moved = [p["kl"] for r, p in list(curves.token.items()) + list(curves.noise.items()) if r > 0]
    if moved and max(moved) < t.insensitive_kl:
        return v.warn(_IGNORED, metrics, _IGNORED_ADVICE, figures)
    noisy = curves.noise.get(t.noise_probe)
    if ctx.trained and noisy is not None and noisy["flip_rate"] > t.noise_flip_warn:
        return v.warn(
            f"Fragile: noise of {t.noise_probe:.0%} of the embedding's size flips {noisy['flip_rate']:.0%} "
            f"of this trained model's top-1 predictions (more than {t.noise_flip_warn:.0%}).",
            metrics,
            "Its predictions are near ties everywhere: train longer, or check that the output layer's "
            "scale (a temperature, tied-embedding scaling) is not squashing the logits.",
            figures,
        )
    top = max(curves.token)
    point = curves.token[top]
    meaning = ctx.reading(
        "A trained model should change its mind gradually: KL growing with the rate, few flips at 5%.",
        "The model looks untrained: its predictions are near-uniform, so KLs are tiny and top-1 "
        "flips common (near ties), both normal at initialisation.",
    )
    return v.pass_(
        f"Replacing {top:.0%} of the tokens moves the predictions by KL {point['kl']:.3g} nats and flips "
        f"{point['flip_rate']:.0%} of them; 5% replaced: KL {_at(curves.token, 0.05):.3g}; rate 0 gives "
        f"exactly {curves.token.get(0.0, {}).get('kl', math.nan):g}. {meaning}",
        metrics,
        figures=figures,
    )


@dataclass(frozen=True)
class AdversarialThresholds(InsensitiveThresholds):
    # A trained LM's prediction depends mostly on nearby tokens: changing one random token of
    # its context flips it far less often than not. More than half the time means the
    # prediction hinges on whichever token is touched.
    random_flip_warn: float = 0.5


@TIER2_CHECKS.check("adversarial_tokens", thresholds=AdversarialThresholds(), needs=Needs(embedding=True, vocab=True))
def adversarial_tokens(ctx: Tier2Context, v: Verdict) -> CheckResult:
    """The single-token swaps that most change a prediction (HotFlip)

    What it checks: HotFlip ranks every (position, token) swap by the first-order change of the
    predicted token's log-probability from one backward pass; the best 8 per row are verified
    by a forward (KL of the prediction), and compared with 8 random swaps per row.
    Why it matters: it shows which single tokens a prediction hinges on; a trained model that a
    random single swap flips most of the time is brittle, and one no swap moves ignores its input.
    Known false alarms: none in untrained models (never judged brittle); a swap of the very last
    token legitimately changes a next-token prediction.
    Broken example: a model that multiplies its token embedding by zero (IgnoresTokensLM).
    How to fix: connect the token embedding; for brittleness, train on more (or noisier) data.
    """
    t = v.thresholds
    res = hotflip(
        ctx.adapted,
        ctx.input_ids,
        ctx.attention_mask,
        generator=ctx.generator(v.stream("draws")),
        id_high=ctx.id_high,
    )
    swaps = [
        {
            "row": s.row,
            "position": s.position,
            "old": ctx.token(s.old),
            "new": ctx.token(s.new),
            "kl": s.kl,
            "flipped": s.flipped,
        }
        for s in res.swaps
    ]
    advantage = res.hotflip_kl / res.random_kl if res.random_kl > 0 else math.inf
    metrics = {
        "swaps": swaps[:16],
        "random_kl": res.random_kl,
        "hotflip_kl": res.hotflip_kl,
        "advantage": advantage,
        "flip_rate": res.flip_rate,
        "random_flip_rate": res.random_flip_rate,
        "embedding": res.embedding,
    }
    if max(s.kl for s in res.swaps + res.random) < t.insensitive_kl:
        return v.warn(_IGNORED, metrics, _IGNORED_ADVICE)
    if ctx.trained and res.random_flip_rate > t.random_flip_warn:
        return v.warn(
            f"Brittle: one random token swap flips this trained model's prediction "
            f"{res.random_flip_rate:.0%} of the time (more than {t.random_flip_warn:.0%}).",
            metrics,
            "Train on more (or noisier) data; the model has not learned which tokens matter.",
        )
    best = res.swaps[0]
    meaning = ctx.reading(
        "In a trained model the best swaps show which single tokens the prediction hinges on.",
        "The model looks untrained: any swap moves its near-uniform prediction only a little.",
    )
    return v.pass_(
        f"The best verified swap ({ctx.token(best.old)!r} -> {ctx.token(best.new)!r} at position "
        f"{best.position}) moves the prediction by KL {best.kl:.3g} nats; HotFlip swaps average "
        f"{res.hotflip_kl:.3g} against {res.random_kl:.3g} for random ones ({advantage:.1f}x) and flip "
        f"{res.flip_rate:.0%} of predictions (random: {res.random_flip_rate:.0%}). {meaning}",
        metrics,
    )


def _steps_that_fit(ctx: Tier2Context) -> tuple[int, ...]:
    """IG step counts to try: all of IG_STEPS when there is time, fewer as the budget runs low
    (a larger count left out shows as a non-converged result, never a silent one)."""
    seconds = ctx.remaining()
    return tuple(s for s in IG_STEPS if s <= IG_STEPS[0] or seconds > s / 4)


def _top_tokens(ctx: Tier2Context, scores, k: int) -> list[dict]:
    flat = [
        (abs(float(x)), r, i, float(x))
        for r, row in enumerate(scores)
        for i, x in enumerate(row)
        if ctx.attention_mask is None or bool(ctx.attention_mask[r, i])
    ]
    flat.sort(reverse=True)
    return [{"row": r, "position": i, "token": ctx.label(r, i), "score": x} for _, r, i, x in flat[:k]]


def _at(curve: dict[float, dict[str, float]], rate: float) -> float:
    return curve[rate]["kl"] if rate in curve else math.nan
