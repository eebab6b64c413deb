"""Tiny models for the training tests: a correct causal LM, and models built to fail Tier 3's
checks. Only torch is imported: export copies this file as an export's model.py."""

from __future__ import annotations

import torch
from torch import nn


class TinyLM(nn.Module):
    """A correct one-block causal decoder (pre-norm, GPT-2's initialisation) with tied input
    and output embeddings."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, d_model: int = 32, dropout: float = 0.0):
        super().__init__()
        self.max_seq_len, self.d_model = max_seq_len, d_model
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_seq_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.ln1, self.ln2, self.norm = (nn.LayerNorm(d_model) for _ in range(3))
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, 2, C // 2).transpose(1, 2) for t in self.qkv(x).split(C, -1))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, 2, T, C/2)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(T, device=input_ids.device))  # (B, T, C)
        x = self.drop(x)
        x = x + self.attend(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
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

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, width: int = 8):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.embed = nn.Embedding(vocab_size, width)  # its output is multiplied by zero
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


class EndsAtOnceLM(TinyLM):
    """Learns like TinyLM, but its end-of-text logit is raised far above the rest: greedy
    decoding ends every prompt at once, while the other tokens still depend on the input."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, eos_id: int = 3):
        super().__init__(vocab_size, max_seq_len)
        self.eos_id = eos_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids)  # (B, T, V)
        boost = torch.zeros(logits.shape[-1], device=logits.device)
        boost[self.eos_id] = 50.0
        return logits + boost


class StandardLM(nn.Module):
    """A design that is the standard one: GPT-2's block from transformers, wrapped the way a
    user might. It should match the size-matched baseline."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, d_model: int = 32):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.max_seq_len = max_seq_len
        self.gpt = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_positions=max_seq_len,
                n_embd=d_model,
                n_layer=1,
                n_head=1,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
            )
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt(input_ids, use_cache=False).logits  # (B, T, V)


class EncoderDecoder(nn.Module):
    """A correct encoder-decoder in Hugging Face's calling convention, forward(input_ids,
    attention_mask, decoder_input_ids) -> (B, T, V) logits over the decoder's positions: one
    pre-norm encoder block, one decoder block with causal self-attention and cross-attention.
    `blind`: the decoder's cross-attention reads one fixed zero vector instead of the encoder,
    so the output never depends on the source."""

    def __init__(self, vocab_size: int = 64, max_seq_len: int = 32, d_model: int = 32, blind: bool = False):
        super().__init__()
        self.max_seq_len, self.blind = max_seq_len, blind
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_seq_len, d_model)
        layer = dict(nhead=2, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoderLayer(d_model, **layer)
        self.decoder = nn.TransformerDecoderLayer(d_model, **layer)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))  # (B, L, C)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pad = None if attention_mask is None else attention_mask == 0  # (B, S) True where padding
        memory = self.encoder(self.embed(input_ids), src_key_padding_mask=pad)  # (B, S, C)
        if self.blind:
            memory, pad = memory.new_zeros(memory.shape[0], 1, memory.shape[2]), None  # (B, 1, C)
        T = decoder_input_ids.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=input_ids.device)  # (T, T)
        x = self.decoder(
            self.embed(decoder_input_ids), memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=pad
        )
        return self.head(self.norm(x))  # (B, T, V)
