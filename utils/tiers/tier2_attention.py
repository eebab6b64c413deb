"""Tier 2's attention analysis: what each head attends to, and which heads matter.

The maps come from `capture_attention` (any attention the model computes in PyTorch, each
map verified); the numbers per head from `utils.analysis.heads`; whether a head matters from
zeroing its output and measuring how far the next-token distributions move (KL).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from utils.analysis.attention import (
    AttentionMap,
    CaptureError,
    run_with_capture,
    run_with_heads_ablated,
)
from utils.analysis.heads import (
    HeadThresholds,
    dead_heads,
    head_labels,
    head_patterns,
    induction_scores,
)
from utils.checks import Check, CheckResult, CheckSet, Verdict, figure_to_png
from utils.tiers.tier1.context import keep_modes

HEAD_FIELDS = (
    "entropy",
    "max_weight",
    "previous_token",
    "first_token",
    "diagonal",
    "local",
    "induction",
    "ablation_kl",
)


def _guard(ctx: Any, check: Check, v: Verdict, call: Callable[[], CheckResult]) -> CheckResult:
    """No adapted model: skip with the adapter's reason. A crash of the measuring code is a
    skip naming it (the model is not at fault for our tools). Seeded; flags restored."""
    if getattr(ctx, "adapted", None) is None:
        return v.skip(
            f"The model could not be adapted: {getattr(ctx, 'adapt_error', None)}",
            advice="Fix what forward_signature reports, then run Tier 2 again.",
        )
    torch.manual_seed(ctx.seed)
    try:
        with keep_modes(ctx.adapted):
            return call()
    except Exception as exc:  # noqa: BLE001 - our measuring code, not the user's model
        return v.skip(
            f"The attention analysis could not run: {type(exc).__name__}: {exc}",
            advice="This is a limitation of the analysis, not a fault of the model; the other analyses are unaffected.",
        )


ATTENTION_CHECKS = CheckSet("tier2.attention", guard=_guard)


@dataclass(frozen=True)
class AttentionThresholds:
    heads: HeadThresholds = field(default_factory=HeadThresholds)
    # A softmax row sums to 1 within the rounding of its dtype: each weight is rounded by at
    # most 2^-9 of itself in bfloat16 (2^-11 in float16), so a row is off by under 4e-3; a
    # softmax over the wrong axis, or a mask applied after it, is off by O(1).
    max_row_error: float = 1e-2
    # Capture's own check (weights x V against the model's output, relative to its largest
    # value): a float32 recomputation lands near 1e-7 and a bfloat16 kernel within ~4e-3, so a
    # map above this is not what the model computed and is left out rather than analysed.
    max_reproduction_error: float = 1e-2
    # Length of the random sequence that is repeated to measure induction (Olsson et al. use
    # a few dozen tokens; 16 keeps the forward cheap and the score well above chance).
    induction_half: int = 16
    # Figure limits: beyond these the heatmap grid subsamples and says so.
    figure_tokens: int = 24
    figure_heads: int = 8
    figure_layers: int = 8
    table_rows: int = 48


@ATTENTION_CHECKS.check("attention_patterns", thresholds=AttentionThresholds())
def attention_patterns(ctx: Any, v: Verdict) -> CheckResult:
    """What each attention head attends to, and which heads matter

    What it checks: every attention map of one forward (captured and verified), per head:
    normalised entropy, largest weight, the weight on the previous token, the first token,
    the query itself and a local window; the induction score on repeated random sequences;
    and the KL of the next-token distributions when the head's output is zeroed. Heads are
    labelled previous_token, first_token_sink, self, local, uniform, induction or dead.
    Why it matters: attention rows that do not sum to 1 are a bug in the attention code; a
    head that changes nothing when removed is wasted capacity in a trained model; the labels
    say what a trained model has learnt (previous-token and induction heads are how language
    models copy and continue text).
    Known false alarms: none for the failures. Sinks on the first token are normal in trained
    models (a place to put weight a head does not need); at initialisation every head is near
    uniform, so labels there describe the initialisation, not learning.
    Broken example: WrongAxisLM in tests/analysis/test_attention_patterns.py (softmax over
    the query axis) fails; StructuredLM's zero-output head is labelled dead (a warn when the
    model is trained).
    How to fix: normalise attention with softmax over the last (key) axis, after masking; give
    a dead head a non-zero output projection or remove it.
    """
    t: AttentionThresholds = v.thresholds
    adapted, ids, mask = ctx.adapted, ctx.input_ids, ctx.attention_mask
    maps, clean = run_with_capture(adapted, ids, mask)
    usable, notes = _usable(maps, t)
    if not usable:
        return v.skip(
            _nothing_seen(maps),
            {"maps": _map_rows(maps)},
            advice="Attention computed outside PyTorch (a fused external kernel) "
            "cannot be read; run the model with its PyTorch attention path to see it.",
        )
    sizing = _induction_length(ctx, t)
    if sizing["length"] < 2 * t.induction_half:
        shorter = f"induction measured on {sizing['length']} repeated tokens, not {2 * t.induction_half}"
        notes.append(f"{shorter}: {sizing['source']}")
    induction = _induction(ctx, sizing, len([m for m in maps if m.available]), v.stream("induction"), notes)
    deadline = getattr(ctx, "deadline", math.inf)
    heads = _head_rows(adapted, ids, mask, clean, usable, induction, deadline, notes, t)
    broken = [m for m in usable if max(m.errors.get("row_sum", 0.0), m.errors.get("masked", 0.0)) > t.max_row_error]
    figures = _figures(ctx, usable, heads, t, notes)
    metrics = {
        "heads": heads,
        "maps": _map_rows(maps),
        "notes": notes,
        "induction_sequence": sizing,
        "label_counts": _label_counts(heads),
        "trained": getattr(ctx, "trained", None),
    }
    if broken:
        names = ", ".join(f"{m.module} (layer {m.layer})" for m in broken)
        rows = max(m.errors.get("row_sum", 0.0) for m in broken)
        hidden = max(m.errors.get("masked", 0.0) for m in broken)
        return v.fail(
            f"Attention rows do not sum to 1 in {names}: off by up to {rows:.3g}"
            + (f"; masked keys get weight up to {hidden:.3g}." if hidden > t.max_row_error else "."),
            metrics,
            figures=figures,
            advice="Apply softmax over the last (key) axis, after the mask is added, "
            "and do not rescale or mask the weights after it.",
        )
    summary = _summary(heads, getattr(ctx, "trained", None))
    dead = [h for h in heads if "dead" in h["labels"]]
    if dead and getattr(ctx, "trained", None):
        return v.warn(
            summary,
            metrics,
            figures=figures,
            advice=f"{len(dead)} head(s) change nothing when zeroed "
            f"({_names(dead)}): check their output projection, or remove them.",
        )
    return v.pass_(summary, metrics, figures=figures)


# -- measuring --------------------------------------------------------------------------------


def _usable(maps: list[AttentionMap], t: AttentionThresholds) -> tuple[list[AttentionMap], list[str]]:
    """Maps whose weights reproduce the model's output; the rest are named in notes."""
    usable, notes = [], []
    for m in maps:
        output = [e for k, e in m.errors.items() if k.startswith("output")]
        if not m.available:
            notes.append(f"{m.module}: {m.note}")
        elif output and max(output) > t.max_reproduction_error:
            notes.append(
                f"{m.module} (layer {m.layer}): the captured weights do not reproduce "
                f"its output (error {max(output):.2g}), so it is left out"
            )
        else:
            usable.append(m)
    return usable, notes


