"""Byte-level BPE trained on the user's text with the `tokenizers` library.

Why byte-level: its 256 base tokens cover every possible byte, so any Unicode text round-trips
exactly and no id ever needs `<unk>`. The result is a `PreTrainedTokenizerFast`, saved in the
Hugging Face format and cached on disk under a fingerprint of the corpus and the settings, so
the same corpus is never trained twice.

The trainer streams its input (an iterator of texts or files read line by line by the Rust
library), so a corpus larger than memory works. It fills the requested vocabulary exactly
when the corpus has enough distinct merges; otherwise the result says how far it got and why
(a tokenizer smaller than the model's vocabulary is valid, a larger one never is).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from utils._io import atomic_write_text, default_cache_dir
from utils.tokenization._common import (
    DEFAULT_SPECIAL_TOKENS,
    hash_files,
    hash_settings,
    hash_texts,
    save_tokenizer,
)

log = logging.getLogger(__name__)

BYTE_ALPHABET = 256
_CACHE_FORMAT = 1
_TRAINING_RECORD = "bpe_training.json"


@dataclass
class BPETrainingResult:
    """A trained tokenizer and how it came to be."""

    tokenizer: PreTrainedTokenizerFast
    requested_vocab_size: int
    vocab_size: int
    reason: str
    fingerprint: str | None
    from_cache: bool
    seconds: float

    @property
    def exact(self) -> bool:
        return self.vocab_size == self.requested_vocab_size


class FastBPETrainer:
    """Train, wrap, save and cache byte-level BPE tokenizers.

    >>> tok = FastBPETrainer().train_on_dataset(texts=texts, vocab_size=25_000)

    `special_tokens` maps Hugging Face roles (`pad_token`, `unk_token`, `bos_token`,
    `eos_token`, `mask_token`, ...) to strings; they take the first ids. `cache_dir=None`
    uses `default_cache_dir() / "bpe"`; `cache=False` never reads or writes the cache.
    """

    def __init__(
        self,
        special_tokens: Mapping[str, str] | None = None,
        min_frequency: int = 2,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        show_progress: bool | None = None,
    ) -> None:
        self.special_tokens = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        self.min_frequency = min_frequency
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "bpe"
        # the Rust progress bar writes blank lines where stderr is not a terminal
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self.last_result: BPETrainingResult | None = None

    @property
    def min_vocab_size(self) -> int:
        """The 256 byte tokens plus the special tokens: the smallest byte-level vocabulary."""
        return BYTE_ALPHABET + len(self._special_strings)

    @property
    def _special_strings(self) -> list[str]:
        """The distinct special tokens in role order (roles may share one, GPT-2 style)."""
        return list(dict.fromkeys(self.special_tokens.values()))

    def train_on_dataset(
        self,
        texts: Iterable[str] | None = None,
        vocab_size: int = 25_000,
        files: Sequence[str | os.PathLike] | None = None,
    ) -> PreTrainedTokenizerFast:
        """Train (or load from the cache) and return the tokenizer; details in `last_result`."""
        return self.train(texts=texts, vocab_size=vocab_size, files=files).tokenizer

    def train(
        self,
        texts: Iterable[str] | None = None,
        vocab_size: int = 25_000,
        files: Sequence[str | os.PathLike] | None = None,
    ) -> BPETrainingResult:
        """Train on `texts` (any iterable of strings, streamed) or `files` (read line by line)."""
        start = time.perf_counter()
        files = self._check_inputs(texts, vocab_size, files)
        fingerprint = self._fingerprint(texts, vocab_size, files)
        cached = self._load_cached(fingerprint, vocab_size)
        if cached is not None:
            cached.seconds = time.perf_counter() - start
            self.last_result = cached
            return cached
        backend = self._train_backend(texts, vocab_size, files)
        reached = backend.get_vocab_size(with_added_tokens=True)
        result = BPETrainingResult(
            tokenizer=PreTrainedTokenizerFast(
                tokenizer_object=backend, clean_up_tokenization_spaces=False, **self.special_tokens
            ),
            requested_vocab_size=vocab_size,
            vocab_size=reached,
            reason=self._shortfall_reason(vocab_size, reached),
            fingerprint=fingerprint,
            from_cache=False,
            seconds=0.0,
        )
        if result.reason:
            log.warning("BPE: %s", result.reason)
        self._store(result)
        result.seconds = time.perf_counter() - start
        self.last_result = result
        return result

    @staticmethod
    def load(directory: str | os.PathLike) -> PreTrainedTokenizerFast:
        """Load a tokenizer saved by `save` (or any Hugging Face `tokenizer.json` folder)."""
        return PreTrainedTokenizerFast.from_pretrained(str(directory))

    @staticmethod
    def save(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike) -> Path:
        """Save in the Hugging Face format, every file written atomically."""
        return save_tokenizer(tokenizer, directory)

    # -- steps --------------------------------------------------------------------------

    def _check_inputs(
        self,
        texts: Iterable[str] | None,
        vocab_size: int,
        files: Sequence[str | os.PathLike] | None,
    ) -> list[Path] | None:
        if (texts is None) == (files is None):
            raise ValueError("give exactly one of texts= (an iterable of strings) or files= (paths)")
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of strings, not one string: wrap it in a list")
        if not isinstance(vocab_size, int) or vocab_size < self.min_vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size!r} is below the {self.min_vocab_size} tokens byte-level BPE "
                f"starts with ({BYTE_ALPHABET} bytes + {len(self._special_strings)} special tokens); "
                "use CharacterLevelTokenizer for smaller vocabularies"
            )
        if files is None:
            if isinstance(texts, Sequence):
                _check_strings(texts)
                if not any(texts):
                    raise ValueError("texts is empty (or only empty strings): there is nothing to train on")
            return None
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        paths = [Path(f) for f in files]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"BPE training file {path} does not exist or is not a file")
        if not paths or sum(p.stat().st_size for p in paths) == 0:
            raise ValueError(f"the training files {[str(p) for p in paths]} are empty")
        return paths

    def _fingerprint(self, texts: Iterable[str] | None, vocab_size: int, files: list[Path] | None) -> str | None:
        """A digest of corpus + settings, or None when the corpus can only be read once."""
        if not self.cache:
            return None
        if files is not None:
            corpus = "files:" + hash_files(files)
        elif isinstance(texts, Sequence):
            corpus = "texts:" + hash_texts(texts)
        else:
            log.info(
                "BPE: texts is a one-shot iterator, so the tokenizer is not cached (pass a list or files= to cache it)"
            )
            return None
        return hash_settings(
            format=_CACHE_FORMAT,
            corpus=corpus,
            vocab_size=vocab_size,
            min_frequency=self.min_frequency,
            special_tokens=self.special_tokens,
            tokenizers=tokenizers.__version__,
        )

    def _cache_path(self, fingerprint: str) -> Path:
        return self.cache_dir / f"bpe-{fingerprint[:24]}"

    def _load_cached(self, fingerprint: str | None, vocab_size: int) -> BPETrainingResult | None:
        if fingerprint is None:
            return None
        directory = self._cache_path(fingerprint)
        record_path = directory / _TRAINING_RECORD
        if not record_path.is_file():
            return None
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record["fingerprint"] != fingerprint:
                raise ValueError(f"fingerprint {record['fingerprint'][:12]} != {fingerprint[:12]}")
            tokenizer = self.load(directory)
        except Exception as exc:  # noqa: BLE001 - a corrupt cache may raise anything
            log.warning("BPE: cached tokenizer %s is unreadable (%s); training again", directory, exc)
            return None
        log.info("BPE: loaded cached tokenizer %s", directory)
        return BPETrainingResult(
            tokenizer=tokenizer,
            requested_vocab_size=vocab_size,
            vocab_size=len(tokenizer),
            reason=record["reason"],
            fingerprint=fingerprint,
            from_cache=True,
            seconds=0.0,
        )

    def _train_backend(self, texts: Iterable[str] | None, vocab_size: int, files: list[Path] | None) -> Tokenizer:
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=self.min_frequency,
            special_tokens=self._special_strings,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=self.show_progress,
        )
        if files is not None:
            backend.train([str(f) for f in files], trainer)
            return backend
        if isinstance(texts, Sequence):  # checked already; Rust iterates the list directly
            backend.train_from_iterator(texts, trainer, length=len(texts))
            return backend
        checked = _CheckedTexts(texts)
        backend.train_from_iterator(checked, trainer)
        if checked.chars == 0:
            raise ValueError("texts yielded no characters: there is nothing to train on")
        return backend

    def _shortfall_reason(self, requested: int, reached: int) -> str:
        if reached == requested:
            return ""
        if self.min_frequency > 1:
            why = f"no pair of tokens occurs {self.min_frequency} or more times any more"
            hint = (
                "give more text, or min_frequency=1 (tbuilder tokenizer --min-frequency 1) "
                "to also merge pairs seen fewer times"
            )
        else:
            why = "no pair is left to merge (every word of the corpus is a single token)"
            hint = "give more (or more varied) text"
        return (
            f"reached {reached} of the requested {requested} tokens: {why}. The smaller "
            f"tokenizer is valid (ids stay below {requested}; {requested - reached} embedding "
            f"rows go unused); {hint} to fill the vocabulary"
        )

    def _store(self, result: BPETrainingResult) -> None:
        """Write the tokenizer, then the record last: a folder without the record is an
        interrupted write and is never read as a cache hit."""
        if result.fingerprint is None:
            return
        directory = save_tokenizer(result.tokenizer, self._cache_path(result.fingerprint))
        record = {
            "fingerprint": result.fingerprint,
            "requested_vocab_size": result.requested_vocab_size,
            "vocab_size": result.vocab_size,
            "reason": result.reason,
            "min_frequency": self.min_frequency,
            "special_tokens": self.special_tokens,
        }
        atomic_write_text(directory / _TRAINING_RECORD, json.dumps(record, indent=2))


def _check_strings(texts: Sequence[str]) -> None:
    if not all(isinstance(t, str) for t in texts):
        i = next(i for i, t in enumerate(texts) if not isinstance(t, str))
        raise TypeError(f"texts item {i} is a {type(texts[i]).__name__}, not a string: {texts[i]!r:.80}")


class _CheckedTexts:
    """Iterate the user's texts once, naming the first item that is not a string and
    counting characters (so an empty corpus is reported, not trained on)."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for i, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise TypeError(f"texts item {i} is a {type(text).__name__}, not a string: {text!r:.80}")
            self.chars += len(text)
            yield text
