"""Tier 2's figures, each a PNG made from numbers an analysis already measured."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from utils.checks import figure_to_png

MAX_ROWS_SHOWN = 4  # attribution rows drawn; the metrics hold every row


def attribution_figure(
    scores: Sequence[Sequence[float]], labels: Sequence[Sequence[str]], targets: Sequence[str], title: str
) -> bytes:
    """One bar chart per row: each token's attribution (blue pushes the prediction up, red
    down), token strings under the bars."""
    from matplotlib.figure import Figure

    rows = list(range(min(len(scores), MAX_ROWS_SHOWN)))
    T = len(scores[0])
    fig = Figure(figsize=(max(6.0, 0.28 * T + 2), 1.9 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, r in zip(axes, rows):
        vals = list(scores[r])
        ax.bar(range(T), vals, color=["#0969da" if v >= 0 else "#cf222e" for v in vals])
        ax.axhline(0, color="#57606a", linewidth=0.6)
        ax.set_xticks(range(T), [str(s)[:10] for s in labels[r]], rotation=90, fontsize=7)
        ax.set_ylabel("IG", fontsize=7)
        ax.set_title(f"row {r}: explaining the prediction {targets[r]!r}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_to_png(fig)


def curves_figure(token: dict[float, dict[str, float]], noise: dict[float, dict[str, float]]) -> bytes:
    """KL and flip rate against the perturbation size, for token replacement and noise."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for ax, curve, xlabel in (
        (axes[0], token, "share of tokens replaced"),
        (axes[1], noise, "noise norm / embedding norm"),
    ):
        if not curve:
            ax.set_axis_off()
            continue
        xs = sorted(curve)
        ax.plot(xs, [curve[x]["kl"] for x in xs], "o-", color="#0969da", label="KL (nats)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean next-token KL (nats)", color="#0969da")
        twin = ax.twinx()
        twin.plot(xs, [curve[x]["flip_rate"] for x in xs], "s--", color="#cf222e")
        twin.set_ylabel("top-1 flip rate", color="#cf222e")
        twin.set_ylim(0, 1.05)
    axes[0].set_title("tokens replaced at random", fontsize=9)
    axes[1].set_title("noise on the token embedding", fontsize=9)
    fig.tight_layout()
    return figure_to_png(fig)


def layers_figure(rows: Sequence[dict], title: str) -> bytes:
    """Per block: effective rank (uncentred and centred) on the left, token and block
    cosines on the right."""
    from matplotlib.figure import Figure

    names = [r["module"] for r in rows]
    xs = range(len(rows))
    fig = Figure(figsize=(max(7.0, 0.5 * len(rows) + 4), 3.6))
    left, right = fig.subplots(1, 2)
    left.plot(xs, [r["effective_rank"] for r in rows], "o-", label="effective rank")
    left.plot(xs, [r["effective_rank_centered"] for r in rows], "s--", label="centred")
    left.set_ylabel("effective rank")
    left.set_ylim(bottom=0)
    left.legend(fontsize=7)
    right.plot(xs, [r["mean_token_cosine"] for r in rows], "o-", label="mean token cosine")
    right.plot(xs, [r["anisotropy"] for r in rows], "^:", label="anisotropy")
    right.plot(xs, [_nan(r["block_cosine"]) for r in rows], "s--", label="block in/out cosine")
    right.set_ylim(-0.05, 1.05)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xticks(list(xs), [n[-18:] for n in names], rotation=60, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_to_png(fig)


def spectrum_figure(name: str, eigenvalues: np.ndarray, alpha: float, xmin: float) -> bytes:
    """The eigenvalue density of W^T W on log-log axes, with the fitted power-law tail."""
    from matplotlib.figure import Figure

    eig = np.asarray(eigenvalues, dtype=np.float64)
    eig = eig[eig > 0]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    bins = np.logspace(math.log10(eig.min()), math.log10(eig.max()), max(10, min(60, eig.size // 3)))
    density, edges, _ = ax.hist(eig, bins=bins, density=True, color="#8c959f", label="eigenvalues")
    if math.isfinite(alpha) and math.isfinite(xmin):
        xs = np.logspace(math.log10(xmin), math.log10(eig.max()), 50)
        tail_share = float((eig >= xmin).mean())
        ys = tail_share * (alpha - 1) / xmin * (xs / xmin) ** (-alpha)
        ax.plot(xs, ys, color="#cf222e", label=f"power law, alpha = {alpha:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue of W^T W")
    ax.set_ylabel("density")
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7)
    return figure_to_png(fig)


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v
