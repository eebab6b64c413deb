"""HotFlip (Ebrahimi et al., 2018): the single-token swaps that most change a prediction.

A swap at position i from token a to token b changes the embedding output by E[b] - E[a];
to first order it changes the predicted token's log-probability by (E[b] - E[a]) . g_i, with
g_i that log-probability's gradient at position i. One backward pass therefore ranks every
(position, token) swap at once. The best candidates are then *verified* by a forward each
(the first-order estimate is only a guide), and compared with as many random swaps.

    result = hotflip(adapted, input_ids, generator=torch.Generator().manual_seed(0))
    result.swaps[0]  # Swap(row, position, old, new, kl, flipped, estimate)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.adapters import AdaptedModel
from utils.analysis.hooks import embedding_output, feed_embedding
from utils.analysis.locate import embedding_table
from utils.analysis.predictions import kl_divergence, target_log_probs
from utils.vocabulary import token_embedding

# Candidates per row verified by a forward: the first-order ranking is good at the top and
# noisy below, so a handful of verified swaps beats many estimated ones.
CANDIDATES_PER_ROW = 8
# Random swaps per row to compare with.
RANDOM_PER_ROW = 8


@dataclass
class Swap:
    """One verified swap: `kl` is KL(clean || swapped) of the explained prediction, in nats."""

    row: int
    position: int
    old: int
    new: int
    kl: float
    flipped: bool  # the most likely token changed
    estimate: float  # first-order estimate of the drop in the predicted token's log-prob


@dataclass
class HotFlipResult:
    swaps: list[Swap]  # the verified HotFlip swaps, largest KL first
    random: list[Swap]  # as many random swaps, verified the same way
    embedding: str

    @property
    def hotflip_kl(self) -> float:
        return _mean([s.kl for s in self.swaps])

    @property
    def random_kl(self) -> float:
        return _mean([s.kl for s in self.random])

    @property
    def flip_rate(self) -> float:
        return _mean([float(s.flipped) for s in self.swaps])

    @property
    def random_flip_rate(self) -> float:
        return _mean([float(s.flipped) for s in self.random])


def hotflip(
    adapted: AdaptedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    generator: torch.Generator,
    candidates: int = CANDIDATES_PER_ROW,
    n_random: int = RANDOM_PER_ROW,
    id_high: int | None = None,
) -> HotFlipResult:
    """HotFlip and random single-token swaps for each row's prediction (see target_position),
    every swap verified by a forward. Tokens are drawn from [0, id_high) (default: the
    vocabulary). Call with the model in eval mode; the model is not changed."""
    p = adapted.profile
    high = id_high or p.vocab_size
    found = token_embedding(adapted.model, p.vocab_size)
    if found is None or not high:
        raise ValueError("HotFlip needs a token embedding and a known vocabulary size")
    name, emb = found
    keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    with torch.no_grad():
        clean = target_log_probs(adapted(input_ids, attention_mask), p.task, p.output_kind)
    targets = clean.argmax(-1)  # (B,)
    grad = _gradient(adapted, emb, input_ids, attention_mask, targets)  # (B, T, C)
    table = embedding_table(emb, high)[:high].to(grad.dtype)  # (V, C)
    picked = []
    for row in range(input_ids.shape[0]):
        picked += _best_candidates(row, input_ids[row], keep[row], grad[row], table, candidates)
    rand = [
        _random_swap(row, input_ids[row], keep[row], high, generator)
        for row in range(input_ids.shape[0])
        for _ in range(n_random)
    ]
    swaps = _verify(adapted, input_ids, attention_mask, clean, picked)
    return HotFlipResult(
        sorted(swaps, key=lambda s: -s.kl),
        _verify(adapted, input_ids, attention_mask, clean, [(r, i, a, b, 0.0) for r, i, a, b in rand]),
        name,
    )


def _gradient(
    adapted: AdaptedModel, emb, ids: torch.Tensor, mask: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    """(B, T, C) gradient of each row's predicted log-probability w.r.t. the embedding output."""
    p = adapted.profile
    leaf = embedding_output(adapted, emb, ids, mask, p.batch_first).clone().requires_grad_(True)
    with torch.enable_grad(), feed_embedding(emb, leaf, p.batch_first):
        lp = target_log_probs(adapted(ids, mask), p.task, p.output_kind)
        f = lp.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(f, leaf, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad.detach()


def _best_candidates(
    row: int, ids: torch.Tensor, keep: torch.Tensor, grad: torch.Tensor, table: torch.Tensor, k: int
) -> list[tuple[int, int, int, int, float]]:
    """The k (row, position, old, new, estimate) swaps with the largest estimated drop of the
    predicted token's log-probability: drop = (E[old] - E[new]) . g."""
    current = (table[ids] * grad).sum(-1)  # (T,) E[old] . g
    drop = current[:, None] - grad @ table.T  # (T, V)
    drop[~keep] = -float("inf")
    drop[torch.arange(len(ids)), ids] = -float("inf")  # swapping a token for itself is no swap
    top = drop.flatten().topk(min(k, drop.numel())).indices
    V = table.shape[0]
    return [
        (row, int(i) // V, int(ids[int(i) // V]), int(i) % V, float(drop.flatten()[i]))
        for i in top
        if torch.isfinite(drop.flatten()[i])
    ]


def _random_swap(
    row: int, ids: torch.Tensor, keep: torch.Tensor, high: int, generator: torch.Generator
) -> tuple[int, int, int, int]:
    real = keep.nonzero().flatten().cpu()
    pos = int(real[torch.randint(len(real), (1,), generator=generator)])
    old = int(ids[pos])
    new = (old + int(torch.randint(1, high, (1,), generator=generator))) % high
    return row, pos, old, new


def _verify(
    adapted: AdaptedModel,
    ids: torch.Tensor,
    mask: torch.Tensor | None,
    clean: torch.Tensor,
    swaps: list[tuple[int, int, int, int, float]],
) -> list[Swap]:
    """Run every swapped sequence (in one batch) and measure the change it really makes."""
    if not swaps:
        return []
    p = adapted.profile
    rows = torch.stack([ids[r] for r, *_ in swaps]).clone()
    for j, (_, pos, _, new, _) in enumerate(swaps):
        rows[j, pos] = new
    rmask = torch.stack([mask[r] for r, *_ in swaps]) if mask is not None else None
    with torch.no_grad():
        lp = target_log_probs(adapted(rows, rmask), p.task, p.output_kind)
    base = clean[[r for r, *_ in swaps]]
    kl = kl_divergence(base, lp)
    flipped = base.argmax(-1) != lp.argmax(-1)
    return [
        Swap(r, pos, old, new, float(kl[j]), bool(flipped[j]), est) for j, (r, pos, old, new, est) in enumerate(swaps)
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
