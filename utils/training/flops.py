"""FLOPs of a training step and the peak FLOP/s of common GPUs, for model FLOPs
utilisation (MFU): achieved model FLOP/s over the device's peak."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from utils.adapters.losses import lm_loss

# Dense bf16/fp16 tensor-core peaks (no sparsity), FLOP/s, by a name fragment of
# torch.cuda.get_device_name(); the first fragment found in the name wins.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 125e12),
    ("A10", 125e12),
    ("A6000", 155e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
    ("T4", 65e12),
)


def peak_flops(device: torch.device) -> float | None:
    """The assumed peak for `device`, or None for a GPU not in the table."""
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


def flops_per_token(model: nn.Module, batch: dict[str, torch.Tensor], task: str, device: torch.device) -> float:
    """Forward + backward FLOPs of one batch, counted by torch's FlopCounterMode, per
    token (an encoder-decoder's source and target both count); the gradients it makes are
    dropped."""
    was_training = model.training
    model.to(device).train()
    ids = batch["input_ids"].to(device)
    mask = batch.get("attention_mask")
    labels = batch.get("labels", ids).to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        mask = mask.to(device) if mask is not None else None
        logits = model(ids, mask, target_ids=labels) if task == "seq2seq" else model(ids, mask)
        loss, _ = lm_loss(
            logits, labels, task, getattr(model, "profile", None) and model.profile.output_kind or "logits"
        )
        loss.backward()
    for p in model.parameters():
        p.grad = None
    model.train(was_training)
    tokens = ids.numel() + (labels.numel() if task == "seq2seq" else 0)
    return counter.get_total_flops() / tokens
