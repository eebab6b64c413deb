"""Choose a tokenizer that fits a model's vocabulary size, and say why.

The decision, in order (the first that works wins):

1. the user's own tokenizer, when one is given: it always wins (and must fit the model);
2. a known pretrained tokenizer for this vocabulary size (`KNOWN_TOKENIZERS`), from the local
   cache or the hub; offline, one log line and on to the next strategy;
3. byte-level BPE trained on the user's text, when there is text and the vocabulary has room
   for merges beyond the 256 byte tokens (`MIN_BPE_VOCAB`);
4. a character-level tokenizer, which fits any size and needs no training.

The result is a `TokenizerChoice`: the tokenizer, the strategy, the reason, and every option
that was tried and why it was not used. It saves to and reloads from a folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from utils._io import atomic_write_text
from utils.tokenization._common import hub_offline_reason, save_tokenizer
from utils.tokenization.bpe_trainer import FastBPETrainer
from utils.tokenization.character_tokenizer import CharacterLevelTokenizer
from utils.tokenization.known_tokenizers import (
    KnownMatch,
    KnownTokenizer,
    check_loaded_length,
    find_known_tokenizers,
    load_pretrained,
)
from utils.tokenization.limits import (
    LIMITS_HELP,
    LOSSLESS_VOCAB_SIZE,
    MIN_BPE_VOCAB_SIZE,
    MIN_VOCAB_SIZE,
    PRINTABLE_ASCII_CHARS,
    SPECIAL_TOKENS,
    WASTEFUL_UNUSED_FRACTION,
)
from utils.tokenization.user_tokenizer import load_user_tokenizer

log = logging.getLogger(__name__)

STRATEGIES = ("user", "pretrained", "bpe", "character")
MIN_BPE_VOCAB = MIN_BPE_VOCAB_SIZE
CHOICE_FILE = "tokenizer_choice.json"


@dataclass
class Attempt:
    """One option considered: which strategy, what exactly, and what happened."""

    strategy: str
    source: str
    outcome: str


@dataclass
class TokenizerChoice:
    """A tokenizer for a model, with the record of how it was chosen."""

    tokenizer: Any
    strategy: str
    reason: str
    vocab_size: int
    source: str
    tried: list[Attempt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tokenizer_size(self) -> int:
        return len(self.tokenizer)

    @property
    def unused_rows(self) -> int:
        """Embedding rows no token id reaches (a tokenizer smaller than the model is valid)."""
        return self.vocab_size - self.tokenizer_size

    def summary(self) -> str:
        return (
            f"{self.strategy} tokenizer ({self.source}): {self.tokenizer_size} tokens for "
            f"{self.vocab_size} rows, {self.unused_rows} unused. {self.reason}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "reason": self.reason,
            "vocab_size": self.vocab_size,
            "tokenizer_size": self.tokenizer_size,
            "source": self.source,
            "tried": [asdict(a) for a in self.tried],
            "notes": list(self.notes),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """The tokenizer's files plus `tokenizer_choice.json`, written last (atomically)."""
        directory = save_tokenizer(self.tokenizer, directory)
        atomic_write_text(directory / CHOICE_FILE, json.dumps(self.to_dict(), indent=2))
        return directory