def _induction_length(ctx: Any, t: AttentionThresholds) -> dict[str, Any]:
    """How many tokens the [r, r] sequence spans, and why: 2 x induction_half, capped by the
    model's stated maximum; with none stated, by what the model is seen to run on (the
    input's own length always, 2 x induction_half when a plain forward of it runs), so a
    short position table shortens the sequence instead of stopping the analysis."""
    p = ctx.adapted.profile
    want = 2 * t.induction_half
    if p.max_seq_len is not None:
        length = min(want, p.max_seq_len)
        return {"length": length, "source": f"max_seq_len={p.max_seq_len} ({p.max_seq_len_source})"}
    T = int(ctx.input_ids.shape[1])
    if want <= T:
        return {"length": want, "source": f"no maximum stated; the input's {T} tokens ran"}
    probe = torch.zeros(2, want, dtype=ctx.input_ids.dtype, device=ctx.input_ids.device)
    try:
        with torch.no_grad():
            ctx.adapted(probe)
    except Exception as exc:  # noqa: BLE001 - the probe asks whether the model takes this length
        return {
            "length": T,
            "source": f"no maximum stated; a {want}-token probe failed ({type(exc).__name__}), "
            f"so the input's {T} tokens (which ran) are the limit",
        }
    return {"length": want, "source": f"no maximum stated; a {want}-token probe ran"}


