"""Small models for the Tier 1 tests: one correct model that passes every check, and models
each built to break one check the way people really break it.

They start from the correct `TinyGPT` of the adapter tests (vocabulary 97, width 32,
context 16) and change one thing each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.adapters.zoo import Block, CausalSelfAttention, D, L, TinyGPT, V


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


class LateLeakGPT(TinyGPT):
    """Three blocks, the last one's attention without a causal mask: the first two are right,
    so the future reaches the logits through one later layer only."""

    def __init__(self) -> None:
        super().__init__(n_layer=3)
        self.blocks[2].attn.causal = False


class LateLeakNet(LateLeakGPT):
    """The same leak under a name that says nothing about causality: the adapter can only
    judge the task by behaviour, and the leak makes it look like a masked LM."""


class PeekAttention(CausalSelfAttention):
    """A causal mask off by one, `torch.triu(..., diagonal=2)`: position t also sees t+1."""

    def forward(self, x, key_padding=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (C // self.heads) ** 0.5
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 2), float("-inf"))
        if key_padding is not None:
            att = att.masked_fill(key_padding[:, None, None, :], float("-inf"))
        att = torch.nan_to_num(F.softmax(att, dim=-1))
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, C))


class PeekAheadGPT(TinyGPT):
    """Every attention uses the off-by-one mask of PeekAttention."""

    def __init__(self) -> None:
        super().__init__()
        for b in self.blocks:
            b.attn = PeekAttention()


class IgnoresMaskLM(TinyGPT):
    """Takes `attention_mask` and never uses it."""

    def forward(self, input_ids, attention_mask=None):
        return super().forward(input_ids)


class IgnoresMaskEncoder(IgnoresMaskLM):
    """A bidirectional encoder that takes `attention_mask` and never uses it: right pads
    reach every real position."""

    def __init__(self) -> None:
        super().__init__()
        for b in self.blocks:
            b.attn.causal = False


class InvertedMaskLM(TinyGPT):
    """Treats `attention_mask == 1` (the real tokens) as padding."""

    def forward(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        pad = None if attention_mask is None else attention_mask == 1
        for b in self.blocks:
            x = b(x, pad)
        return self.head(self.ln_f(x))


class InvertedPadTrueLM(TinyGPT):
    """Takes PyTorch's `key_padding_mask` (True = pad) and negates it before use."""

    def forward(self, input_ids, key_padding_mask=None):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        pad = None if key_padding_mask is None else ~key_padding_mask.bool()
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

    def forward(self, input_ids):
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

    def forward(self, input_ids):
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

    def forward(self, input_ids):
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

    def forward(self, input_ids):
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

    def forward(self, input_ids):
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

    def forward(self, input_ids):
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

    def forward(self, input_ids):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x @ self.mix))


class PositionLoopLM(TinyGPT):
    """Correct but slow: runs the blocks once per position on the prefix (a generation loop
    written as forward)."""

    def forward(self, input_ids):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        outs = []
        for t in range(T):
            h = x[:, : t + 1]
            for b in self.blocks:
                h = b(h)
            outs.append(h[:, -1])
        return self.head(self.ln_f(torch.stack(outs, dim=1)))


class CausalMask(nn.Module):
    """Returns the additive causal mask: -inf above the diagonal."""

    def forward(self, T: int, device: torch.device) -> torch.Tensor:
        return torch.triu(torch.full((T, T), float("-inf"), device=device), 1)


class PortableIdiomsLM(nn.Module):
    """Correct, in the ways people write it: position ids moved with `.to(idx.device)`,
    constants made with `torch.tensor(..., device=)` and `new_tensor`, and a module that returns
    a -inf mask (a mask, not an overflow)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(L, D)
        self.causal = CausalMask()
        layer = nn.TransformerEncoderLayer(D, 4, 2 * D, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(D, V)

    def forward(self, input_ids):
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T).to(input_ids.device))
        x = x * torch.tensor(D**0.5, device=x.device) / input_ids.new_tensor([D]).sqrt()
        mask = self.causal(T, x.device)
        return self.head(self.encoder(x, mask=mask, is_causal=True))


class NeedsUnknownArgs(nn.Module):
    """forward takes arguments no adapter can guess."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, alpha, beta):
        return self.lin(alpha) + beta


class TinySeq2Seq(nn.Module):
    """A correct encoder-decoder in the Hugging Face calling convention: forward(input_ids,
    attention_mask, decoder_input_ids) -> logits over the decoder's positions. `peek`: the
    decoder's self-attention has no causal mask; `ignore_mask`: the source mask is dropped."""

    def __init__(self, peek: bool = False, ignore_mask: bool = False) -> None:
        super().__init__()
        self.max_seq_len = L
        self.peek, self.ignore_mask = peek, ignore_mask
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(L, D)
        self.encoder = nn.ModuleList([Block(causal=False)])
        self.decoder = Block(causal=not peek)
        self.cross = nn.MultiheadAttention(D, 4, batch_first=True)
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, V, bias=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None):
        pad = None if attention_mask is None or self.ignore_mask else attention_mask == 0
        memory = self.embed(input_ids)  # (B, S, D)
        for b in self.encoder:
            memory = b(memory, pad)
        x = self.decoder(self.embed(decoder_input_ids))  # (B, T, D)
        x = x + self.cross(x, memory, memory, key_padding_mask=pad, need_weights=False)[0]
        return self.head(self.ln_f(x))


class PeekingDecoderSeq2Seq(TinySeq2Seq):
    """The decoder's self-attention lacks its causal mask: position s reads the target at s."""

    def __init__(self) -> None:
        super().__init__(peek=True)


class SourceMaskIgnoredSeq2Seq(TinySeq2Seq):
    """Takes the source's attention_mask and drops it: pads reach every target position."""

    def __init__(self) -> None:
        super().__init__(ignore_mask=True)
