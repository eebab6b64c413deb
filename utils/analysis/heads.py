"""What each attention head does, measured on captured maps: where its weight goes (previous
token, first token, itself, a local window), how spread it is, whether it completes repeated
sequences (induction), and how much the prediction depends on it (ablation).

    stats = head_patterns(weights, keep)                 # per-head tensors, (H,) each
    score = induction_scores(weights, half)              # (H,) on [r, r] sequences
    labels = head_labels(row, thresholds)                # ["previous_token", ...]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class HeadThresholds:
    """When a head earns a label. Mass thresholds are shares of a query row's weight,
    averaged over rows; they follow the conventions of the interpretability literature
    (Olsson et al. 2022, Voita et al. 2019: a head is "positional" when most of its weight
    lands on one relative position) and were checked on models built to show each pattern."""

    # A single position taking most of the row: previous_token, self, first_token_sink.
    position_mass: float = 0.5
    # Most of the row within LOCAL_RADIUS positions of the query, no single one dominating.
    local_mass: float = 0.8
    local_radius: int = 2
    # Normalised entropy (1 = spread evenly over every visible key): an untrained model's
    # heads sit at 0.97-1.0; a head that attends to anything in particular is below 0.9.
    uniform_entropy: float = 0.95
    # Mean weight on the token after the previous occurrence of the query token, on repeated
    # random sequences; uniform attention scores about 1 / (1.5 n), TransformerLens's demos
    # call heads above 0.4 induction heads.
    induction: float = 0.4
    # Zeroing a dead head moves the next-token distributions by (float32) nothing: below
    # this absolute KL in nats, or below this share of the largest head's KL in the model.
    # KL grows with the square of a change, so 1e-5 of the strongest head's KL is a head
    # whose output is ~300x weaker: nothing a person could measure in the predictions.
    dead_kl: float = 1e-9
    dead_kl_share: float = 1e-5


def head_patterns(weights: torch.Tensor, keep: torch.Tensor | None = None, radius: int = 2) -> dict[str, torch.Tensor]:
    """Per-head means over real query rows after the first (row 0 of a causal model can only
    attend to itself, which says nothing): `entropy` (normalised by the log of the number of
    keys the row can see), `max_weight`, and the mass on the previous token, the first real
    token, the diagonal and the local window. (B, H, T, S) -> {name: (H,)}; the positional
    ones are NaN when keys are not the queries (S != T)."""
    w = weights.float()
    B, H, T, S = w.shape
    rows = torch.ones(B, T, dtype=torch.bool) if keep is None else keep.bool().cpu()
    rows = rows.clone()
    first = rows.float().argmax(1)  # (B,) first real position
    rows[torch.arange(B), first] = False
    support = (w > 0).sum(-1)  # (B, H, T) keys the row can see
    ent = -(w * w.clamp_min(1e-30).log()).sum(-1) / support.clamp_min(2).float().log()
    out = {
        "entropy": _mean(ent, rows[:, None] & (support > 1)),
        "max_weight": _mean(w.amax(-1), rows[:, None].expand(B, H, T)),
    }
    if S != T:
        nan = torch.full((H,), math.nan)
        return out | {k: nan for k in ("previous_token", "first_token", "diagonal", "local")}
    i = torch.arange(T)
    prev = F.pad(w.diagonal(-1, -2, -1), (1, 0))  # (B, H, T): weight on i - 1 (0 at row 0)
    near = (i[:, None] - i[None, :]).abs() <= radius  # (T, S)
    first_w = w.gather(-1, first.view(B, 1, 1, 1).expand(B, H, T, 1)).squeeze(-1)
    live = rows[:, None].expand(B, H, T)
    return out | {
        "previous_token": _mean(prev, live),
        "first_token": _mean(first_w, live),
        "diagonal": _mean(w.diagonal(0, -2, -1), live),
        "local": _mean((w * near).sum(-1), live),
    }


def induction_scores(weights: torch.Tensor, half: int) -> torch.Tensor:
    """(H,) mean weight from each query in the second copy of [r, r] (length 2 * half) to
    the token after its earlier occurrence, i - half + 1: what an induction head attends to."""
    w = weights.float()
    i = torch.arange(half, 2 * half)
    return w[:, :, i, i - half + 1].mean(dim=(0, 2))


def head_labels(row: dict, t: HeadThresholds) -> list[str]:
    """The labels a head's numbers earn; none for a head with no clear pattern."""
    labels = []
    for name, key in (("previous_token", "previous_token"), ("first_token_sink", "first_token"), ("self", "diagonal")):
        if _over(row.get(key), t.position_mass):
            labels.append(name)
    if not labels and _over(row.get("local"), t.local_mass):
        labels.append("local")
    if not labels and _over(row.get("entropy"), t.uniform_entropy):
        labels.append("uniform")
    if _over(row.get("induction"), t.induction):
        labels.append("induction")
    if row.get("dead"):
        labels.append("dead")
    return labels


def dead_heads(kls: list[float | None], t: HeadThresholds) -> list[bool]:
    """Which heads change nothing when zeroed, against the largest effect in the model."""
    known = [k for k in kls if k is not None]
    bar = max(t.dead_kl, t.dead_kl_share * max(known)) if known else t.dead_kl
    return [k is not None and k <= bar for k in kls]


def _mean(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(B, H, T) values averaged over the True entries of `where` per head -> (H,)."""
    where = where.expand(x.shape)
    n = where.sum(dim=(0, 2))
    total = torch.where(where, x, torch.zeros_like(x)).sum(dim=(0, 2))
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, math.nan))


def _over(value: float | None, bar: float) -> bool:
    return value is not None and not math.isnan(value) and value >= bar
