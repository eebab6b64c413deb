"""Tokenization: a tokenizer for any vocabulary size, a check that it fits the model, and
data modules that turn text into batches.

    choice = AdaptiveTokenizer.load_or_create(vocab_size=8000, texts=texts)
    TokenizerValidator.validate(choice.tokenizer, expected_vocab_size=8000, texts=texts)
    dm = AdaptiveTokenizerDataModule(dataset=texts, tokenizer=choice.tokenizer)

Names are imported on first use: transformers and Lightning cost seconds, and a command
that only checks its arguments (or reads `limits`) needs neither.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AdaptiveTokenizer": "adaptive_tokenizer",
    "Attempt": "adaptive_tokenizer",
    "TokenizerChoice": "adaptive_tokenizer",
    "BPETrainingResult": "bpe_trainer",
    "FastBPETrainer": "bpe_trainer",
    "CharacterLevelTokenizer": "character_tokenizer",
    "AdaptiveTokenizerDataModule": "data_module",
    "SimpleDataModule": "data_module",
    "mask_tokens": "collation",
    "KNOWN_TOKENIZERS": "known_tokenizers",
    "KnownTokenizer": "known_tokenizers",
    "find_known_tokenizers": "known_tokenizers",
    "load_user_tokenizer": "user_tokenizer",
    "TokenizerValidationError": "validator",
    "TokenizerValidator": "validator",
    "tokenizer_fingerprint": "_common",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