def _induction(ctx: Any, sizing: dict[str, Any], n_maps: int, stream: int, notes: list[str]) -> dict[int, torch.Tensor]:
    """{layer: (H,) induction score} from [r, r] random sequences, when the model takes them
    and calls its attention the same number of times on them."""
    p = ctx.adapted.profile
    half = sizing["length"] // 2
    high = getattr(ctx, "id_high", None) or p.vocab_size
    if half < 2 or not high:
        notes.append("induction not measured: the model takes fewer than 4 tokens or its vocabulary is unknown")
        return {}
    g = torch.Generator().manual_seed(ctx.seed * 1_000_003 + stream)
    r = torch.randint(0, high, (2, half), generator=g)
    rep = torch.cat([r, r], dim=1).to(ctx.input_ids.device)
    maps, _ = run_with_capture(ctx.adapted, rep)
    maps = [m for m in maps if m.available]
    if len(maps) != n_maps:
        notes.append(
            f"induction not measured: the model ran {len(maps)} attention call(s) on the repeated "
            f"sequence and {n_maps} on the input, so layers cannot be matched"
        )
        return {}
    return {
        m.layer: induction_scores(m.weights, half)
        for m in maps
        if m.weights.shape[-1] == m.weights.shape[-2] == 2 * half
    }


def _head_rows(adapted, ids, mask, clean, usable, induction, deadline, notes, t) -> list[dict]:
    rows = []
    output_kind = adapted.profile.output_kind
    keep = None if mask is None else mask.bool()
    for m in usable:
        w = m.weights
        stats = head_patterns(w, keep if w.shape[-1] == w.shape[-2] else None, t.heads.local_radius)
        ind = induction.get(m.layer)
        kls = _ablation(adapted, ids, mask, clean, m, deadline, notes, output_kind)
        for h in range(m.num_heads):
            row = {"layer": m.layer, "head": h, "module": m.module}
            row |= {k: _num(stats[k][h]) for k in stats}
            row["induction"] = None if ind is None else _num(ind[h])
            row["ablation_kl"] = kls[h]
            rows.append(row)
    for row, dead in zip(rows, dead_heads([r["ablation_kl"] for r in rows], t.heads)):
        row["labels"] = head_labels(row | {"dead": dead}, t.heads)
    return rows


def _ablation(
    adapted, ids, mask, clean, m: AttentionMap, deadline: float, notes: list[str], output_kind: str
) -> list[float | None]:
    """KL(clean || head zeroed) of the predictions, averaged over real positions, per head;
    None for heads the time budget or the output layout did not allow."""
    kls: list[float | None] = []
    base = _log_probs(clean, output_kind)
    for h in range(m.num_heads):
        if time.perf_counter() > deadline:
            notes.append(
                f"time budget spent: heads from layer {m.layer} head {h} on were not "
                "ablated (no ablation_kl, no dead label)"
            )
            return kls + [None] * (m.num_heads - h)
        try:
            logits = run_with_heads_ablated(adapted, ids, {m.layer: [h]}, mask)
        except CaptureError as exc:
            notes.append(f"{m.module}: {exc}")
            return [None] * m.num_heads
        kl = (base.exp() * (base - _log_probs(logits, output_kind))).sum(-1)  # (B, T) or (B,)
        if mask is not None and kl.dim() == 2:
            kl = kl[mask.bool()]
        kls.append(float(kl.clamp_min(0).mean()))
    return kls


def _log_probs(logits: torch.Tensor, output_kind: str) -> torch.Tensor:
    x = logits.float()
    if output_kind == "probs":
        return x.clamp_min(1e-30).log()
    return torch.log_softmax(x, dim=-1)  # logits, or log-probs (log_softmax keeps them)


# -- words --------------------------------------------------------------------------------------


def _summary(heads: list[dict], trained: bool | None) -> str:
    counts = _label_counts(heads)
    found = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no head with a clear pattern"
    layers = len({h["layer"] for h in heads})
    head = f"{len(heads)} heads in {layers} attention layer(s): {found}."
    if trained is False:
        return (
            head + " The model looks untrained: at initialisation heads are near uniform "
            "and labels describe the initialisation, not anything learnt."
        )
    sinks = " First-token sinks are normal in trained models." if counts.get("first_token_sink") else ""
    state = "The model looks trained." if trained else "Whether the model is trained is unknown (no loss to judge by)."
    return f"{head} {state}{sinks}"


