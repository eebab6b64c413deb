"""The character vocabulary: which token each id is, for any vocabulary size.

The vocabulary is laid out in a fixed order, so the same arguments always give the same ids:

1. the special tokens (`<pad>`, `<unk>`, `<s>`, `</s>`, `<mask>` by default);
2. the characters of the user's text, most frequent first (ties by code point);
3. the rest of Unicode, in the order `UNICODE_FILL_ORDER` documents, until the vocabulary
   is full. Every token is a real character, so every id decodes to real text;
4. as the last 256 ids, the byte tokens `<0x00>` ... `<0xFF>`, when the vocabulary has room
   for them (see `byte_fallback`): a character without a token of its own is written as its
   UTF-8 bytes, so `decode(encode(text)) == text` for any Unicode text.

The bytes come last so that the characters, the text's most frequent first, get the
smallest ids: built from a text of up to 252 distinct characters (any English text), with
the five default special tokens, the tokenizer gives that text ids 0..256, the ints Python
keeps cached, so its id lists are built without allocating an int per token. (A character
that falls back to bytes gets ids of vocab_size - 256 and up, which only costs speed.)
Earlier versions put the bytes right after the special tokens, so their ids differ; a
vocabulary they saved loads with its own ids.

A saved vocabulary keeps its ids whatever Unicode version reloads it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

UNICODE_FILL_ORDER = (
    "Characters that fill the vocabulary after the text's own, in this order: tab, newline, "
    "carriage return and printable ASCII (U+0020-U+007E); then every other assigned code point "
    "in increasing order (surrogates, private use and unassigned excluded); then private-use "
    "code points; then unassigned ones. 'Assigned' follows the Unicode version of Python's "
    "unicodedata; the saved vocabulary keeps the ids fixed whichever version reloads it."
)
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
MAX_CODEPOINT = 0x110000
_ASCII_HEAD = "\t\n\r" + "".join(chr(c) for c in range(0x20, 0x7F))


@lru_cache(maxsize=1)
def unicode_fill_order() -> np.ndarray:
    """All code points except surrogates, in the order `UNICODE_FILL_ORDER` describes.

    Computed once per process (about a third of a second): (1_112_064,) uint32.
    """
    head = np.frombuffer(_ASCII_HEAD.encode("utf-32-le"), dtype=np.uint32)
    category = np.array([unicodedata.category(chr(c))[0:2] for c in range(MAX_CODEPOINT)], dtype="<U2")
    points = np.arange(MAX_CODEPOINT, dtype=np.uint32)
    in_head = np.zeros(MAX_CODEPOINT, dtype=bool)
    in_head[head] = True
    private, unassigned = category == "Co", category == "Cn"
    assigned = ~(private | unassigned | (category == "Cs") | in_head)
    return np.concatenate([head, points[assigned], points[private], points[unassigned]])


def count_characters(texts: Iterable[str], chunk_chars: int = 1 << 20) -> np.ndarray:
    """Count every code point in `texts` (streamed in ~1M-character chunks): (0x110000,) int64."""
    counts = np.zeros(MAX_CODEPOINT, dtype=np.int64)
    chunk: list[str] = []
    size = 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        if size >= chunk_chars:
            counts += np.bincount(codepoints("".join(chunk)), minlength=MAX_CODEPOINT)
            chunk, size = [], 0
    if chunk:
        counts += np.bincount(codepoints("".join(chunk)), minlength=MAX_CODEPOINT)
    return counts


def build_vocabulary(
    vocab_size: int,
    special_tokens: Sequence[str],
    texts: Iterable[str] | None = None,
    byte_fallback: bool | None = None,
) -> tuple[list[str], bool]:
    """The token list (in id order) and whether it holds byte tokens; see the module docstring.

    `byte_fallback=None` turns byte tokens on when, after the special tokens and the 256
    bytes, there is still room for every character of the text and for printable ASCII.
    """
    special_tokens = list(dict.fromkeys(special_tokens))  # roles may share one token (GPT-2)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be a whole number (the model's rows), got {vocab_size!r}")
    if vocab_size <= len(special_tokens):
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for characters after the "
            f"{len(special_tokens)} special tokens {list(special_tokens)}; use at least "
            f"{len(special_tokens) + 1} (a useful character vocabulary has 100 or more)"
        )
    counts = count_characters(texts) if texts is not None else np.zeros(MAX_CODEPOINT, np.int64)
    seen = np.flatnonzero(counts)
    seen = seen[np.lexsort((seen, -counts[seen]))]  # most frequent first, ties by code point
    room = vocab_size - len(special_tokens) - len(BYTE_TOKENS)
    wanted = len(np.union1d(seen, np.frombuffer(_ASCII_HEAD.encode("utf-32-le"), np.uint32)))
    if byte_fallback is None:
        byte_fallback = room >= wanted
    elif byte_fallback and room < 1:
        raise ValueError(
            f"byte_fallback=True needs vocab_size > {len(special_tokens) + len(BYTE_TOKENS)} "
            f"(special tokens + 256 bytes + at least one character), got {vocab_size}"
        )
    bytes_ = list(BYTE_TOKENS) if byte_fallback else []
    n_chars = vocab_size - len(special_tokens) - len(bytes_)
    fill = unicode_fill_order()
    fill = fill[~np.isin(fill, seen)]
    chosen = np.concatenate([seen, fill])[:n_chars]
    return list(special_tokens) + codepoints_to_chars(chosen) + bytes_, byte_fallback


def byte_token_ids(tokens: Sequence[str], n_specials: int, byte_fallback: bool) -> range:
    """The ids of the 256 byte tokens, in byte order: the last ids, or right after the
    `n_specials` special tokens in a vocabulary saved before the bytes moved; empty without."""
    if not byte_fallback:
        return range(0)
    n = len(BYTE_TOKENS)
    for first in (len(tokens) - n, n_specials):
        if first >= n_specials and tuple(tokens[first : first + n]) == BYTE_TOKENS:
            return range(first, first + n)
    raise ValueError(
        "byte_fallback is set but the 256 byte tokens are neither the last ids nor right after "
        "the special tokens: the file was edited or written by another tool"
    )


def read_vocab_file(path: Path, specials: list[str]) -> tuple[list[str], bool]:
    """Load a vocabulary saved by CharacterLevelTokenizer, checking it is the layout it writes."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        tokens, byte_fallback, saved = (
            payload["tokens"],
            payload["byte_fallback"],
            payload["special_tokens"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path}: not a character vocabulary saved by CharacterLevelTokenizer ({exc}); "
            "save one with tokenizer.save_pretrained(directory)"
        ) from exc
    if saved != specials or tokens[: len(saved)] != saved:
        raise ValueError(
            f"{path}: special tokens {saved} do not match the tokenizer config's {specials}; "
            "the folder mixes files from different tokenizers"
        )
    try:
        byte_ids = byte_token_ids(tokens, len(saved), bool(byte_fallback))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    for i, token in enumerate(tokens[len(saved) :], start=len(saved)):
        if len(token) != 1 and i not in byte_ids:
            raise ValueError(f"{path}: token #{i} {token!r} is not a single character")
    return tokens, bool(byte_fallback)


def codepoints(text: str) -> np.ndarray:
    """(len(text),) code points (uint8 for ASCII text, which encodes 7x faster, else uint32);
    a lone surrogate is an error naming its position."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    try:
        return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text contains a lone surrogate {text[exc.start]!r} at character {exc.start}: "
            "it is not valid Unicode; decode the source with errors='replace'"
        ) from exc


def codepoints_to_chars(cps: np.ndarray) -> list[str]:
    """The character of each code point."""
    return list(cps.astype("<u4").tobytes().decode("utf-32-le"))
