"""Tiny models for the training tests, some broken on purpose."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

V, D, T = 61, 32, 24  # vocabulary, width, context


class TinyLM(nn.Module):
    """A correct causal LM: one causal attention layer and an MLP, (B, T) -> (B, T, V)."""

    def __init__(self, vocab_size: int = V, max_seq_len: int = T):
        super().__init__()
        self.vocab_size, self.max_seq_len = vocab_size, max_seq_len
        self.tok = nn.Embedding(vocab_size, D)
        self.pos = nn.Embedding(max_seq_len, D)
        self.qkv = nn.Linear(D, 3 * D)
        self.mlp = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
        self.head = nn.Linear(D, vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        B, L = input_ids.shape
        x = self.tok(input_ids) + self.pos(torch.arange(L, device=input_ids.device))  # (B, L, D)
        q, k, v = self.qkv(x).split(D, dim=-1)
        x = x + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.mlp(x)
        return self.head(x)  # (B, L, V)


class Exploder(nn.Module):
    """Identity until `armed`, then multiplies by inf: the first module to go non-finite."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("inf") if self.armed else x


class NaNAfterLM(TinyLM):
    """Correct for `after` training forwards (counted from `calls = 0`), then its `blow`
    module outputs inf."""

    def __init__(self, after: int = 3):
        super().__init__()
        self.blow = Exploder()
        self.after, self.calls = after, 0

    def forward(self, input_ids, attention_mask=None):
        if self.training and torch.is_grad_enabled():
            self.calls += 1
        if self.calls > self.after:
            self.blow.armed = True
        B, L = input_ids.shape
        x = self.tok(input_ids) + self.pos(torch.arange(L, device=input_ids.device))
        x = self.blow(x)
        return self.head(x + self.mlp(x))


class OOMAboveLM(TinyLM):
    """Raises CUDA's out-of-memory error for batches larger than `limit` rows while
    training, as a GPU would."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.seen: list[int] = []

    def forward(self, input_ids, attention_mask=None):
        if self.training:
            self.seen.append(input_ids.shape[0])
            if input_ids.shape[0] > self.limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return super().forward(input_ids, attention_mask)


def token_data(n: int = 96, length: int = T, seed: int = 0) -> torch.Tensor:
    """(n, length) ids following a learnable rule (each id is the previous + 1 mod V, from a
    random start), so the loss falls well below ln V within a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, V, (n, 1), generator=g)
    return (start + torch.arange(length)) % V


class DeafLM(nn.Module):
    """Cannot learn: its logits are a fixed table; its one parameter never reaches them."""

    def __init__(self):
        super().__init__()
        self.vocab_size, self.max_seq_len = V, T
        self.unused = nn.Parameter(torch.zeros(1))
        self.register_buffer("table", torch.randn(V, generator=torch.Generator().manual_seed(0)))

    def forward(self, input_ids, attention_mask=None):
        B, L = input_ids.shape
        return self.table.expand(B, L, V) + 0.0 * self.unused  # (B, L, V)
