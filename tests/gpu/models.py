"""Small language models for the GPU tests: a correct one, and two built to trip what only
shows on a GPU (a tensor made on the CPU inside forward; a Python loop over positions)."""

from __future__ import annotations

import torch
from torch import nn

V, D, T_MAX = 128, 64, 32


class TinyLM(nn.Module):
    """Correct causal LM: forward(input_ids, attention_mask=None) -> (B, T, V)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(T_MAX, D)
        layer = nn.TransformerEncoderLayer(D, 4, 4 * D, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(D, V, bias=False)

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > T_MAX:
            raise ValueError(f"sequence of {input_ids.shape[1]} tokens is longer than max_seq_len {T_MAX}")
        return torch.arange(input_ids.shape[1], device=input_ids.device)

    def run(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        T = x.shape[1]
        # float masks with a finite "never": a left-padded row's all-masked pad queries stay finite
        never = torch.finfo(x.dtype).min / 2
        causal = torch.zeros(T, T, device=x.device).masked_fill(
            torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), never
        )
        pad = None if attention_mask is None else torch.zeros_like(x[..., 0]).masked_fill(attention_mask == 0, never)
        return self.blocks(x, mask=causal, src_key_padding_mask=pad, is_causal=True)  # (B, T, D)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok(input_ids) + self.pos(self.positions(input_ids))  # (B, T, D)
        return self.head(self.run(x, attention_mask))  # (B, T, V)


class FixedDeviceLM(TinyLM):
    """Makes its position ids with torch.arange(T): always on the CPU."""

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.arange(input_ids.shape[1])  # on the CPU, whatever the model's device


class PositionLoopLM(TinyLM):
    """Correct but slow on a GPU: runs the blocks once per prefix."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok(input_ids) + self.pos(self.positions(input_ids))  # (B, T, D)
        last = [self.run(x[:, : t + 1], None)[:, -1] for t in range(x.shape[1])]  # T x (B, D)
        return self.head(torch.stack(last, dim=1))  # (B, T, V)
