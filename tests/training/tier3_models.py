"""Tiny models for the training tests: a correct causal LM, and models built to fail Tier 3's
checks. Only torch is imported: export copies this file as an export's model.py."""

from __future__ import annotations

import torch
from torch import nn


class TinyLM(nn.Module):
    """A correct one-block causal decoder with tied input and output embeddings."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, d_model: int = 32,
                 dropout: float = 0.0):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_seq_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.block = nn.TransformerEncoderLayer(d_model, 2, 4 * d_model, dropout, batch_first=True,
                                                norm_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        mask = torch.triu(torch.full((max_seq_len, max_seq_len), float("-inf")), diagonal=1)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))  # (B, T, C)
        x = self.block(self.drop(x), src_mask=self.causal[:T, :T])
        return self.head(self.norm(x))  # (B, T, V)


class NoisyBufferLM(TinyLM):
    """Adds a random, non-persistent buffer to its logits: the saved weights cannot
    reproduce it, so a reloaded copy gives different logits (export parity fails)."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, d_model: int = 32):
        super().__init__(vocab_size, max_seq_len, d_model)
        self.register_buffer("noise", torch.randn(vocab_size), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) + self.noise


class BlindLM(nn.Module):
    """Logits that ignore the input: a learned unigram table. It learns token frequencies
    and nothing else, so it cannot get far below the unigram entropy."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.embed = nn.Embedding(vocab_size, 8)  # unused by forward's result but for shape
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        zero = self.embed(input_ids).sum() * 0.0
        return self.bias.expand(B, T, -1) + zero  # (B, T, V)


class DivergingLM(TinyLM):
    """Learns like TinyLM, but in training adds noise to its logits that grows every step:
    the training loss falls at first, then climbs far above its low point."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, d_model: int = 32):
        super().__init__(vocab_size, max_seq_len, d_model)
        self.calls = 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids)
        if not self.training:
            return logits
        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        noise = torch.randn(logits.shape, generator=g).to(logits.device)
        return logits + 0.25 * self.calls * noise


class NaNLM(TinyLM):
    """Correct for `after` training forwards, then every logit is NaN."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, after: int = 2):
        super().__init__(vocab_size, max_seq_len)
        self.after, self.calls = after, 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids)
        self.calls += self.training
        return logits * float("nan") if self.calls > self.after else logits
