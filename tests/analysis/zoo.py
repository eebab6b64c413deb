"""Tiny models built to show (or not show) what each Tier 2 analysis looks for."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

V, D, L = 211, 24, 24  # vocabulary, width and context all differ from the analysis batch (4)


class Attention(nn.Module):
    """Hand-written causal softmax attention."""

    def __init__(self, d: int = D, heads: int = 4):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.qkv(x).split(C, 2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.heads)  # (B, H, T, T)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
        att = F.softmax(att.masked_fill(future, float("-inf")), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LN block; `collapse=True` makes it map every position to the same vector (the
    sequence mean), the failure representation_health must name."""

    def __init__(self, collapse: bool = False):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = Attention()
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
        self.collapse = collapse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        if self.collapse:
            return x.mean(dim=1, keepdim=True).expand_as(x)  # (B, T, C): one vector for all
        return x


class TinyLM(nn.Module):
    """A correct small causal LM: forward(input_ids, attention_mask=None) -> (B, T, V)."""

    def __init__(self, n_layer: int = 3, collapse_at: int | None = None, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.max_seq_len = L
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(L, D)
        self.blocks = nn.ModuleList(Block(collapse=i == collapse_at) for i in range(n_layer))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, V, bias=False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        return self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(input_ids)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


class IgnoresTokensLM(TinyLM):
    """Broken: the token embedding's output is multiplied by zero, so only positions reach the
    blocks and no prediction depends on the input."""

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        return 0.0 * self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))


class TriggerBagLM(nn.Module):
    """A causal bag of words in which two trigger tokens have huge, opposite embeddings: a
    single swap to a trigger moves any prediction a lot, a random swap almost never does."""

    TRIGGERS = (7, 8)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.max_seq_len = L
        self.tok = nn.Embedding(V, D)
        self.head = nn.Linear(D, V)
        with torch.no_grad():
            self.tok.weight.normal_(0, 0.02)
            u = F.normalize(torch.randn(D), dim=0)
            self.tok.weight[7] = 4 * u
            self.tok.weight[8] = -4 * u

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok(input_ids)  # (B, T, C)
        counts = torch.arange(1, x.shape[1] + 1, device=x.device)[None, :, None]
        return self.head(x.cumsum(1) / counts)  # (B, T, V): mean of the tokens so far


class ClonedHeadLM(TinyLM):
    """Broken: the output layer was meant to be tied to the token embedding, but holds a copy
    (`nn.Parameter(tok.weight.clone())`), so the two drift apart in training."""

    def __init__(self):
        super().__init__()
        self.head.weight = nn.Parameter(self.tok.weight.detach().clone())


class CopiedBlocksLM(TinyLM):
    """Every block a deep copy of the first: identical at initialisation by construction (as
    nn.TransformerEncoder builds its layers), which is normal until the model is trained."""

    def __init__(self):
        super().__init__()
        for b in self.blocks[1:]:
            b.load_state_dict(self.blocks[0].state_dict())


class CopyingLM(TinyLM):
    """Looks trained on Tier 2's random input: each position predicts the token half a sequence
    back (confidently), which is exactly the next token of a random sequence said twice."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        shift = (input_ids.shape[1] + 1) // 2 - 1  # position t predicts the token at t - shift
        earlier = F.pad(input_ids, (shift, 0))[:, : input_ids.shape[1]]  # causal: only the past
        return super().forward(input_ids, attention_mask) + 30 * F.one_hot(earlier, V)


class TrainedCopiesLM(CopyingLM, CopiedBlocksLM):
    """Looks trained, and its blocks are still identical copies: one of them never learned."""
