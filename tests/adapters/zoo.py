"""Small models in every calling convention the adapter must handle, some broken on purpose."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

V, D, L = 97, 32, 16  # vocabulary, width and context all differ from probe shapes


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int = D, heads: int = 4, block: int = L, causal: bool = True):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads
        self.causal = causal

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, H, T, T)
        if self.causal:
            future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
            att = att.masked_fill(future, float("-inf"))
        if key_padding is not None:  # (B, T) True = pad
            att = att.masked_fill(key_padding[:, None, None, :], float("-inf"))
        att = torch.nan_to_num(F.softmax(att, dim=-1))
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, causal: bool = True):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = CausalSelfAttention(causal=causal)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x, key_padding=None):
        x = x + self.attn(self.ln1(x), key_padding)
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Correct causal LM, HF-style call: forward(input_ids, attention_mask=None) -> (B, T, V)."""

    def __init__(self, n_layer: int = 2, causal: bool = True):
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(L, D)
        self.blocks = nn.ModuleList(Block(causal) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        kp = None if attention_mask is None else attention_mask == 0
        for b in self.blocks:
            x = b(x, kp)
        return self.head(self.ln_f(x))


class NanoGPT(nn.Module):
    """nanoGPT's contract: forward(idx, targets=None) -> (logits, loss); without targets,
    logits for the last position only."""

    def __init__(self):
        super().__init__()
        self.block_size = L
        self.wte = nn.Embedding(V, D)
        self.wpe = nn.Embedding(L, D)
        self.h = nn.ModuleList(Block() for _ in range(2))
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, V, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)
        return logits, loss


class SeqFirstLM(nn.Module):
    """The PyTorch tutorial layout: forward(src (T, B), src_mask=None) -> (T, B, V)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.pe = nn.Parameter(torch.randn(L, 1, D) * 0.02)
        layer = nn.TransformerEncoderLayer(D, 4, 64, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(D, V)

    def forward(self, src, src_mask=None):
        T = src.shape[0]
        if src_mask is None:
            src_mask = nn.Transformer.generate_square_subsequent_mask(T, device=src.device)
        x = self.emb(src) + self.pe[:T]
        return self.out(self.encoder(x, mask=src_mask, is_causal=True))


class BatchMixingLM(nn.Module):
    """Broken: nn.MultiheadAttention without batch_first fed (B, T, D) attends across rows."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.pos = nn.Embedding(L, D)
        self.attn = nn.MultiheadAttention(D, 4)
        self.out = nn.Linear(D, V)

    def forward(self, input_ids):
        T = input_ids.shape[1]
        x = self.emb(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        return self.out(x + self.attn(x, x, x, need_weights=False)[0])


class LogSoftmaxLM(TinyGPT):
    def forward(self, input_ids, attention_mask=None):
        return F.log_softmax(super().forward(input_ids, attention_mask), dim=-1)


class PadTrueLM(TinyGPT):
    """PyTorch mask convention: forward(x, key_padding_mask) with True = pad."""

    def forward(self, x, key_padding_mask=None):
        T = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(T, device=x.device))
        for b in self.blocks:
            h = b(h, key_padding_mask)
        return self.head(self.ln_f(h))


class DictOutputLM(TinyGPT):
    def forward(self, input_ids, attention_mask=None):
        return {"loss": None, "logits": super().forward(input_ids, attention_mask)}


class TupleOutputLM(TinyGPT):
    def forward(self, input_ids, attention_mask=None):
        return (super().forward(input_ids, attention_mask), torch.zeros(()))


class Classifier(nn.Module):
    def __init__(self, classes: int = 7):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.head = nn.Linear(D, classes)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)  # (B, T, D)
        if attention_mask is not None:
            w = attention_mask.unsqueeze(-1).float()
            return self.head((h * w).sum(1) / w.sum(1).clamp(min=1))
        return self.head(h.mean(1))
