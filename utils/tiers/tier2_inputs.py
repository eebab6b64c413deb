"""Tier 2 analyses of how predictions depend on the input tokens: which tokens they rest on
(attribution), how fast they degrade under disturbance (perturbation_sensitivity), and the
single swaps that move them most (adversarial_tokens)."""

from __future__ import annotations

import math

from utils.analysis.adversarial import hotflip
from utils.analysis.attribution import COMPLETENESS_TOLERANCE, IG_STEPS, integrated_gradients
from utils.analysis.perturbation import perturbation_curves
from utils.tiers.report import CheckResult
from utils.tiers.tier2_context import INSENSITIVE_KL, Needs, Tier2Context, ignores_input, tier2_check
from utils.tiers.tier2_figures import attribution_figure, curves_figure

TOP_TOKENS = 8  # tokens listed in `top_tokens`, largest |attribution| first
# A trained model whose top-1 prediction flips under 1% embedding noise (below float16's
# rounding of a typical embedding, ~0.1-0.5%) in more than this share of positions will not
# give stable predictions in half precision or after any fine-tuning drift.
NOISE_FLIP_WARN = 0.2
NOISE_PROBE = 0.01
# A trained LM's prediction depends mostly on nearby tokens: changing one random token of a
# 32-token context flips it far less often than not. More than half the time means the
# prediction hinges on whichever token is touched.
RANDOM_SWAP_FLIP_WARN = 0.5

_IGNORED = "The prediction does not change at all when the input changes: the model ignores its tokens."
_IGNORED_ADVICE = (
    "Check that the token embedding's output reaches the blocks (a residual "
    "stream that starts from zeros, positions only, or a detached tensor), then "
    "run again."
)


@tier2_check(
    "attribution",
    "Which input tokens each prediction rests on (Integrated Gradients)",
    Needs(embedding=True, min_seconds=2.0),
)
def attribution(ctx: Tier2Context) -> CheckResult:
    steps = _steps_that_fit(ctx)
    res = integrated_gradients(ctx.adapted, ctx.input_ids, ctx.attention_mask, baseline_id=ctx.pad_id, steps=steps)
    top = _top_tokens(ctx, res.token_scores)
    targets = [ctx.token(int(t)) for t in res.targets]
    metrics = {
        "completeness_error": res.completeness_error,
        "steps": res.steps,
        "tolerance": COMPLETENESS_TOLERANCE,
        "history": res.history,
        "baseline": res.baseline,
        "embedding": res.embedding,
        "gxi_rank_agreement": res.rank_agreement,
        "top_tokens": top,
        "targets": targets,
        "delta": [float(d) for d in res.delta],
        "scores": [[round(float(v), 6) for v in row] for row in res.token_scores],
    }
    labels = [[ctx.label(r, i) for i in range(ctx.input_ids.shape[1])] for r in range(ctx.input_ids.shape[0])]
    figures = {
        "tokens": attribution_figure(
            res.token_scores.tolist(),
            labels,
            targets,
            f"Integrated Gradients over '{res.embedding}' ({res.steps} steps, "
            f"completeness error {res.completeness_error:.1%})",
        )
    }
    if float(res.token_scores.abs().max()) == 0 and float(res.delta.abs().max()) < INSENSITIVE_KL:
        return _result(
            attribution, "warn", f"{_IGNORED} Every attribution is exactly 0.", metrics, _IGNORED_ADVICE, figures
        )
    if not res.converged:
        return _result(
            attribution,
            "skip",
            (
                f"IG did not converge: after {res.steps} steps its attributions still miss "
                f"completeness by {res.completeness_error:.1%} (tolerance "
                f"{COMPLETENESS_TOLERANCE:.0%}), so they are not reported as trustworthy."
            ),
            metrics,
            "A limit of the measurement, not a fault of the model: give a larger time_budget "
            "for more steps, or a shorter seq_len.",
            figures,
        )
    lead = top[0] if top else None
    meaning = (
        "In a trained model the largest attributions name the tokens the prediction uses "
        "(usually nearby and content words)."
        if ctx.trained
        else "The model is untrained, so these attributions describe its random initial wiring, "
        "not anything learned; rerun after training."
    )
    return _result(
        attribution,
        "pass",
        (
            f"IG over '{res.embedding}' ({res.baseline} baseline) converged in {res.steps} steps "
            f"(completeness error {res.completeness_error:.2%}); gradient x input ranks the tokens "
            f"alike (Spearman {res.rank_agreement:.2f}). Strongest: {lead['token']!r} at position "
            f"{lead['position']} ({lead['score']:+.3g}). {meaning}"
        ),
        metrics,
        "",
        figures,
    )


