"""Models whose attention is known in advance: structured heads in three styles, and small
models in every attention style capture must read, each with an oracle for its weights."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

V, D, H, L = 50, 48, 6, 40  # vocabulary, width, heads, context
DH = D // H
STRONG = 8.0  # bias on a head's target key: e^8 outweighs ~3000 other keys
# head order of StructuredLM; "random" has random q/k and no bias, "dead" a zero output
HEADS = ("previous_token", "first_token_sink", "self", "induction", "random", "dead")
STYLES = ("mha", "sdpa", "softmax")


def structure_bias(ids: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) float mask: causal -inf above the diagonal plus STRONG on each head's
    target key. The induction head scores key j by whether the token before it equals the
    query token."""
    B, T = ids.shape
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    bias = torch.zeros(B, H, T, T)
    bias[:, 0] += STRONG * ((j == i - 1) | ((i == 0) & (j == 0)))
    bias[:, 1] += STRONG * (j == 0)
    bias[:, 2] += STRONG * (j == i)
    before = torch.cat([torch.full((B, 1), -1), ids[:, :-1]], dim=1)  # token before key j
    bias[:, 3] += STRONG * (before[:, None, :] == ids[:, :, None])
    return bias.masked_fill(j > i, float("-inf"))


class StructuredLM(nn.Module):
    """One attention layer whose heads are HEADS, computed as `style`: nn.MultiheadAttention
    with a float mask, F.scaled_dot_product_attention with a float mask, or by hand."""

    def __init__(self, style: str, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.style = style
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(L, D)
        wq, wk, wv, wo = (torch.randn(D, D, generator=g) / math.sqrt(D) for _ in range(4))
        rows = torch.ones(D, 1)
        rows[: 4 * DH] = 0  # structured heads score by their bias alone
        rows[4 * DH :] = 2.5  # random and dead heads: scores spread (std ~2)
        wq, wk = wq * rows, wk * rows
        wo[:, 5 * DH :] = 0  # the dead head writes nothing
        if style == "mha":
            self.attn = nn.MultiheadAttention(D, H, bias=False, batch_first=True)
            with torch.no_grad():
                self.attn.in_proj_weight.copy_(torch.cat([wq, wk, wv]))
                self.attn.out_proj.weight.copy_(wo)
        else:
            self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
            with torch.no_grad():
                for lin, w in zip((self.q, self.k, self.v, self.o), (wq, wk, wv, wo)):
                    lin.weight.copy_(w)
        self.head = nn.Linear(D, V)
        with torch.no_grad():  # every style gets the same model from the same seed
            for p in (self.tok.weight, self.pos.weight, self.head.weight, self.head.bias):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        x = self.tok(input_ids) + self.pos(torch.arange(T))  # (B, T, D)
        bias = structure_bias(input_ids)  # (B, H, T, T)
        return self.head(x + self._attend(x, bias))

    def _attend(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        if self.style == "mha":
            return self.attn(x, x, x, attn_mask=bias.reshape(B * H, T, T), need_weights=False)[0]
        q, k, v = (lin(x).view(B, T, H, DH).transpose(1, 2) for lin in (self.q, self.k, self.v))
        if self.style == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            att = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(DH) + bias, dim=-1)
            y = att @ v  # (B, H, T, DH)
        return self.o(y.transpose(1, 2).reshape(B, T, D))


class NanoSDPA(nn.Module):
    """nanoGPT's attention: flash (SDPA, is_causal) or its manual path, which keeps the
    weights it used in `seen` as the oracle."""

    def __init__(self, d: int = 32, heads: int = 4, flash: bool = True):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.heads, self.flash = heads, flash
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(torch.ones(T, T).tril() == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            self.seen = att
            y = att @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class NanoGPT(nn.Module):
    """forward(idx, targets=None) -> (logits, loss), two blocks of NanoSDPA."""

    def __init__(self, flash: bool = True):
        super().__init__()
        self.block_size = 24
        self.wte = nn.Embedding(97, 32)
        self.wpe = nn.Embedding(24, 32)
        self.h = nn.ModuleList(NanoSDPA(flash=flash) for _ in range(2))
        self.lm_head = nn.Linear(32, 97, bias=False)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for attn in self.h:
            x = x + attn(x)
        logits = self.lm_head(x)
        if targets is None:
            return logits[:, [-1]], None
        return logits, F.cross_entropy(logits.view(-1, 97), targets.view(-1))


class EncoderLM(nn.Module):
    """nn.TransformerEncoder, batch-first or seq-first (forward takes (T, B) then)."""

    def __init__(self, batch_first: bool, positions: int = 24):
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(97, 32)
        self.pe = nn.Parameter(torch.randn(positions, 32) * 0.5)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(32, 97)

    def forward(self, src, src_key_padding_mask=None):
        T = src.shape[1] if self.batch_first else src.shape[0]
        pe = self.pe[:T] if self.batch_first else self.pe[:T, None]
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        x = self.encoder(self.emb(src) + pe, mask=mask, is_causal=True, src_key_padding_mask=src_key_padding_mask)
        return self.out(x)


def mha_reference(model: nn.Module, run) -> list[torch.Tensor]:
    """Oracle for nn.MultiheadAttention: record each call's inputs, then call the module again
    itself with need_weights=True, average_attn_weights=False."""
    calls: list[tuple[nn.Module, tuple, dict]] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args, kwargs: calls.append((mod, args, dict(kwargs))), with_kwargs=True)
        for m in model.modules()
        if isinstance(m, nn.MultiheadAttention)
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    out = []
    with torch.no_grad():
        for mod, args, kwargs in calls:
            kwargs |= {"need_weights": True, "average_attn_weights": False}
            out.append(mod(*args, **kwargs)[1].float())
    return out


def hf_model(kind: str, impl: str) -> nn.Module:
    """Tiny random Hugging Face models, built offline: gpt2, bert or llama (grouped-query)."""
    import transformers as tf

    small = {
        "vocab_size": 99,
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
    }
    if kind == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=99, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
        )
        cls = tf.GPT2LMHeadModel
    elif kind == "bert":
        cfg, cls = tf.BertConfig(intermediate_size=64, **small), tf.BertForMaskedLM
    else:
        cfg = tf.LlamaConfig(intermediate_size=64, num_key_value_heads=2, **small)
        cls = tf.LlamaForCausalLM
    cfg._attn_implementation = impl
    torch.manual_seed(0)
    return cls(cfg).eval()


