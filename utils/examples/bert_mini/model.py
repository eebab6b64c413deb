"""BERT-mini: a small masked-language-model encoder.

forward(input_ids, attention_mask=None) returns logits (B, T, vocab_size) for every
position; attention is bidirectional (each position sees the whole sequence, padding
excepted). Built from a config dataclass, the way many research codebases do it.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BertMiniConfig:
    vocab_size: int
    d_model: int = 96
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 384
    max_seq_len: int = 128
    dropout: float = 0.1


class MaskedLMHead(nn.Module):
    """Transform, then project onto the vocabulary with the (tied) token embedding."""

    def __init__(self, config: BertMiniConfig, token_embedding: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(config.d_model)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)
        self.decoder.weight = token_embedding.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(h))))  # (B, T, vocab_size)


class BertMini(nn.Module):
    def __init__(self, config: BertMiniConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
        self.emb_norm = nn.LayerNorm(config.d_model)
        self.drop = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.num_heads,
            dim_feedforward=config.d_ff,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.num_layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False
        )
        self.head = MaskedLMHead(config, self.tok_emb)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation: small normal weights keep the tied output head's logits
        near zero at the start, so the first loss is close to ln(vocab_size)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {T} is longer than max_seq_len {self.config.max_seq_len}"
            )
        positions = torch.arange(T, device=input_ids.device)
        x = self.drop(self.emb_norm(self.tok_emb(input_ids) + self.pos_emb(positions)))  # (B, T, C)
        padding = None if attention_mask is None else attention_mask == 0  # True = ignore
        h = self.encoder(x, src_key_padding_mask=padding)  # (B, T, C)
        return self.head(h)