@tier2_check("perturbation_sensitivity", "How far predictions move when the input is disturbed", Needs(vocab=True))
def perturbation_sensitivity(ctx: Tier2Context) -> CheckResult:
    curves = perturbation_curves(
        ctx.adapted, ctx.input_ids, ctx.attention_mask, generator=ctx.generator(21), id_high=ctx.id_high
    )
    metrics = {
        "curves": {"token_replacement": curves.token, "embedding_noise": curves.noise},
        "positions": curves.positions,
        "embedding": curves.embedding,
    }
    figures = {"curves": curves_figure(curves.token, curves.noise)}
    token_kls = [v["kl"] for r, v in curves.token.items() if r > 0]
    if ignores_input(token_kls + [v["kl"] for r, v in curves.noise.items() if r > 0]):
        return _result(perturbation_sensitivity, "warn", _IGNORED, metrics, _IGNORED_ADVICE, figures)
    worst_rate = max(curves.token)
    noisy = curves.noise.get(NOISE_PROBE)
    if ctx.trained and noisy is not None and noisy["flip_rate"] > NOISE_FLIP_WARN:
        return _result(
            perturbation_sensitivity,
            "warn",
            (
                f"Fragile: noise of {NOISE_PROBE:.0%} of the embedding's size flips "
                f"{noisy['flip_rate']:.0%} of this trained model's top-1 predictions (more than "
                f"{NOISE_FLIP_WARN:.0%})."
            ),
            metrics,
            "Its predictions are near ties everywhere: train longer, or check that the output "
            "layer's scale (temperature, tied-embedding scaling) is not squashing the logits.",
            figures,
        )
    point = curves.token[worst_rate]
    meaning = (
        "A trained model should change its mind gradually: KL growing with the rate, few flips at 5%."
        if ctx.trained
        else "The model is untrained: its predictions are near-uniform, so KLs are tiny and top-1 "
        "flips are common (near ties) - both normal at initialisation."
    )
    return _result(
        perturbation_sensitivity,
        "pass",
        (
            f"Replacing {worst_rate:.0%} of the tokens moves the predictions by KL "
            f"{point['kl']:.3g} nats and flips {point['flip_rate']:.0%} of them; 5% replaced: KL "
            f"{_at(curves.token, 0.05, 'kl'):.3g}. Rate 0 gives exactly {curves.token[0.0]['kl']:g}. "
            f"{meaning}"
        ),
        metrics,
        "",
        figures,
    )


@tier2_check(
    "adversarial_tokens",
    "The single-token swaps that most change a prediction (HotFlip)",
    Needs(embedding=True, vocab=True),
)
def adversarial_tokens(ctx: Tier2Context) -> CheckResult:
    res = hotflip(ctx.adapted, ctx.input_ids, ctx.attention_mask, generator=ctx.generator(31), id_high=ctx.id_high)
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
    metrics = {
        "swaps": swaps[:16],
        "random_kl": res.random_kl,
        "hotflip_kl": res.hotflip_kl,
        "flip_rate": res.flip_rate,
        "random_flip_rate": res.random_flip_rate,
        "advantage": res.hotflip_kl / res.random_kl if res.random_kl > 0 else math.inf,
        "embedding": res.embedding,
    }
    if ignores_input([s.kl for s in res.swaps + res.random]):
        return _result(adversarial_tokens, "warn", _IGNORED, metrics, _IGNORED_ADVICE)
    if ctx.trained and res.random_flip_rate > RANDOM_SWAP_FLIP_WARN:
        return _result(
            adversarial_tokens,
            "warn",
            (
                f"Brittle: one random token swap flips this trained model's prediction "
                f"{res.random_flip_rate:.0%} of the time (more than {RANDOM_SWAP_FLIP_WARN:.0%})."
            ),
            metrics,
            "Train on more (or noisier) data; the model has not learned which tokens matter.",
        )
    best = res.swaps[0]
    meaning = (
        "In a trained model the best swaps show which single tokens the prediction hinges on."
        if ctx.trained
        else "The model is untrained: any swap moves its near-uniform prediction only a little."
    )
    return _result(
        adversarial_tokens,
        "pass",
        (
            f"The best HotFlip swap ({ctx.token(best.old)!r} -> {ctx.token(best.new)!r} at "
            f"position {best.position}) moves the prediction by KL {best.kl:.3g} nats; verified "
            f"HotFlip swaps average {res.hotflip_kl:.3g} against {res.random_kl:.3g} for random "
            f"swaps ({metrics['advantage']:.1f}x) and flip {res.flip_rate:.0%} of predictions "
            f"(random: {res.random_flip_rate:.0%}). {meaning}"
        ),
        metrics,
    )


def _steps_that_fit(ctx: Tier2Context) -> tuple[int, ...]:
    """IG step counts tried: all of IG_STEPS when there is time, fewer as the budget runs
    low (a skipped larger count shows up as a non-converged result, never a silent one)."""
    seconds = ctx.remaining()
    return tuple(s for s in IG_STEPS if s <= 16 or seconds > s / 4) or IG_STEPS[:1]


def _top_tokens(ctx: Tier2Context, scores) -> list[dict]:
    flat = [
        (abs(float(v)), r, i, float(v))
        for r, row in enumerate(scores)
        for i, v in enumerate(row)
        if ctx.attention_mask is None or bool(ctx.attention_mask[r, i])
    ]
    flat.sort(reverse=True)
    return [{"row": r, "position": i, "token": ctx.label(r, i), "score": v} for _, r, i, v in flat[:TOP_TOKENS]]


def _at(curve: dict[float, dict[str, float]], rate: float, key: str) -> float:
    return curve[rate][key] if rate in curve else float("nan")


def _result(
    check, status: str, summary: str, metrics: dict, advice: str = "", figures: dict | None = None
) -> CheckResult:
    return CheckResult(check.id, check.title, status, summary, metrics=metrics, advice=advice, figures=figures or {})
