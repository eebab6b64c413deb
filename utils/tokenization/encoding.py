"""Encoding: texts to token ids in large chunks through the tokenizer's fast path, cached on disk."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

CHUNK_CHARS = 1 << 15


CHUNKS_PER_CALL = 64


ENCODE_BATCH = 256


def encode_ragged(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ids of every text, no special tokens added, as one flat int32 array and (N,) lengths.

    Uses the fastest path the tokenizer has: the Rust `encode_batch_fast` (no offsets), the
    character tokenizer's numpy encoder, else the tokenizer's own batch `__call__`.
    """
    flats, lengths = [], []
    for start in range(0, len(texts), ENCODE_BATCH):
        for ids in _encode_batch(tokenizer, list(texts[start : start + ENCODE_BATCH])):
            flats.append(ids)
            lengths.append(len(ids))
    flat = np.concatenate(flats).astype(np.int32, copy=False) if flats else np.zeros(0, np.int32)
    return flat, np.asarray(lengths, dtype=np.int64)


def encode_stream(
    tokenizer: Any, texts: Iterable[str], separator_id: int, total_chars: int | None = None
) -> np.ndarray:
    """All texts as one int32 stream, each followed by `separator_id` (EOS): the packed layout.

    When the separator's string is a token the tokenizer recognises inside text (special
    tokens are), texts are joined with it into large chunks and encoded in few calls; long
    texts are cut at newlines. Otherwise each text is encoded and separators inserted.
    """
    separator = tokenizer.convert_ids_to_tokens(separator_id)
    bar = tqdm(
        total=total_chars,
        unit="char",
        unit_scale=True,
        desc="tokenizing",
        disable=total_chars is None or total_chars < 5_000_000,
        leave=False,
    )
    if not _separator_is_recognised(tokenizer, separator, separator_id):
        texts = list(texts)
        flat, lengths = encode_ragged(tokenizer, texts)
        bar.close()
        return _insert_after_each(flat, lengths, separator_id)
    parts = []
    for batch in _batched(_chunks(texts, separator, CHUNK_CHARS), CHUNKS_PER_CALL):
        parts.extend(_encode_batch(tokenizer, batch))
        bar.update(sum(len(c) for c in batch))
    bar.close()
    return np.concatenate(parts).astype(np.int32, copy=False) if parts else np.zeros(0, np.int32)


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[np.ndarray]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [np.asarray(e.ids, dtype=np.int32) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    encode_to_arrays = getattr(tokenizer, "encode_to_arrays", None)
    if encode_to_arrays is not None:
        return encode_to_arrays(texts)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [np.asarray(x, dtype=np.int32) for x in ids]


def _separator_is_recognised(tokenizer: Any, separator: str, separator_id: int) -> bool:
    probe = _encode_batch(tokenizer, [f"a{separator}b", separator])
    return probe[1].tolist() == [separator_id] and int((probe[0] == separator_id).sum()) == 1


def _chunks(texts: Iterable[str], separator: str, size: int) -> Iterator[str]:
    """Texts joined as `text + separator`, cut into pieces of about `size` characters; a
    text longer than that is cut at word boundaries (`_cut`)."""
    buffer: list[str] = []
    filled = 0
    for text in texts:
        start = 0
        while len(text) - start > size:
            cut = _cut(text, start, size)
            buffer.append(text[start:cut])
            yield "".join(buffer)
            buffer, filled, start = [], 0, cut
        buffer += [text[start:], separator]
        filled += len(text) - start + len(separator)
        if filled >= size:
            yield "".join(buffer)
            buffer, filled = [], 0
    if buffer:
        yield "".join(buffer)


def _cut(text: str, start: int, size: int) -> int:
    """Where a piece of a long text ends: before a space that follows a non-space (a word
    boundary for byte-level BPE and sentencepiece alike, so the ids do not change), else
    after a newline, else at the limit."""
    end = start + size
    i = text.rfind(" ", start + 1, end)
    while i > start and text[i - 1].isspace():
        i = text.rfind(" ", start + 1, i)
    if i > start:
        return i
    newline = text.rfind("\n", start, end) + 1
    return newline if newline > start else end


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, n)):
        yield batch


def _insert_after_each(flat: np.ndarray, lengths: np.ndarray, value: int) -> np.ndarray:
    out = np.empty(len(flat) + len(lengths), dtype=np.int32)
    ends = np.cumsum(lengths + 1) - 1  # (N,) position of each separator
    is_sep = np.zeros(len(out), dtype=bool)
    is_sep[ends] = True
    out[is_sep] = value
    out[~is_sep] = flat
    return out
