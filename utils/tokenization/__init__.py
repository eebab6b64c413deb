"""Tokenization: a tokenizer for any vocabulary size, a check that it fits the model, and
data modules that turn text into batches.

    choice = AdaptiveTokenizer.load_or_create(vocab_size=8000, texts=texts)
    TokenizerValidator.validate(choice.tokenizer, expected_vocab_size=8000, texts=texts)
    dm = AdaptiveTokenizerDataModule(dataset=texts, tokenizer=choice.tokenizer)
"""

from utils.tokenization.adaptive_tokenizer import (
    AdaptiveTokenizer,
    Attempt,
    TokenizerChoice,
)
from utils.tokenization.bpe_trainer import BPETrainingResult, FastBPETrainer
from utils.tokenization.character_tokenizer import CharacterLevelTokenizer
from utils.tokenization.collation import mask_tokens
from utils.tokenization.data_module import AdaptiveTokenizerDataModule, SimpleDataModule
from utils.tokenization.known_tokenizers import (
    KNOWN_TOKENIZERS,
    KnownTokenizer,
    find_known_tokenizers,
)
from utils.tokenization.user_tokenizer import load_user_tokenizer
from utils.tokenization.validator import TokenizerValidationError, TokenizerValidator

__all__ = [
    "KNOWN_TOKENIZERS",
    "AdaptiveTokenizer",
    "AdaptiveTokenizerDataModule",
    "Attempt",
    "BPETrainingResult",
    "CharacterLevelTokenizer",
    "FastBPETrainer",
    "KnownTokenizer",
    "SimpleDataModule",
    "TokenizerChoice",
    "TokenizerValidationError",
    "TokenizerValidator",
    "find_known_tokenizers",
    "load_user_tokenizer",
    "mask_tokens",
]
