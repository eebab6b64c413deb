"""Checking the config against the built model: a disagreement (vocab 5000 in the config,
4000 embedding rows) is an error, never a guess."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from utils.errors import LoadError
from utils.loading.config import ModelConfig
from utils.vocabulary import position_embedding, token_embedding


def _check_against_model(model: nn.Module, config: ModelConfig, path: Path | None) -> None:
    """A config that disagrees with the built model would train the wrong thing quietly
    (a tokenizer sized from the config, ids past the embedding): refuse it now."""
    code = str(path) if path else "the model's code"
    token = token_embedding(model, by_name=True)
    if config.vocab_size is not None and token is not None:
        name, emb = token
        if emb.num_embeddings != config.vocab_size:
            raise LoadError(
                f"{config.where} says vocab_size {config.vocab_size} "
                f"({config.found_at.get('vocab_size', 'vocab_size')}) but the model's token "
                f"embedding '{name}' (nn.Embedding) has {emb.num_embeddings} rows. Make them "
                f"agree: set vocab_size to {emb.num_embeddings} in the config, or build that "
                f"embedding with {config.vocab_size} rows in {code}."
            )
    position = position_embedding(model)
    if config.max_seq_len is not None and position is not None:
        name, emb = position
        if emb.num_embeddings < config.max_seq_len:
            raise LoadError(
                f"{config.where} says max_seq_len {config.max_seq_len} "
                f"({config.found_at.get('max_seq_len', 'max_seq_len')}) but the model's position "
                f"embedding '{name}' has only {emb.num_embeddings} rows, so longer inputs would "
                f"fail. Set max_seq_len to {emb.num_embeddings} in the config, or give that "
                f"embedding {config.max_seq_len} rows in {code}."
            )