def _label_counts(heads: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for h in heads:
        for label in h["labels"]:
            counts[label] = counts.get(label, 0) + 1
    return counts


def _names(heads: list[dict]) -> str:
    shown = ", ".join(f"layer {h['layer']} head {h['head']}" for h in heads[:6])
    return shown + (f" and {len(heads) - 6} more" if len(heads) > 6 else "")


def _nothing_seen(maps: list[AttentionMap]) -> str:
    if not maps:
        return (
            "No attention was seen in the forward: the model has no nn.MultiheadAttention, "
            "no scaled_dot_product_attention and no softmax(q k^T) @ v."
        )
    return "No attention weights could be read: " + "; ".join(f"{m.module} ({m.method})" for m in maps) + "."


def _map_rows(maps: list[AttentionMap]) -> list[dict]:
    return [
        {
            "module": m.module,
            "layer": m.layer,
            "method": m.method,
            "heads": m.num_heads,
            "max_error": m.max_error,
            "errors": m.errors,
            "note": m.note,
        }
        for m in maps
    ]


def _num(x: torch.Tensor) -> float | None:
    value = float(x)
    return None if math.isnan(value) else round(value, 6)


# -- figures ------------------------------------------------------------------------------------


def _figures(
    ctx: Any, maps: list[AttentionMap], heads: list[dict], t: AttentionThresholds, notes: list[str]
) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    return {"heads_grid": _grid(ctx, maps, heads, t, notes), "head_table": _table(heads, t, notes)}


def _grid(ctx, maps, heads, t, notes) -> bytes:
    """Row 0's weights, one heatmap per head and layer, subsampled for big inputs."""
    import matplotlib.pyplot as plt

    shown = maps[: t.figure_layers]
    n_heads = min(t.figure_heads, max(m.num_heads for m in shown))
    T = min(shown[0].weights.shape[-2], t.figure_tokens)
    if len(maps) > len(shown) or max(m.num_heads for m in shown) > n_heads or shown[0].weights.shape[-2] > T:
        notes.append(f"heatmaps show the first {len(shown)} layer(s), {n_heads} head(s) and {T} token(s) of row 0")
    labels = {(h["layer"], h["head"]): ",".join(h["labels"]) for h in heads}
    fig, axes = plt.subplots(len(shown), n_heads, figsize=(1.8 * n_heads, 1.8 * len(shown)), squeeze=False)
    tokens = _tokens(ctx, T)
    for r, m in enumerate(shown):
        for c in range(n_heads):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= m.num_heads:
                ax.axis("off")
                continue
            ax.imshow(m.weights[0, c, :T, :T].numpy(), vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"L{m.layer} H{c}\n{labels.get((m.layer, c), '')}", fontsize=7)
            if tokens and c == 0:
                ax.set_yticks(range(T), tokens, fontsize=5)
            if tokens and r == len(shown) - 1:
                ax.set_xticks(range(T), tokens, fontsize=5, rotation=90)
    fig.suptitle("Attention weights (row 0; query down, key across)", fontsize=9, y=1.0)
    fig.tight_layout()
    return figure_to_png(fig)


def _tokens(ctx: Any, T: int) -> list[str] | None:
    """Token strings of row 0 for the axes (the shown window is at most figure_tokens)."""
    strings = getattr(ctx, "token_strings", None)
    if not strings:
        return None
    # "$" would start matplotlib's mathtext; newlines would break the axis
    return [s[:6].replace("$", r"\$").replace("\n", "\\n") for s in strings[0][:T]]


def _table(heads: list[dict], t: AttentionThresholds, notes: list[str]) -> bytes:
    import matplotlib.pyplot as plt

    rows = heads[: t.table_rows]
    if len(heads) > len(rows):
        notes.append(f"the head table shows the first {len(rows)} of {len(heads)} heads")
    cols = ["layer", "head", "labels", "entropy", "prev", "first", "diag", "induction", "KL"]
    cells = [
        [
            h["layer"],
            h["head"],
            ", ".join(h["labels"]) or "-",
            *(_fmt(h[k]) for k in ("entropy", "previous_token", "first_token", "diagonal", "induction", "ablation_kl")),
        ]
        for h in rows
    ]
    fig, ax = plt.subplots(figsize=(9, 0.25 * len(rows) + 0.8))
    ax.axis("off")
    widths = [0.06, 0.06, 0.3] + [0.09] * 6
    table = ax.table(cellText=cells, colLabels=cols, colWidths=widths, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    ax.set_title("Attention heads", fontsize=9)
    return figure_to_png(fig)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
