"""A character-level tokenizer for any vocabulary size, from 100 to 500,000 and more.

Why characters: a model whose vocabulary is too small for subword units (or a user with no
text to train them on) still needs a tokenizer whose every id is below the model's
vocabulary size. Characters need no training and any vocabulary size can be filled.

The vocabulary's fixed layout is in `character_vocabulary`.

Encoding is a table lookup over the text's UTF-32 code points (numpy), not a Python loop
per character; decoding works on runs of ids the same way.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizer
from transformers.tokenization_utils_base import TruncationStrategy
from transformers.utils import PaddingStrategy

from utils._io import atomic_write_text
from utils.tokenization._common import DEFAULT_SPECIAL_TOKENS
from utils.tokenization.character_vocabulary import (
    MAX_CODEPOINT,
    build_vocabulary,
    byte_token_ids,
    codepoints,
    read_vocab_file,
)

VOCAB_FILE = "char_vocab.json"
_KIND_CHAR, _KIND_BYTE, _KIND_LITERAL = 0, 1, 2
_UTF8_LEAD = np.array([0x00, 0xC0, 0xE0, 0xF0], dtype=np.uint32)
_SENTINEL, _N_SENTINELS = 0xFDD0, 32  # Unicode noncharacters U+FDD0-U+FDEF: never text
_SENTINEL_RE = re.compile("[\ufdd0-\ufdef]")
_CACHED_INT_MAX = 256  # CPython keeps one int object for each of -5..256
# A batch is encoded this many characters at a time (see `_encode_blocks`).
BLOCK_CHARS = 1 << 16


class CharacterLevelTokenizer(PreTrainedTokenizer):
    """A Hugging Face compatible character tokenizer with a vectorised encoder.

    >>> tok = CharacterLevelTokenizer(vocab_size=100_000)
    >>> tok.decode(tok.encode("Hello 世界!")) == "Hello 世界!"
    True

    `__call__`, padding, truncation, `return_tensors`, `decode(skip_special_tokens=...)`,
    `save_pretrained` and `from_pretrained` come from `PreTrainedTokenizer`; this class
    replaces only the per-character work with numpy.
    """

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": VOCAB_FILE}
    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_size: int = 1000,
        texts: Iterable[str] | None = None,
        byte_fallback: bool | None = None,
        vocab_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        for role, default in DEFAULT_SPECIAL_TOKENS.items():
            kwargs.setdefault(role, default)
        specials = list(dict.fromkeys(str(kwargs[r]) for r in DEFAULT_SPECIAL_TOKENS if kwargs[r] is not None))
        if vocab_file is not None:
            tokens, byte_fallback = read_vocab_file(Path(vocab_file), specials)
        else:
            tokens, byte_fallback = build_vocabulary(vocab_size, specials, texts, byte_fallback)
        self._set_vocabulary(tokens, specials, byte_fallback)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(**kwargs)

    # -- vocabulary ---------------------------------------------------------------------

    def _set_vocabulary(self, tokens: list[str], specials: list[str], byte_fallback: bool) -> None:
        """Build the lookup tables: code point -> id, and id -> (kind, code point or byte)."""
        self._tokens = tokens
        self.byte_fallback = byte_fallback
        self._vocab = {t: i for i, t in enumerate(tokens)}
        n = len(tokens)
        self._kind = np.full(n, _KIND_LITERAL, dtype=np.int8)  # (n,)
        self._value = np.zeros(n, dtype=np.uint32)  # (n,) code point or byte value
        byte_ids = byte_token_ids(tokens, len(specials), byte_fallback)
        self._byte_ids = np.arange(byte_ids.start, byte_ids.stop, dtype=np.int32)  # (256,) or (0,)
        self._kind[self._byte_ids] = _KIND_BYTE
        self._value[self._byte_ids] = np.arange(len(byte_ids), dtype=np.uint32)
        is_char = np.ones(n, dtype=bool)  # (n,) every id but the special and byte tokens
        is_char[: len(specials)] = False
        is_char[self._byte_ids] = False
        char_ids = np.flatnonzero(is_char)
        chars = "".join(itertools.compress(tokens, is_char.tolist()))
        self._kind[char_ids] = _KIND_CHAR
        self._value[char_ids] = codepoints(chars)
        self._table = np.full(MAX_CODEPOINT, -1, dtype=np.int32)  # code point -> id
        self._table[self._value[char_ids]] = char_ids

    def _update_trie(self, unique_no_split_tokens: list[str] | None = None) -> None:
        """The base class calls this whenever tokens are added: recompile the literals."""
        super()._update_trie(unique_no_split_tokens)
        self._compile_literals()

    def _compile_literals(self) -> None:
        """Special and added tokens are found in text by one regex. For speed each one is
        swapped for a Unicode noncharacter (U+FDD0...) that a second table maps to its id, so
        the text still goes through one vectorised lookup."""
        literals = sorted(self._added_tokens_encoder, key=len, reverse=True)
        self._literal_ids = dict(self._added_tokens_encoder)
        self._literal_re = re.compile("|".join(map(re.escape, literals))) if literals else None
        self._literal_firsts = {t[0] for t in literals}
        self._sentinel_of: dict[str, str] | None = None
        if len(literals) <= _N_SENTINELS:
            self._sentinel_of = {t: chr(_SENTINEL + k) for k, t in enumerate(literals)}
            self._table_literals = self._table.copy()
            for k, t in enumerate(literals):
                self._table_literals[_SENTINEL + k] = self._literal_ids[t]

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def get_vocab(self) -> dict[str, int]:
        return {**self._vocab, **self._added_tokens_encoder}

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, self.unk_token_id)

    def _convert_id_to_token(self, index: int) -> str:
        return self._tokens[index]

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return [self._tokens[i] for i in self._encode_piece(text, self._table)]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        ids = [self._convert_token_to_id_with_added_voc(t) for t in tokens]
        return self._ids_to_text(np.asarray(ids, dtype=np.int64))

    # -- encoding -----------------------------------------------------------------------

    def encode_to_arrays(self, texts: Sequence[str], split_special_tokens: bool | None = None) -> list[np.ndarray]:
        """Token ids of each text as int32 arrays, no special tokens added: the fast path
        the data modules use (no per-token Python objects). Many texts are looked up in one
        pass when none holds a special token or an unknown character (the common case)."""
        if len(texts) > 1:
            flat, lengths = self._encode_flat(texts, split_special_tokens)  # (N,), (B,)
            return np.split(flat, np.cumsum(lengths)[:-1])
        return [self._encode_text(t, split_special_tokens) for t in texts]

    def _encode_text(self, text: str, split_special_tokens: bool | None = None) -> np.ndarray:
        """Ids of `text`: special and added token strings in it become their ids unless
        `split_special_tokens` (Hugging Face semantics)."""
        split = self.split_special_tokens if split_special_tokens is None else split_special_tokens
        if split or not self._may_hold_literal(text):
            return self._encode_piece(text, self._table)
        if self._sentinel_of is not None and _SENTINEL_RE.search(text) is None:
            swapped = self._literal_re.sub(lambda m: self._sentinel_of[m.group()], text)
            return self._encode_piece(swapped, self._table_literals)
        pieces, start = [], 0
        for m in self._literal_re.finditer(text):
            pieces.append(self._encode_piece(text[start : m.start()], self._table))
            pieces.append(np.array([self._literal_ids[m.group()]], dtype=np.int32))
            start = m.end()
        pieces.append(self._encode_piece(text[start:], self._table))
        return np.concatenate(pieces)

    def _may_hold_literal(self, text: str) -> bool:
        """A literal's first character must occur before the regex is worth running (a
        memchr per character, so text without '<' costs next to nothing)."""
        return (
            self._literal_re is not None
            and any(c in text for c in self._literal_firsts)
            and self._literal_re.search(text) is not None
        )

    def _encode_piece(self, text: str, table: np.ndarray) -> np.ndarray:
        """Ids of plain text: one table lookup per code point, bytes or <unk> for the rest."""
        cps = codepoints(text)  # (n,)
        ids = np.take(table, cps)  # (n,) int32, -1 where the character has no token
        if ids.size == 0 or ids.min() >= 0:
            return ids
        unknown = ids < 0
        if not self.byte_fallback:
            ids[unknown] = self.unk_token_id
            return ids
        return self._expand_to_bytes(ids, cps, unknown)

    def _expand_to_bytes(self, ids: np.ndarray, cps: np.ndarray, unknown: np.ndarray) -> np.ndarray:
        """Replace each unknown character by the ids of its 1-4 UTF-8 bytes, in place order."""
        cps = cps.astype(np.uint32)
        n_bytes = 1 + (cps >= 0x80).astype(np.int32) + (cps >= 0x800) + (cps >= 0x10000)  # (n,)
        shifts = 6 * (n_bytes[:, None] - 1 - np.arange(4))  # (n, 4) bits below each byte
        units = (cps[:, None] >> np.maximum(shifts, 0).astype(np.uint32)) & 0x3F  # (n, 4)
        units[:, 0] = (cps >> (6 * (n_bytes - 1)).astype(np.uint32)) | _UTF8_LEAD[n_bytes - 1]
        units[:, 1:] |= 0x80
        rows = np.where(unknown[:, None], self._byte_ids[units & 0xFF], ids[:, None])  # (n, 4)
        width = np.where(unknown, n_bytes, 1)  # (n,) tokens each character becomes
        return rows[np.arange(4) < width[:, None]]  # row-major: order kept

    def _encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> Any:
        """A batch of strings takes the vectorised path end to end (`_encode_batch`); the
        rest is turned into id lists with the vectorised encoder, and the base class does
        special tokens, truncation, padding and tensors exactly as for any tokenizer."""
        if text_pair is None and self._batch_fast_path_applies(text, kwargs):
            result = self._encode_batch(text, **kwargs)
            if result is not None:
                return result
        if not kwargs.get("is_split_into_words", False):
            split = kwargs.get("split_special_tokens")
            text = self._strings_to_ids(text, split)
            text_pair = self._strings_to_ids(text_pair, split)
        return super()._encode_plus(text=text, text_pair=text_pair, **kwargs)

    # The options `_encode_batch` implements itself; anything else goes the general way.
    _FAST_OPTIONS = frozenset(
        {
            "add_special_tokens",
            "padding_strategy",
            "truncation_strategy",
            "max_length",
            "pad_to_multiple_of",
            "padding_side",
            "return_tensors",
            "return_attention_mask",
            "split_special_tokens",
            "verbose",
            "is_split_into_words",
            "stride",
            "return_token_type_ids",
            "return_overflowing_tokens",
            "return_special_tokens_mask",
            "return_length",
            "return_offsets_mapping",
        }
    )

    def _batch_fast_path_applies(self, text: Any, kwargs: dict[str, Any]) -> bool:
        if not (isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text)):
            return False
        if set(kwargs) - self._FAST_OPTIONS or kwargs.get("is_split_into_words"):
            return False
        if kwargs.get("stride") or any(
            kwargs.get(k)
            for k in (
                "return_token_type_ids",
                "return_overflowing_tokens",
                "return_special_tokens_mask",
                "return_length",
                "return_offsets_mapping",
            )
        ):
            return False
        specials = kwargs.get("add_special_tokens", True) and self.num_special_tokens_to_add() > 0
        return not specials

    def _encode_batch(
        self,
        texts: Sequence[str],
        padding_strategy: PaddingStrategy = PaddingStrategy.DO_NOT_PAD,
        truncation_strategy: TruncationStrategy = TruncationStrategy.DO_NOT_TRUNCATE,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: Any = None,
        return_attention_mask: bool | None = None,
        split_special_tokens: bool | None = None,
        **_: Any,
    ) -> BatchEncoding | None:
        """`tok(batch, padding=..., truncation=..., return_tensors=...)` for plain strings:
        the texts are encoded a block at a time (`_Block`), each row is a (start, length)
        window on its block's ids, and each padded (B, T) row is one slice copy. Same ids,
        masks and layout as the base class's loop over `prepare_for_model` and `pad`,
        without a Python object per token. None when only the general path gives the base
        class's exact result."""
        blocks = self._encode_blocks(texts, split_special_tokens)
        if truncation_strategy != TruncationStrategy.DO_NOT_TRUNCATE and max_length is not None:
            for block in blocks:
                block.truncate(max_length, self.truncation_side)
        lengths = np.concatenate([block.lengths for block in blocks])  # (B,)
        mask_wanted = return_attention_mask is not False
        longest = int(lengths.max())
        if padding_strategy == PaddingStrategy.DO_NOT_PAD:
            if return_tensors is None:
                return self._lists_result(blocks, lengths, mask_wanted)
            if int(lengths.min()) != longest:
                raise ValueError(
                    "Unable to create tensor from sequences of different lengths: "
                    "pass padding=True (or truncation=True with max_length)"
                )
            width = longest
        elif padding_strategy == PaddingStrategy.LONGEST:
            width = longest
        elif max_length is not None and longest > max_length:
            return None  # the base class leaves longer rows unpadded: a ragged batch
        else:
            width = longest if max_length is None else max_length
        if pad_to_multiple_of and padding_strategy != PaddingStrategy.DO_NOT_PAD:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        pad = self.pad_token_id
        if pad is None and padding_strategy != PaddingStrategy.DO_NOT_PAD:
            return None  # the base class says how to set a padding token
        side = padding_side or self.padding_side
        ids = np.empty((len(lengths), width), dtype=np.int64)  # (B, T)
        wants_mask_array = mask_wanted and return_tensors is not None  # list rows are list products
        mask = np.ones_like(ids) if wants_mask_array else None  # (B, T)
        _fill_rows(blocks, ids, mask, side, pad or 0)
        if return_tensors is None:
            return self._padded_lists_result(ids, lengths, width, side, mask_wanted)
        data = {"input_ids": ids, **({"attention_mask": mask} if mask_wanted else {})}
        if str(return_tensors) in ("pt", "TensorType.PYTORCH"):
            import torch

            return BatchEncoding({k: torch.from_numpy(v) for k, v in data.items()})
        return BatchEncoding(data, tensor_type=return_tensors)

    def _encode_flat(self, texts: Sequence[str], split: bool | None, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids back to back, and each text's length: (N,) int32, (B,) int64.
        One lookup over the joined text when no text holds a literal or an unknown character.
        `first`: the batch index of texts[0], for an error naming the text at fault."""
        joined = "".join(texts)
        split = self.split_special_tokens if split is None else split
        if split or not self._may_hold_literal(joined):  # a literal in a text is one here
            try:
                cps = codepoints(joined)  # (N,)
            except ValueError:
                raise _text_at_fault(texts, first) from None
            flat = np.take(self._table, cps)  # (N,) -1 where unknown
            if flat.size == 0 or flat.min() >= 0:
                return flat, np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        try:
            rows = [self._encode_text(t, split) for t in texts]
        except ValueError:
            raise _text_at_fault(texts, first) from None
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        return np.concatenate(rows).astype(np.int32, copy=False), lengths

    def _encode_blocks(self, texts: Sequence[str], split: bool | None) -> list[_Block]:
        """The texts encoded in blocks of about BLOCK_CHARS characters (whole texts): every
        temporary stays small enough to be reused from the heap and to stay in cache, where
        one array for a large batch would be fresh memory, faulted in page by page, on
        every call."""
        blocks, first = [], 0
        while first < len(texts):
            end, size = first, 0
            while end < len(texts) and (end == first or size + len(texts[end]) <= BLOCK_CHARS):
                size += len(texts[end])
                end += 1
            flat, lengths = self._encode_flat(texts[first:end], split, first)
            blocks.append(_Block(first, flat, np.cumsum(lengths) - lengths, lengths))
            first = end
        return blocks

    def _lists_result(self, blocks: list[_Block], lengths: np.ndarray, mask_wanted: bool) -> BatchEncoding:
        """Unpadded rows as lists of ints: each row the `.tolist()` of its window on its
        block's ids (`_listable`); a mask row is one list product."""
        rows: list[list[int]] = []
        for block in blocks:
            shared = self._listable(block.flat)  # (N,)
            ends = (block.starts + block.lengths).tolist()
            rows += [shared[a:b].tolist() for a, b in zip(block.starts.tolist(), ends)]
        data: dict[str, Any] = {"input_ids": rows}
        if mask_wanted:
            data["attention_mask"] = [[1] * n for n in lengths.tolist()]
        return BatchEncoding(data)

    def _padded_lists_result(
        self, ids: np.ndarray, lengths: np.ndarray, width: int, side: str, mask_wanted: bool
    ) -> BatchEncoding:
        """Padded rows as lists of ints; a mask row is two list products."""
        data: dict[str, Any] = {"input_ids": self._listable(ids).tolist()}
        if mask_wanted:
            data["attention_mask"] = [
                [0] * (width - n) + [1] * n if side == "left" else [1] * n + [0] * (width - n) for n in lengths.tolist()
            ]
        return BatchEncoding(data)

    def _listable(self, ids: np.ndarray) -> np.ndarray:
        """`ids` in the form whose `.tolist()` is cheapest: as they are when every id is one
        of the ints Python keeps cached (up to 256, the common case: see the vocabulary's
        layout), so no int is allocated; else as the shared int objects of `_id_objects`."""
        if ids.size == 0 or int(ids.max()) <= _CACHED_INT_MAX:
            return ids
        return self._id_objects().take(ids.astype(np.intp))  # intp indices take the fast loop

    def _id_objects(self) -> np.ndarray:
        """(len(self),) object array holding the int of every id, built once per vocabulary:
        indexing it gives lists of shared int objects, several times faster than `.tolist()`,
        which allocates a new int per token."""
        size = max(len(self._tokens), max(self._added_tokens_decoder, default=-1) + 1)
        table = self.__dict__.get("_id_table")
        if table is None or len(table) != size:  # len(self) would build the vocabulary dict
            table = self._id_table = np.array(range(size), dtype=object)
        return table

    def _strings_to_ids(self, value: Any, split: bool | None) -> Any:
        if isinstance(value, str):
            # An empty string stays a string: the base class reads [] as an empty batch.
            return self._encode_text(value, split).tolist() if value else value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (str, list, tuple)):
            return type(value)(self._strings_to_ids(v, split) for v in value)
        return value

    # -- decoding -----------------------------------------------------------------------

    def decode(self, token_ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> Any:
        """As the base class, but one sequence given as an array or tensor is decoded
        straight from it, without a round trip through a Python list of ints."""
        if hasattr(token_ids, "detach"):
            token_ids = token_ids.detach().cpu().numpy()
        if isinstance(token_ids, np.ndarray) and token_ids.ndim <= 1:
            return self._decode(token_ids, skip_special_tokens=skip_special_tokens)
        return super().decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        ids = np.atleast_1d(np.asarray(token_ids, dtype=np.int64))
        if skip_special_tokens and ids.size:
            ids = ids[~np.isin(ids, self.all_special_ids)]
        return self._ids_to_text(ids)

    def _ids_to_text(self, ids: np.ndarray) -> str:
        """Decode runs of same-kind ids at once: characters via UTF-32, bytes via UTF-8
        (an incomplete byte sequence becomes U+FFFD), special and added tokens verbatim."""
        if ids.size == 0:
            return ""
        total = len(self)
        bad = (ids < 0) | (ids >= total)
        if bad.any():
            raise ValueError(
                f"token id {int(ids[bad][0])} is outside this tokenizer's vocabulary "
                f"(ids 0..{total - 1}); the ids come from a different tokenizer or model"
            )
        base = ids < len(self._tokens)
        kinds = np.full(ids.shape, _KIND_LITERAL, dtype=np.int8)
        kinds[base] = self._kind[ids[base]]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(kinds)) + 1, [ids.size]])
        parts = []
        for a, b in itertools.pairwise(starts):
            run = ids[a:b]
            if kinds[a] == _KIND_CHAR:
                parts.append(self._value[run].astype("<u4").tobytes().decode("utf-32-le"))
            elif kinds[a] == _KIND_BYTE:
                parts.append(self._value[run].astype(np.uint8).tobytes().decode("utf-8", "replace"))
            else:
                parts.append("".join(self.convert_ids_to_tokens(run.tolist())))
        return "".join(parts)

    # -- saving -------------------------------------------------------------------------

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        name = f"{filename_prefix}-{VOCAB_FILE}" if filename_prefix else VOCAB_FILE
        path = Path(save_directory) / name
        payload = {
            "format": "character-level",
            "byte_fallback": self.byte_fallback,
            "special_tokens": [t for t in self._tokens if self._kind[self._vocab[t]] == _KIND_LITERAL],
            "tokens": self._tokens,
        }
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False))
        return (str(path),)


