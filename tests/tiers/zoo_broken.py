"""Small models for the Tier 1 tests: one correct model that passes every check, and models
each built to break one check the way people really break it.

They start from the correct `TinyGPT` of the adapter tests (vocabulary 97, width 32,
context 16) and change one thing each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.adapters.zoo import D, L, TinyGPT, V


class CheckedGPT(TinyGPT):
    """The reference: TinyGPT plus embedding dropout and a clear error for a sequence longer
    than its context."""

    def __init__(self) -> None:
        super().__init__()
        self.max_seq_len = L
        self.drop = nn.Dropout(0.1)

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        if T > self.max_seq_len:
            raise ValueError(f"sequence of {T} tokens; CheckedGPT takes at most {self.max_seq_len}")
        x = self.drop(self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device)))
        pad = None if attention_mask is None else attention_mask == 0
        for b in self.blocks:
            x = b(x, pad)
        return self.head(self.ln_f(x))


class NoCausalMaskGPT(TinyGPT):
    """A GPT whose attention has no causal mask: every position sees the whole sequence."""

    def __init__(self) -> None:
        super().__init__(causal=False)


class IgnoresMaskLM(TinyGPT):
    """Takes `attention_mask` and never uses it."""

    def forward(self, input_ids, attention_mask=None):
        return super().forward(input_ids)


class InvertedMaskLM(TinyGPT):
    """Treats `attention_mask == 1` (the real tokens) as padding."""

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        pad = None if attention_mask is None else attention_mask == 1
        for b in self.blocks:
            x = b(x, pad)
        return self.head(self.ln_f(x))


class MHACausalPadLM(nn.Module):
    """Two nn.MultiheadAttention layers with a boolean causal mask plus a key padding mask:
    right in training, but under no_grad their fast path makes the pad queries of a
    left-padded row NaN, and the second layer spreads the NaN to the real positions."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(L, D)
        self.attn = nn.ModuleList(nn.MultiheadAttention(D, 4, batch_first=True) for _ in range(2))
        self.head = nn.Linear(D, V)

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
        pad = None if attention_mask is None else attention_mask == 0
        for attn in self.attn:
            x = x + attn(x, x, x, attn_mask=causal, key_padding_mask=pad, need_weights=False)[0]
        return self.head(x)


class EvalDropoutLM(TinyGPT):
    """F.dropout without training=self.training: dropout also runs in eval mode."""

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        x = F.dropout(x, 0.1)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


class DropoutNeverAppliedLM(TinyGPT):
    """Declares a dropout module but never calls it."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.1)


class NaNLM(TinyGPT):
    """Takes the log of a LayerNorm output, which is negative half the time."""

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        for b in self.blocks:
            x = b(x)
        return self.head(torch.log(self.ln_f(x)))


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Fp16OverflowLM(TinyGPT):
    """Scales the hidden state up by 1e5 before the final norm: fine in float32, too large
    for float16."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = Scale(1e5)

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(self.scale(x)))


class UnusedLayerLM(TinyGPT):
    """Builds a decoder in __init__ that forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.Linear(D, V)


class ExtraBranchLM(TinyGPT):
    """Adds `gain * extra(x)` before the head: a zero gain starves `extra` of gradient, a tiny
    one makes its gradient vanish next to every other layer's."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.extra = nn.Linear(D, D)
        self.gain = nn.Parameter(torch.full((1,), gain), requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x + self.gain * self.extra(x)))


class ZeroGateLM(ExtraBranchLM):
    def __init__(self) -> None:
        super().__init__(0.0)


class VanishingBranchLM(ExtraBranchLM):
    def __init__(self) -> None:
        super().__init__(1e-9)


class HugeInitLM(TinyGPT):
    """Initialises the output head with std 5 instead of ~1/sqrt(width)."""

    def __init__(self) -> None:
        super().__init__()
        nn.init.normal_(self.head.weight, std=5.0)


class DataTiedLM(TinyGPT):
    """Ties the head to the embedding by sharing `.data`, which `.to()` silently undoes."""

    def __init__(self) -> None:
        super().__init__()
        self.head.weight.data = self.tok.weight.data


class FixedDeviceLM(TinyGPT):
    """Makes its position ids with torch.arange(T), always on the CPU."""

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


class PlainAttributeLM(TinyGPT):
    """Keeps a tensor as a plain attribute (never used), so .to() and saving skip it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale_table = torch.ones(D)


class ShortPositionLM(TinyGPT):
    """Says its context is 16 tokens but has a position table of 8 rows."""

    def __init__(self) -> None:
        super().__init__()
        self.block_size = L
        self.pos = nn.Embedding(L // 2, D)


class PositionOnlyLM(TinyGPT):
    """Forgets to add the token embedding: the output depends on positions only."""

    def forward(self, input_ids, attention_mask=None):
        B, T = input_ids.shape
        x = self.pos(torch.arange(T, device=input_ids.device)).expand(B, T, D)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


class UnshiftedLossLM(TinyGPT):
    """Hugging Face-style `labels`, but the loss compares position t with label t."""

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = super().forward(input_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
        return {"loss": loss, "logits": logits}


class ShiftedLossLM(TinyGPT):
    """The same with the shift done right."""

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = super().forward(input_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))
        return {"loss": loss, "logits": logits}


class UnsavedRandomLM(TinyGPT):
    """Mixes the hidden state with a random matrix kept in a non-persistent buffer: every
    instance draws another one and none is saved."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mix", torch.randn(D, D) / D**0.5, persistent=False)

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x @ self.mix))


class PositionLoopLM(TinyGPT):
    """Correct but slow: runs the blocks once per position on the prefix (a generation loop
    written as forward)."""

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        outs = []
        for t in range(T):
            h = x[:, : t + 1]
            for b in self.blocks:
                h = b(h)
            outs.append(h[:, -1])
        return self.head(self.ln_f(torch.stack(outs, dim=1)))


class NeedsUnknownArgs(nn.Module):
    """forward takes arguments no adapter can guess."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, alpha, beta):
        return self.lin(alpha) + beta