class VariantAttention(nn.Module):
    """Attention written the ways people write it; `seen` keeps the true weights (the
    oracle). einsum: both products as einsum; bmm, baddbmm: (B * H, T, d) batches; exp: softmax by
    hand (exp, then divide by the row sum); gqa: SDPA with 4 query heads over 2 key/value
    heads (enable_gqa)."""

    def __init__(self, kind: str, d: int = 32):
        super().__init__()
        self.kind = kind
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, d if kind == "gqa" else 2 * d)
        self.o = nn.Linear(d, d)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H, dh = 4, C // 4
        q = self.q(x).view(B, T, H, dh).transpose(1, 2)  # (B, H, T, dh)
        kv_heads = 2 if self.kind == "gqa" else H
        k, v = (t.view(B, T, kv_heads, dh).transpose(1, 2) for t in self.kv(x).chunk(2, -1))
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        rep = H // kv_heads
        scores = q @ k.repeat_interleave(rep, 1).transpose(-2, -1) / math.sqrt(dh)
        self.seen = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1).detach()
        if self.kind == "gqa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, enable_gqa=True)
        elif self.kind == "einsum":
            att = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(dh)
            att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
            y = torch.einsum("bhqk,bhkd->bhqd", att, v)
        elif self.kind in ("bmm", "baddbmm"):
            qf, kf, vf = (t.reshape(B * H, T, dh) for t in (q, k, v))
            if self.kind == "bmm":
                att = torch.bmm(qf, kf.transpose(1, 2)) / math.sqrt(dh)
            else:  # GPT-2's upcast path: beta * empty + alpha * q @ k^T
                empty = torch.zeros(B * H, T, T)
                att = torch.baddbmm(empty, qf, kf.transpose(1, 2), beta=0, alpha=1 / math.sqrt(dh))
            att = F.softmax(att.masked_fill(~causal, -1e9), dim=-1)
            y = torch.bmm(att, vf).view(B, H, T, dh)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
            e = (att - att.amax(-1, keepdim=True)).exp() * causal
            y = (e / e.sum(-1, keepdim=True)) @ v
        return self.o(y.transpose(1, 2).reshape(B, T, C))


class VariantLM(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.emb = nn.Embedding(97, 32)
        self.attn = VariantAttention(kind)
        self.head = nn.Linear(32, 97)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        return self.head(x + self.attn(x))