@dataclass
class _Block:
    """Consecutive texts of a batch encoded together: rows `first`, `first + 1`, ... are the
    windows (starts[k], lengths[k]) of `flat`."""

    first: int
    flat: np.ndarray  # (N,) int32 ids of the block's texts back to back
    starts: np.ndarray  # (rows,) int64
    lengths: np.ndarray  # (rows,) int64

    def truncate(self, max_length: int, side: str) -> None:
        """Keep at most `max_length` ids of each row, its first ones or (`side` "left") its last."""
        kept = np.minimum(self.lengths, max_length)
        if side == "left":
            self.starts = self.starts + self.lengths - kept
        self.lengths = kept


def _fill_rows(blocks: list[_Block], ids: np.ndarray, mask: np.ndarray | None, side: str, pad: int) -> None:
    """Write each row's ids into the (B, T) `ids`, `pad` where the row is shorter, and zero
    the padding in the all-ones `mask`. A block whose rows all fill the width back to back
    (fixed-size chunks) is one copy; otherwise each row is one slice copy from its block (a
    memcpy, cheaper than a gather over every cell), and only rows shorter than T get padding."""
    width = ids.shape[1]
    for block in blocks:
        rows = len(block.lengths)
        if block.flat.size == rows * width and int(block.lengths.min()) == width:
            ids[block.first : block.first + rows] = block.flat.reshape(rows, width)
            continue
        for row, (start, n) in enumerate(zip(block.starts.tolist(), block.lengths.tolist()), block.first):
            first = width - n if side == "left" else 0
            ids[row, first : first + n] = block.flat[start : start + n]
            if n < width:
                ids[row, :first] = pad
                ids[row, first + n :] = pad
                if mask is not None:
                    mask[row, :first] = 0
                    mask[row, first + n :] = 0


def _text_at_fault(texts: Sequence[str], first: int) -> ValueError:
    """The lone-surrogate error of the first of `texts` holding one, naming that text's index
    in the batch (`first` is texts[0]'s) and the character's place within it."""
    for index, text in enumerate(texts, first):
        try:
            codepoints(text)
        except ValueError as exc:
            return ValueError(f"text {index} of the batch: {exc}")
    return ValueError("a text of the batch is not valid Unicode")
