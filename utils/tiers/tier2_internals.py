"""Tier 2 analyses of the model's insides: the residual stream block by block
(representation_health) and the spectrum of every weight matrix (weight_spectrum)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from utils.analysis.locate import find_blocks
from utils.analysis.representations import representation_health as measure_layers
from utils.analysis.spectrum import weight_spectra
from utils.checks import CheckResult, Verdict
from utils.tiers.tier2_context import TIER2_CHECKS, Tier2Context
from utils.tiers.tier2_figures import layers_figure, spectrum_figure


@dataclass(frozen=True)
class RepresentationThresholds:
    # A block output whose tokens differ from their sequence's mean by less than 1% of their
    # size holds (almost) one vector for every position: rank collapse (Dong et al., 2021),
    # after which no later layer can tell the tokens apart. Healthy streams spread 0.5-1.0.
    collapse_spread: float = 0.01
    # At initialisation, tokens of one sequence whose mean cosine exceeds this are nearly
    # parallel; rank collapse at init stalls training (Noci et al., 2022). Trained LMs are
    # often this anisotropic by design (Ethayarajh, 2019): untrained models only.
    init_token_cosine: float = 0.99
    # A feed-forward layer in which more than half the units never fire on the analysed tokens
    # wastes that half (ReLU units "die" under a too-large learning rate); judged only on
    # enough tokens that a live unit had its chance to fire.
    dead_neurons: float = 0.5
    dead_min_tokens: int = 32
    # A trained block whose output has cosine > 0.999 with its input turns the stream by under
    # ~2.6 degrees: removable at little cost. At initialisation residual blocks start so.
    redundant_block_cosine: float = 0.999


@dataclass(frozen=True)
class SpectrumThresholds:
    # Power-law alpha bands of heavy-tailed self-regularisation (Martin & Mahoney, 2021):
    # well-trained layers have 2 <= alpha <= 6; larger looks random (normal at init), smaller
    # means a few directions dominate. Descriptive: never a warning on its own.
    alpha_low: float = 2.0
    alpha_high: float = 6.0


_DIGITS = re.compile(r"\d+")


@TIER2_CHECKS.check("representation_health", thresholds=RepresentationThresholds())
def representation_health(ctx: Tier2Context, v: Verdict) -> CheckResult:
    """The residual stream block by block: rank, collapse, redundant blocks, dead neurons

    What it checks: at every block's output (found by structure: the ModuleList of one repeated
    block class; in a flat export, the inputs of its norm layers) the effective rank of the token
    vectors, uncentred and centred, the mean pairwise cosine of a sequence's tokens, anisotropy,
    the spread of tokens around their sequence mean, the cosine between the block's input and
    output, and the share of feed-forward units that never fire.
    Why it matters: a block that maps every position to the same vector (rank collapse) destroys
    everything after it; nearly parallel tokens at initialisation stall training; dead units and
    blocks that change nothing once trained are wasted capacity.
    Known false alarms: trained LMs are strongly anisotropic (high cosine) by design, so the
    cosine rule applies to untrained models only; block cosine near 1 is normal at init.
    Broken example: a model whose middle block returns the sequence mean at every position
    (tests/analysis/zoo.py TinyLM(collapse_at=1)).
    How to fix: remove what averages over the sequence (a mean, a norm over the wrong axis,
    attention without its residual connection); pre-LN blocks against collapse at init.
    """
    layout = find_blocks(ctx.model)
    if layout is None:
        return v.skip(
            "No blocks found: no ModuleList of one repeated block class and no norm layers whose input "
            "is the residual stream.",
            advice="Keep the blocks in an nn.ModuleList (as nanoGPT and Hugging Face do) so the stream "
            "can be read between them.",
        )
    rows = [r.to_dict() for r in measure_layers(ctx.adapted, ctx.input_ids, ctx.attention_mask, layout)]
    if not rows:
        return v.skip(
            f"The blocks ({', '.join(layout.names[:4])}) never returned a (batch, tokens, width) tensor.",
            advice="Nothing to do; their outputs have a layout this analysis does not read.",
        )
    where = "block outputs" if layout.kind == "blocks" else "inputs of the norm layers (a flat export's stream)"
    metrics = {"layers": rows, "read_at": where, "trained": ctx.trained}
    figures = {"layers": layers_figure(rows, f"Residual stream per block ({ctx.state()} model)")}
    status, summary, advice = _judge_layers(ctx, rows, v.thresholds)
    return v.result(status, summary, metrics, advice, figures)


def _judge_layers(ctx: Tier2Context, rows: list[dict], t: RepresentationThresholds) -> tuple[str, str, str]:
    tokens = int(ctx.input_ids.numel() if ctx.attention_mask is None else ctx.attention_mask.sum())
    collapsed = [r for r in rows if r["spread"] < t.collapse_spread]
    if collapsed:
        first = collapsed[0]
        return (
            "fail",
            f"Rank collapse at '{first['module']}': it maps every position to (almost) the same vector "
            f"(spread {first['spread']:.2g}, mean token cosine {first['mean_token_cosine']:.3f}); from "
            f"there on nothing can tell the tokens apart. Collapsed: "
            f"{', '.join(r['module'] for r in collapsed)}.",
            f"Look at what '{first['module']}' does to its input: a mean over the sequence, a norm over "
            "the wrong axis, or attention that averages everything with no residual connection.",
        )
    if ctx.trained is False:
        parallel = [r for r in rows if r["mean_token_cosine"] > t.init_token_cosine]
        if parallel:
            first = parallel[0]
            return (
                "warn",
                f"At initialisation the tokens after '{first['module']}' are nearly parallel (mean cosine "
                f"{first['mean_token_cosine']:.3f} > {t.init_token_cosine}): rank collapse at init slows "
                "or stalls training.",
                "Use pre-LN blocks (norm before attention and MLP) with residual connections, or scale "
                "the residual branches down at init (e.g. by 1/sqrt(2 * layers)).",
            )
    dead = [r for r in rows if (r["dead_neuron_fraction"] or 0) > t.dead_neurons]
    if dead and tokens >= t.dead_min_tokens:
        first = dead[0]
        return (
            "warn",
            f"{first['dead_neuron_fraction']:.0%} of the feed-forward units in '{first['module']}' never "
            f"fire on {tokens} tokens (more than {t.dead_neurons:.0%}).",
            "Lower the learning rate, or use GELU/SiLU instead of ReLU; dead units do not come back.",
        )
    redundant = [r for r in rows if (r["block_cosine"] or 0) > t.redundant_block_cosine]
    if ctx.trained and redundant:
        return (
            "warn",
            f"Trained blocks that barely change the stream (input/output cosine > "
            f"{t.redundant_block_cosine}): {', '.join(r['module'] for r in redundant)}.",
            "These blocks could be removed (a shallower model) at little cost.",
        )
    ranks = [r["effective_rank_centered"] for r in rows]
    meaning = ctx.reading(
        "In a trained model the rank often dips in the middle blocks and tokens grow alike "
        "(anisotropy); that is normal.",
        "The model looks untrained: blocks change the stream little (block cosine near 1 is "
        "normal at init) and the ranks reflect random weights.",
    )
    return (
        "pass",
        f"No collapse in {len(rows)} blocks: centred effective rank {min(ranks):.1f} to {max(ranks):.1f}, "
        f"mean token cosine at most {max(r['mean_token_cosine'] for r in rows):.2f}. {meaning}",
        "",
    )


@TIER2_CHECKS.check("weight_spectrum", thresholds=SpectrumThresholds())
def weight_spectrum(ctx: Tier2Context, v: Verdict) -> CheckResult:
    """Every weight matrix's spectrum: power-law alpha, stable rank, spectral norm, copies

    What it checks: for each weight matrix (nn.MultiheadAttention's packed in_proj_weight split
    into Q, K and V) the power-law exponent alpha of the eigenvalues of W^T W (own maximum-
    likelihood fit, tail chosen by Kolmogorov-Smirnov distance), the stable rank and the spectral
    norm; and matrices that hold exactly the same values as another without being tied.
    Why it matters: alpha reads how trained each layer is without any data (2-6 well trained,
    larger random-like); a clone meant to be a tie drifts apart in training, and copies still
    identical after training mean one of them never learned.
    Known false alarms: copies of the same layer in different blocks (nn.TransformerEncoder
    deep-copies its layer) are normal at initialisation and only noted there.
    Broken example: an output layer holding a clone of the token embedding instead of sharing
    it (tests/analysis/zoo.py ClonedHeadLM).
    How to fix: tie on purpose by assigning the same nn.Parameter, or build each layer anew.
    """
    t = v.thresholds
    spectra = weight_spectra(ctx.model, generator=ctx.generator(v.stream("rows")))
    if not spectra:
        return v.skip("The model has no weight matrices outside its embeddings.", advice="Nothing to do.")
    worst = _worst(spectra, t)
    dupes = [s for s in spectra if s.duplicate_of]
    metrics = {
        "matrices": [s.to_dict() for s in spectra],
        "worst": worst.name,
        "trained": ctx.trained,
        "duplicates": [[s.duplicate_of, s.name] for s in dupes],
    }
    figures = {"worst_matrix": spectrum_figure(worst.name, worst.eigenvalues, worst.alpha, worst.alpha_xmin)}
    mistakes = [s for s in dupes if ctx.trained or not _layer_copy(s.name, s.duplicate_of)]
    if mistakes:
        pairs = "; ".join(f"'{s.name}' = '{s.duplicate_of}'" for s in mistakes[:4])
        return v.fail(
            f"{len(mistakes)} matrix(es) hold exactly the same values as another, untied: {pairs}. A clone "
            "meant to be a tie drifts apart in training; copies still identical in a trained model mean "
            "one of them never learned.",
            metrics,
            "Tie on purpose by assigning the same nn.Parameter (model.lm_head.weight = "
            "model.tok_emb.weight), or build each layer anew (nn.ModuleList(Block() for _ in range(n))).",
            figures,
        )
    note = (
        f" {len(dupes)} matrices start as copies of the same layer in another block (e.g. '{dupes[0].name}' = "
        f"'{dupes[0].duplicate_of}', as nn.TransformerEncoder's deep copies do); normal at "
        "initialisation, they differ once trained."
        if dupes
        else ""
    )
    alphas = [s.alpha for s in spectra if math.isfinite(s.alpha)]
    inside = sum(t.alpha_low <= a <= t.alpha_high for a in alphas)
    meaning = ctx.reading(
        f"In a trained model alpha in [{t.alpha_low:g}, {t.alpha_high:g}] marks well-trained layers "
        f"({inside} of {len(alphas)} here); above it a layer looks random, below it a few directions dominate.",
        "The model looks untrained: random matrices have no real power-law tail, so these alphas "
        "(typically 3-12 at init) and the large stable ranks say nothing yet.",
    )
    return v.pass_(
        f"{len(spectra)} matrices; alpha {min(alphas, default=math.nan):.2f} to "
        f"{max(alphas, default=math.nan):.2f}, largest spectral norm {max(s.spectral_norm for s in spectra):.3g} "
        f"('{worst.name}' shown). {meaning}{note}",
        metrics,
        figures=figures,
    )


def _layer_copy(name: str, other: str) -> bool:
    """Two matrices in the same role of different blocks (`layers.0.linear1.weight` and
    `layers.1.linear1.weight`): what copying one block N times produces."""
    return name != other and _DIGITS.sub("#", name) == _DIGITS.sub("#", other)


def _worst(spectra, t: SpectrumThresholds):
    """The matrix to draw: a copy first, else the alpha furthest outside the healthy band,
    else the largest spectral norm."""
    for s in spectra:
        if s.duplicate_of:
            return s

    def outside(s) -> float:
        if not math.isfinite(s.alpha):
            return -1.0
        return max(t.alpha_low - s.alpha, s.alpha - t.alpha_high, 0.0)

    far = max(spectra, key=outside)
    return far if outside(far) > 0 else max(spectra, key=lambda s: s.spectral_norm)
