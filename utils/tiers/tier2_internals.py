"""Tier 2 analyses of the model's insides: the residual stream block by block
(representation_health) and the spectrum of every weight matrix (weight_spectrum)."""

from __future__ import annotations

import math
import re

from utils.analysis.locate import find_blocks
from utils.analysis.representations import representation_health as measure_layers
from utils.analysis.spectrum import weight_spectra
from utils.tiers.report import CheckResult
from utils.tiers.tier2_context import Tier2Context, tier2_check
from utils.tiers.tier2_figures import layers_figure, spectrum_figure

# A block output whose tokens differ from their mean by less than 1% of their size holds
# (almost) one vector for every position: rank collapse (Dong et al., 2021), after which no
# later layer can tell the tokens apart. Healthy streams measured here spread 0.8-1.0.
COLLAPSE_SPREAD = 0.01
# At initialisation, tokens of one sequence whose mean cosine exceeds this are nearly parallel;
# rank collapse at init stalls training (Noci et al., 2022). Trained LMs are often this
# anisotropic by design (Ethayarajh, 2019), so the rule applies to untrained models only.
INIT_TOKEN_COSINE_WARN = 0.99
# A feed-forward layer in which more than half the units never fire on the analysed tokens
# wastes that half (ReLU networks "die" under a too-large learning rate); needs enough tokens
# that a live unit had its chance to fire.
DEAD_NEURON_WARN = 0.5
DEAD_MIN_TOKENS = 32
# A trained block whose output has cosine > 0.999 with its input changes the stream by
# under ~4.5 degrees: it could be removed at little cost. At initialisation this is how
# residual blocks start, and normal.
REDUNDANT_BLOCK_COSINE = 0.999
# Power-law alpha bands of heavy-tailed self-regularisation (Martin & Mahoney, 2021): well
# trained layers have 2 <= alpha <= 6; larger looks random (normal at initialisation).
ALPHA_LOW, ALPHA_HIGH = 2.0, 6.0
_DIGITS = re.compile(r"\d+")


@tier2_check(
    "representation_health", "The residual stream, block by block: rank, collapse, redundant blocks, dead neurons"
)
def representation_health(ctx: Tier2Context) -> CheckResult:
    layout = find_blocks(ctx.model)
    if layout is None:
        return CheckResult(
            representation_health.id,
            representation_health.title,
            "skip",
            "No blocks found: no ModuleList of one repeated block class and no "
            "norm layers whose input is the residual stream.",
            advice="Keep the blocks in an nn.ModuleList (as nanoGPT and Hugging "
            "Face do) so the stream can be read between them.",
        )
    rows = [r.to_dict() for r in measure_layers(ctx.adapted, ctx.input_ids, ctx.attention_mask, layout)]
    if not rows:
        return CheckResult(
            representation_health.id,
            representation_health.title,
            "skip",
            f"The blocks ({', '.join(layout.names[:4])}...) never returned a (batch, tokens, width) tensor to measure.",
            advice="Nothing to do; the blocks' outputs have a layout this analysis does not read.",
        )
    where = (
        "block outputs"
        if layout.kind == "blocks"
        else "inputs of the norm layers (the residual stream of a flat export)"
    )
    metrics = {"layers": rows, "read_at": where, "trained": ctx.trained}
    figures = {"layers": layers_figure(rows, f"Residual stream per block ({ctx.state()} model)")}
    status, summary, advice = _judge_layers(ctx, rows)
    return CheckResult(
        representation_health.id,
        representation_health.title,
        status,
        summary,
        metrics=metrics,
        advice=advice,
        figures=figures,
    )


def _judge_layers(ctx: Tier2Context, rows: list[dict]) -> tuple[str, str, str]:
    tokens = int(ctx.input_ids.numel() if ctx.attention_mask is None else ctx.attention_mask.sum())
    collapsed = [r for r in rows if r["spread"] < COLLAPSE_SPREAD]
    if collapsed:
        first = collapsed[0]
        return (
            "fail",
            (
                f"Rank collapse at '{first['module']}': it maps every position to (almost) the same "
                f"vector (spread {first['spread']:.2g}, mean token cosine "
                f"{first['mean_token_cosine']:.3f}); from there on nothing can tell the tokens "
                f"apart. Collapsed: {', '.join(r['module'] for r in collapsed)}."
            ),
            f"Look at what '{first['module']}' does to its input: a mean over the sequence, a "
            "norm over the wrong axis, or attention that averages everything with no residual "
            "connection around it.",
        )
    if ctx.trained is False:
        parallel = [r for r in rows if r["mean_token_cosine"] > INIT_TOKEN_COSINE_WARN]
        if parallel:
            first = parallel[0]
            return (
                "warn",
                (
                    f"At initialisation the tokens after '{first['module']}' are nearly parallel "
                    f"(mean cosine {first['mean_token_cosine']:.3f} > {INIT_TOKEN_COSINE_WARN}): "
                    "rank collapse at init slows or stalls training."
                ),
                "Use pre-LN blocks (norm before attention and MLP) with residual connections, "
                "or scale the residual branches down at init (e.g. by 1/sqrt(2 * layers)).",
            )
    dead = [r for r in rows if (r["dead_neuron_fraction"] or 0) > DEAD_NEURON_WARN]
    if dead and tokens >= DEAD_MIN_TOKENS:
        first = dead[0]
        return (
            "warn",
            (
                f"{first['dead_neuron_fraction']:.0%} of the feed-forward units in "
                f"'{first['module']}' never fire on {tokens} tokens (more than "
                f"{DEAD_NEURON_WARN:.0%})."
            ),
            "Lower the learning rate or use GELU/SiLU instead of ReLU; dead units do not come back.",
        )
    if ctx.trained:
        redundant = [r for r in rows if (r["block_cosine"] or 0) > REDUNDANT_BLOCK_COSINE]
        if redundant:
            names = ", ".join(r["module"] for r in redundant)
            return (
                "warn",
                (
                    f"Trained blocks that barely change the stream (input/output cosine > "
                    f"{REDUNDANT_BLOCK_COSINE}): {names}."
                ),
                "These blocks could be removed (or the model made shallower) at little cost.",
            )
    ranks = [r["effective_rank_centered"] for r in rows]
    meaning = (
        "In a trained model the rank typically dips in the middle blocks and the tokens grow "
        "more alike (anisotropy); that is normal."
        if ctx.trained
        else "The model is untrained: blocks change the stream little (block cosine near 1 is "
        "normal at init) and the rank reflects random weights."
    )
    return (
        "pass",
        (
            f"No collapse in {len(rows)} blocks: centred effective rank {min(ranks):.1f} to "
            f"{max(ranks):.1f}, mean token cosine at most "
            f"{max(r['mean_token_cosine'] for r in rows):.2f}. {meaning}"
        ),
        "",
    )