class AdaptiveTokenizer:
    """Pick and build the tokenizer for a vocabulary size; see the module docstring."""

    @classmethod
    def load_or_create(
        cls,
        vocab_size: int,
        texts: Iterable[str] | None = None,
        tokenizer: Any = None,
        use_pretrained: bool = True,
        known: Mapping[int, KnownTokenizer] | None = None,
        bpe_trainer: FastBPETrainer | None = None,
        text_name: str = "your text",
    ) -> TokenizerChoice:
        """`tokenizer`: the user's own (object or path), which always wins. `known`: the
        size -> pretrained table (default `KNOWN_TOKENIZERS`). `bpe_trainer`: settings for
        the BPE strategy (special tokens, cache folder). `text_name` says what `texts` are in the
        record ("your text", "the embedded corpus")."""
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be a whole number of rows ({LIMITS_HELP}), got {vocab_size!r}")
        if isinstance(texts, (str, os.PathLike)) and Path(texts).is_file():
            from utils.tokenization.sources import load_corpus

            texts = load_corpus(texts).train  # a data file (the notebook's DATA = "file.txt")
        if isinstance(texts, str):
            raise TypeError(
                "texts must be an iterable of strings or the path of a data file, not one string: wrap it in a list"
            )
        if texts is not None and not isinstance(texts, Sequence):
            texts = list(texts)  # read twice: to build the tokenizer and to measure its losses
        choice = cls._choose(vocab_size, texts, tokenizer, use_pretrained, known, bpe_trainer, text_name)
        choice.notes += _limit_notes(choice, texts, text_name)
        return choice

    @classmethod
    def _choose(
        cls,
        vocab_size: int,
        texts: Sequence[str] | None,
        tokenizer: Any,
        use_pretrained: bool,
        known: Mapping[int, KnownTokenizer] | None,
        bpe_trainer: FastBPETrainer | None,
        text_name: str,
    ) -> TokenizerChoice:
        if tokenizer is not None:
            return cls._user(vocab_size, tokenizer)
        tried: list[Attempt] = []
        if use_pretrained:
            choice = cls._pretrained(vocab_size, known, tried)
            if choice is not None:
                return choice
        else:
            tried.append(Attempt("pretrained", "-", "skipped: use_pretrained=False"))
        if texts is not None and vocab_size >= MIN_BPE_VOCAB:
            return cls._bpe(vocab_size, texts, bpe_trainer or FastBPETrainer(), tried, text_name)
        why = (
            "no text to train on"
            if texts is None
            else f"vocab_size {vocab_size} < {MIN_BPE_VOCAB}: too few rows for merges beyond "
            "the 256 byte tokens, characters use them better"
        )
        tried.append(Attempt("bpe", "-", f"skipped: {why}"))
        return cls._character(vocab_size, texts, tried, text_name)

    @staticmethod
    def load(directory: str | os.PathLike) -> TokenizerChoice:
        """Reload a choice saved with `TokenizerChoice.save`."""
        directory = Path(directory)
        record_path = directory / CHOICE_FILE
        if not record_path.is_file():
            raise FileNotFoundError(f"{record_path} not found: {directory} was not saved by TokenizerChoice.save")
        record = json.loads(record_path.read_text(encoding="utf-8"))
        return TokenizerChoice(
            tokenizer=load_user_tokenizer(directory),
            strategy=record["strategy"],
            reason=record["reason"],
            vocab_size=record["vocab_size"],
            source=record["source"],
            tried=[Attempt(**a) for a in record["tried"]],
            notes=record["notes"],
        )

    # -- strategies ----------------------------------------------------------------------

    @staticmethod
    def _user(vocab_size: int, source: Any) -> TokenizerChoice:
        tok = load_user_tokenizer(source)
        where = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
        # ids may have gaps (a hand-made vocab.json), so the largest id counts, not len()
        needed = max(len(tok), max(tok.get_vocab().values(), default=-1) + 1)
        if needed > vocab_size:
            raise ValueError(
                f"the tokenizer you gave ({where}) has {len(tok)} tokens with ids up to "
                f"{needed - 1} but the model has {vocab_size} rows: ids {vocab_size} and up would "
                "crash the embedding. Give the model a larger vocab_size or use a smaller tokenizer"
            )
        notes = _ensure_pad_token(tok)
        return TokenizerChoice(
            tok,
            "user",
            "you gave a tokenizer; a given tokenizer always wins over the automatic choice",
            vocab_size,
            where,
            [Attempt("user", where, "used")],
            notes,
        )

    @staticmethod
    def _pretrained(
        vocab_size: int, known: Mapping[int, KnownTokenizer] | None, tried: list[Attempt]
    ) -> TokenizerChoice | None:
        matches = find_known_tokenizers(vocab_size, known)
        if not matches:
            tried.append(Attempt("pretrained", "-", f"no known tokenizer fits {vocab_size} rows"))
            return None
        hub = _HubStatus()
        for match in matches:
            outcome, tok = _try_pretrained(match, hub)
            tried.append(Attempt("pretrained", match.tokenizer.repo, outcome))
            if tok is not None:
                unused = vocab_size - len(tok)
                reason = (
                    f"{match.tokenizer.family} tokenizer ({match.how}); {unused} embedding rows are never used"
                    if unused
                    else f"{match.tokenizer.family} tokenizer ({match.how}), exactly the model's size"
                )
                return TokenizerChoice(
                    tok,
                    "pretrained",
                    reason,
                    vocab_size,
                    match.tokenizer.repo,
                    tried,
                    _ensure_pad_token(tok),
                )
        return None

    @staticmethod
    def _bpe(
        vocab_size: int,
        texts: Iterable[str],
        trainer: FastBPETrainer,
        tried: list[Attempt],
        text_name: str,
    ) -> TokenizerChoice:
        result = trainer.train(texts=texts, vocab_size=vocab_size)
        how = "cache hit" if result.from_cache else "trained now"
        source = f"byte-level BPE trained on {text_name} ({how})"
        tried.append(Attempt("bpe", source, "used"))
        reason = f"no pretrained tokenizer was used and {text_name} is there to train on"
        notes = [result.reason] if result.reason else []
        return TokenizerChoice(result.tokenizer, "bpe", reason, vocab_size, source, tried, notes)

    @staticmethod
    def _character(
        vocab_size: int, texts: Iterable[str] | None, tried: list[Attempt], text_name: str
    ) -> TokenizerChoice:
        tok = CharacterLevelTokenizer(vocab_size=vocab_size, texts=texts)
        fallback = "with UTF-8 byte fallback" if tok.byte_fallback else "no room for byte fallback"
        order = f"those of {text_name} first" if texts is not None else "Unicode order"
        source = f"characters ({order}, {fallback})"
        tried.append(Attempt("character", source, "used"))
        reason = "fits any vocabulary size without training; the options above did not apply"
        return TokenizerChoice(tok, "character", reason, vocab_size, source, tried)


