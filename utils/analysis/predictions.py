"""What the analyses compare: the model's predicted distributions, as log-probabilities, and
the distance between two of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log_probs(logits: torch.Tensor, output_kind: str = "logits") -> torch.Tensor:
    """Log-probabilities over the last axis, whatever the model returns (logits, log-probs
    or probabilities)."""
    x = logits.float()
    if output_kind == "probs":
        return x.clamp_min(1e-30).log()
    return F.log_softmax(x, dim=-1)


def target_position(task: str, T: int) -> int:
    """The position whose prediction the single-target analyses explain: the last one for a
    causal LM (the next token), the middle one for a masked LM or an encoder (it sees context
    on both sides). Classifiers have one prediction per row and no position."""
    return T - 1 if task == "causal_lm" else T // 2


def target_log_probs(logits: torch.Tensor, task: str, output_kind: str = "logits") -> torch.Tensor:
    """(B, K) log-probabilities of the one prediction per row that attribution and HotFlip
    explain (see target_position)."""
    if logits.dim() == 3:
        logits = logits[:, target_position(task, logits.shape[1])]
    return log_probs(logits, output_kind)


def all_log_probs(logits: torch.Tensor, output_kind: str = "logits", keep: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) every prediction of the batch (each position of an LM), padding left out when
    `keep` (B, T) says which positions are real."""
    lp = log_probs(logits, output_kind)
    if lp.dim() == 3:
        if keep is not None:
            return lp[keep.bool()]
        return lp.reshape(-1, lp.shape[-1])
    return lp


def kl_divergence(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """(N,) KL(clean || other) in nats between rows of log-probabilities. Identical rows give
    exactly 0 (every term is p * 0)."""
    p = clean.exp()
    terms = torch.where(p > 0, p * (clean - other), torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0)


def flip_rate(clean: torch.Tensor, other: torch.Tensor) -> float:
    """Share of predictions whose most likely token changed."""
    return float((clean.argmax(-1) != other.argmax(-1)).float().mean()) if clean.numel() else 0.0
