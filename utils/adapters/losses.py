"""Training losses by task. Kept apart from the Lightning module so checks that only need a
loss do not pay for importing Lightning."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.vocabulary import IGNORE_INDEX


def lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, task: str, output_kind: str = "logits"
) -> tuple[torch.Tensor, int]:
    """Mean loss over scored positions and how many there were.

    causal_lm: logits (B, T, V), labels (B, T) aligned with the input; shifted here by one.
    masked_lm: labels (B, T), -100 everywhere but the masked positions.
    classification: logits (B, C), labels (B,).
    seq2seq: logits (B, S, V) over the target, labels (B, S) the target itself (the decoder
    was given it shifted right, so position s already predicts labels[:, s]).
    """
    if task == "causal_lm":
        logits, labels = logits[:, :-1], labels[:, 1:]  # (B, T-1, V), (B, T-1): t predicts t+1
    elif task not in ("masked_lm", "classification", "seq2seq"):
        raise ValueError(
            f"no training loss for task {task!r}; use causal_lm, masked_lm, "
            "classification or seq2seq (adapt(..., task=...))"
        )
    flat = logits.reshape(-1, logits.shape[-1]).float()  # (N, V) or (B, C)
    target = labels.reshape(-1)  # (N,) or (B,)
    if output_kind == "probs":
        flat = flat.clamp_min(1e-12).log()  # log-probs, which cross_entropy leaves unchanged
    n = int((target != IGNORE_INDEX).sum())
    loss = F.cross_entropy(flat, target, ignore_index=IGNORE_INDEX)
    return loss, n