def _limit_notes(choice: TokenizerChoice, texts: Sequence[str] | None, text_name: str) -> list[str]:
    """Warnings for the two silent costs of a size: characters lost to the unknown token
    (too few rows), and embedding rows no id reaches (far too many)."""
    notes = []
    tok = choice.tokenizer
    if choice.strategy == "character" and not tok.byte_fallback:
        sample = _sample(texts)
        lost = _unknown_rate(tok, sample)
        measured = f" ({lost:.1%} of the characters of {text_name})" if lost is not None else ""
        other = len(set(sample) - set(PRINTABLE_ASCII_CHARS))
        notes.append(
            f"lossy: {choice.vocab_size} rows leave no room for the 256 byte tokens, so "
            f"characters outside the {len(tok) - SPECIAL_TOKENS} kept become <unk>{measured}; "
            f"use vocab_size >= {LOSSLESS_VOCAB_SIZE + other} for a tokenizer every text "
            "round-trips"
        )
    if choice.unused_rows > WASTEFUL_UNUSED_FRACTION * choice.vocab_size:
        notes.append(
            f"wasteful: {choice.unused_rows:,} of the model's {choice.vocab_size:,} embedding rows "
            f"are never used (the tokenizer has {choice.tokenizer_size:,} tokens); a vocab_size "
            "near the tokenizer's size saves their parameters"
        )
    return notes


def _sample(texts: Sequence[str] | None, chars: int = 200_000) -> str:
    """The first `chars` characters of the texts: enough to measure losses on."""
    size, parts = 0, []
    for text in texts or ():
        parts.append(text)
        size += len(text)
        if size >= chars:
            break
    return "".join(parts)[:chars]


def _unknown_rate(tok: Any, sample: str) -> float | None:
    """The fraction of the sample's characters that encode to `<unk>`."""
    if not sample:
        return None
    ids = tok.encode(sample, add_special_tokens=False)
    return sum(i == tok.unk_token_id for i in ids) / len(sample)


class _HubStatus:
    """Whether the hub can be used, found out on the first cache miss and logged once."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> str:
        if self.reason is None:
            self.reason = hub_offline_reason()
            if self.reason:
                log.warning(
                    "Hugging Face Hub unavailable (%s): pretrained tokenizers come only from "
                    "the local cache, else the next strategy is used",
                    self.reason,
                )
        return self.reason


def _try_pretrained(match: KnownMatch, hub: _HubStatus) -> tuple[str, Any]:
    try:
        tok = load_pretrained(match.tokenizer.repo, hub)
    except Exception as exc:  # noqa: BLE001 - recorded in `tried`; the next strategy is used
        return f"failed: {type(exc).__name__}: {exc}", None
    mismatch = check_loaded_length(match, tok)
    if mismatch:
        return f"failed: {mismatch}", None
    return "used", tok


def _ensure_pad_token(tok: Any) -> list[str]:
    """Batches need a padding id: reuse end-of-text when there is none (GPT-2 style). Padding
    positions are masked by the attention mask and labels, so sharing the id is harmless."""
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
        return [f"the tokenizer had no padding token; pad_token is set to eos_token {tok.eos_token!r}"]
    return []