@tier2_check(
    "weight_spectrum",
    "Every weight matrix's spectrum: power-law alpha, stable rank, spectral norm, duplicated matrices",
)
def weight_spectrum(ctx: Tier2Context) -> CheckResult:
    spectra = weight_spectra(ctx.model, generator=ctx.generator(41))
    if not spectra:
        return CheckResult(
            weight_spectrum.id,
            weight_spectrum.title,
            "skip",
            "The model has no weight matrices outside its embeddings.",
            advice="Nothing to do.",
        )
    rows = [s.to_dict() for s in spectra]
    worst = _worst(spectra)
    dupes = [s for s in spectra if s.duplicate_of]
    metrics = {
        "matrices": rows,
        "worst": worst.name,
        "trained": ctx.trained,
        "duplicates": [[s.duplicate_of, s.name] for s in dupes],
    }
    figures = {"worst_matrix": spectrum_figure(worst.name, worst.eigenvalues, worst.alpha, worst.alpha_xmin)}
    alphas = [s.alpha for s in spectra if math.isfinite(s.alpha)]
    mistakes = [s for s in dupes if ctx.trained or not _layer_copy(s.name, s.duplicate_of)]
    if mistakes:
        pairs = "; ".join(f"'{s.name}' = '{s.duplicate_of}'" for s in mistakes[:4])
        return CheckResult(
            weight_spectrum.id,
            weight_spectrum.title,
            "fail",
            (
                f"{len(mistakes)} matrix(es) hold exactly the same values as another, untied: "
                f"{pairs}. A clone meant to be a tie drifts apart in training; copies that are "
                "still identical in a trained model mean one of them never learned."
            ),
            metrics=metrics,
            advice="Tie on purpose by assigning the same nn.Parameter "
            "(model.lm_head.weight = model.tok_emb.weight), or build each layer anew "
            "(nn.ModuleList(Block() for _ in range(n))).",
            figures=figures,
        )
    note = (
        f" {len(dupes)} matrices start as copies of the same layer in another block "
        f"(e.g. '{dupes[0].name}' = '{dupes[0].duplicate_of}', as nn.TransformerEncoder's "
        "deep copies do); normal at initialisation, they differ once trained."
        if dupes
        else ""
    )
    inside = sum(ALPHA_LOW <= a <= ALPHA_HIGH for a in alphas)
    meaning = (
        f"In a trained model alpha in [{ALPHA_LOW:g}, {ALPHA_HIGH:g}] marks well-trained "
        f"layers ({inside} of {len(alphas)} here); above it a layer looks random, below it a "
        "few directions dominate."
        if ctx.trained
        else "The model is untrained: random matrices have no real power-law tail, so these alphas "
        "(typically 3-12 at init) and the large stable ranks say nothing yet."
    )
    return CheckResult(
        weight_spectrum.id,
        weight_spectrum.title,
        "pass",
        (
            f"{len(spectra)} matrices; alpha {min(alphas, default=math.nan):.2f} "
            f"to {max(alphas, default=math.nan):.2f}, largest spectral norm "
            f"{max(s.spectral_norm for s in spectra):.3g} ('{worst.name}' shown). {meaning}{note}"
        ),
        metrics=metrics,
        figures=figures,
    )


def _layer_copy(name: str, other: str) -> bool:
    """Two matrices in the same role of different blocks (`layers.0.linear1.weight` and
    `layers.1.linear1.weight`): what copying one block N times produces."""
    return name != other and _DIGITS.sub("#", name) == _DIGITS.sub("#", other)


def _worst(spectra):
    """The matrix to draw: a duplicate first, else the alpha furthest outside the healthy
    band, else the largest spectral norm."""
    for s in spectra:
        if s.duplicate_of:
            return s

    def outside(s) -> float:
        if not math.isfinite(s.alpha):
            return -1.0
        return max(ALPHA_LOW - s.alpha, s.alpha - ALPHA_HIGH, 0.0)

    far = max(spectra, key=outside)
    return far if outside(far) > 0 else max(spectra, key=lambda s: s.spectral_norm)
