"""Text to batches, for any task, fast.

`AdaptiveTokenizerDataModule` takes text from a list of strings (or of {"text", "label"}
records), a .txt / .csv / .jsonl / .parquet file, a `datasets` Dataset or DatasetDict, or a
hub dataset name, and serves batches as dicts:

- `input_ids` (B, T) long and `attention_mask` (B, T) long (1 = real token);
- `labels`: (B, T) for language modelling, -100 wherever no loss is taken (padding; for masked
  LM, every position that was not masked); (B,) class indices for classification.

Tasks: `causal_lm` joins documents with EOS and packs them into full blocks of `max_length`
(no padding waste; labels equal input_ids, the model shifts them); `masked_lm` packs the same
way and masks anew every time a batch is drawn (15%: 80% <mask>, 10% random, 10% kept);
`classification` keeps one text per row (truncated to `max_length`, padded per batch).
`packing=False` gives one padded document per row for the language-modelling tasks.

Speed: documents are joined into ~32K-character chunks and encoded with the tokenizer's
fast batch API (`encode_batch_fast`, or the character tokenizer's numpy path), straight into
numpy arrays. The result is cached on disk (safetensors) under a fingerprint of the text,
the tokenizer and the task, so a corpus is tokenised once. The train/validation split is a
permutation seeded by `seed`: the same arguments always give the same split.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from utils._io import atomic_write_bytes, default_cache_dir
from utils.tokenization._common import (
    hash_files,
    hash_settings,
    hash_texts,
    hub_offline_reason,
    offline_mode,
    tokenizer_fingerprint,
)
from utils.tokenization.adaptive_tokenizer import TokenizerChoice

log = logging.getLogger(__name__)

TASKS = ("causal_lm", "masked_lm", "classification")
IGNORE_INDEX = -100
CHUNK_CHARS = 1 << 15
CHUNKS_PER_CALL = 64
ENCODE_BATCH = 256
FILE_TYPES = {".txt": "text", ".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
VALIDATION_SPLITS = ("validation", "valid", "val")
_CACHE_FORMAT = 1


# -- encoding -------------------------------------------------------------------------------


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
    bar = tqdm(total=total_chars, unit="char", unit_scale=True, desc="tokenizing",
               disable=total_chars is None or total_chars < 5_000_000, leave=False)
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
        return [np.asarray(e.ids, dtype=np.int32)
                for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
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


# -- masking and batching -------------------------------------------------------------------


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `probability` of the real, non-special tokens (at least one per
    row that has any); of those 80% become `mask_id`, 10% a random id, 10% stay. Returns
    (inputs, labels), labels -100 everywhere except the picked positions. Shapes (B, T)."""
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special_ids)  # (B, T)
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    empty_rows = candidates.any(dim=1) & ~chosen.any(dim=1)  # (B,)
    if empty_rows.any():
        rows = empty_rows.nonzero().squeeze(1)
        cols = torch.multinomial(candidates[rows].float(), 1, generator=generator).squeeze(1)
        chosen[rows, cols] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    draw = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (draw < 0.8)] = mask_id
    randomised = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[randomised] = torch.randint(vocab_size, (int(randomised.sum()),), generator=generator)
    return inputs, labels


@dataclass
class BatchCollator:
    """Turn dataset items ({"input_ids": (t,) int tensor, "label"?: int}) into a batch.

    Holds only numbers, so it pickles cheaply into DataLoader workers. Masking uses torch's
    global generator, which Lightning's `seed_everything` and each worker's seed control.
    """

    task: str
    pad_id: int
    mask_id: int | None
    special_ids: tuple[int, ...]
    vocab_size: int
    mlm_probability: float

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(it["input_ids"]) for it in items]
        input_ids = torch.full((len(items), max(lengths)), self.pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros_like(input_ids)
        for row, (item, n) in enumerate(zip(items, lengths, strict=True)):
            input_ids[row, :n] = item["input_ids"]
            attention_mask[row, :n] = 1
        if self.task == "classification":
            labels = torch.tensor([it["label"] for it in items], dtype=torch.long)  # (B,)
        elif self.task == "masked_lm":
            special = torch.tensor(self.special_ids, dtype=torch.long)
            input_ids, labels = mask_tokens(input_ids, attention_mask, special, self.mask_id,
                                            self.vocab_size, self.mlm_probability)
        else:
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class _Blocks(Dataset):
    """Rows of a packed (N, T) int32 array."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.blocks = torch.from_numpy(blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.blocks[i]}


class _Rows(Dataset):
    """Ragged rows (flat ids + per-row start and end), truncated to `max_length`, with
    optional labels."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_length: int,
                 labels: np.ndarray | None) -> None:
        self.flat = torch.from_numpy(flat)
        self.starts, self.ends = starts, np.minimum(ends, starts + max_length)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.flat[int(self.starts[i]) : int(self.ends[i])]}
        if self.labels is not None:
            item["label"] = int(self.labels[i])
        return item


# -- text sources ---------------------------------------------------------------------------


@dataclass
class _Corpus:
    """Texts (and labels) of the train split and, when the source has one, the validation
    split; `fingerprint` identifies the content for the cache."""

    train: list[str]
    val: list[str] | None
    train_labels: list[Any] | None
    val_labels: list[Any] | None
    fingerprint: str
    source: str


def load_corpus(
    source: Any,
    text_column: str = "text",
    label_column: str | None = None,
    dataset_config: str | None = None,
    cache_dir: Path | None = None,
) -> _Corpus:
    """Read texts (and labels when `label_column`) from any supported source; a clear
    error naming the file, column or row for anything unusable."""
    import datasets

    if isinstance(source, (list, tuple)):
        if source and all(isinstance(x, dict) for x in source):
            return _from_dataset(datasets.Dataset.from_list(list(source)), text_column,
                                 label_column, "records")
        texts = _check_strings(source, "dataset")
        if label_column is not None:
            raise ValueError(
                "classification needs labels: give records [{'text': ..., 'label': ...}], a "
                ".csv/.jsonl/.parquet file or a Dataset with a label column"
            )
        return _Corpus(texts, None, None, None, "texts:" + hash_texts(texts), f"{len(texts)} texts")
    if isinstance(source, datasets.DatasetDict):
        return _from_dataset_dict(source, text_column, label_column)
    if isinstance(source, datasets.Dataset):
        return _from_dataset(source, text_column, label_column, "Dataset")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_file():
            return _from_file(path, text_column, label_column, cache_dir)
        if path.suffix.lower() in FILE_TYPES or path.exists():
            raise FileNotFoundError(f"dataset file {path} does not exist (or is not a file)")
        return _from_hub(str(source), dataset_config, text_column, label_column)
    raise TypeError(
        f"dataset must be a list of strings, a file path, a datasets Dataset/DatasetDict or a "
        f"hub dataset name, got {type(source).__name__}"
    )


def _from_file(path: Path, text_column: str, label_column: str | None,
               cache_dir: Path | None) -> _Corpus:
    import datasets

    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported file type; use one of {sorted(FILE_TYPES)}")
    if kind == "text":
        if label_column is not None:
            raise ValueError(f"{path}: a .txt file has no labels; classification needs "
                             ".csv/.jsonl/.parquet with a label column")
        return _Corpus([_read_utf8(path)], None, None, None, "file:" + hash_files([path]), str(path))
    if kind != "parquet":
        _read_utf8(path)  # a clear error naming the line, before the CSV/JSON parser fails
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train",
                                   cache_dir=str(cache_dir / "datasets") if cache_dir else None)
    except Exception as exc:  # datasets says "An error occurred while generating the dataset"
        raise _file_error(path, kind, exc) from exc
    # The fingerprint stays the one of the chosen columns' content: a hash of the whole file
    # would serve one column's cached tokens for another.
    return _from_dataset(ds, text_column, label_column, str(path))


def _file_error(path: Path, kind: str, exc: Exception) -> ValueError:
    """The file and line a CSV/JSON parser choked on, found by reading it line by line."""
    if kind == "json":
        with path.open(encoding="utf-8") as f:
            first = f.read(1)
            f.seek(0)
            if first != "[":  # JSON lines: each line one object
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as bad:
                        return ValueError(
                            f"{path} line {number}: not valid JSON ({bad.msg}, column "
                            f"{bad.colno}); each line of a .jsonl file must be one JSON object")
    cause = exc.__cause__ or exc.__context__ or exc
    return ValueError(f"{path}: could not be read as {kind.upper()} ({type(cause).__name__}: "
                      f"{str(cause).splitlines()[0] if str(cause) else 'no detail'}); fix the file "
                      "or give a .txt file")


def _from_hub(name: str, config: str | None, text_column: str, label_column: str | None) -> _Corpus:
    """A hub dataset, through the datasets library's own cache (so a copy downloaded before,
    in Colab or elsewhere, loads offline)."""
    import datasets

    reason = hub_offline_reason()
    if reason and not offline_mode():  # unreachable: datasets would retry for a minute
        raise ConnectionError(
            f"dataset {name!r} is not a local file, so it would come from the Hugging Face Hub, "
            f"which cannot be reached ({reason}). Give a local .txt/.csv/.jsonl/.parquet file or "
            "a list of strings (or set HF_HUB_OFFLINE=1 to use a copy in the local cache)"
        )
    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as exc:  # datasets raises many types for one cause
        raise ValueError(
            f"dataset {name!r} could not be loaded from the Hugging Face Hub"
            f"{' (offline mode, not in the local cache)' if reason else ''}: "
            f"{type(exc).__name__}: {exc}. Give a local file or a list of strings instead"
        ) from exc
    return _from_dataset_dict(loaded, text_column, label_column)


def _from_dataset_dict(dd: Any, text_column: str, label_column: str | None) -> _Corpus:
    if "train" not in dd:
        raise ValueError(f"the DatasetDict has no 'train' split (splits: {sorted(dd)})")
    corpus = _from_dataset(dd["train"], text_column, label_column, "DatasetDict['train']")
    val_name = next((s for s in VALIDATION_SPLITS if s in dd), None)
    if val_name is not None:
        val = _from_dataset(dd[val_name], text_column, label_column, f"DatasetDict[{val_name!r}]")
        corpus.val, corpus.val_labels = val.train, val.train_labels
        corpus.fingerprint += "+" + val.fingerprint
    return corpus


def _from_dataset(ds: Any, text_column: str, label_column: str | None, where: str) -> _Corpus:
    for column in [text_column] + ([label_column] if label_column else []):
        if column not in ds.column_names:
            raise KeyError(
                f"{where}: no column {column!r}; columns are {ds.column_names} "
                f"(choose with text_column= / label_column=)"
            )
    texts = _check_strings(ds[text_column], f"{where} column {text_column!r}")
    labels = list(ds[label_column]) if label_column else None
    content = hash_texts(itertools.chain(texts, map(repr, labels or [])))
    return _Corpus(texts, None, labels, None, f"texts:{content}", where)


def _check_strings(values: Sequence[Any], where: str) -> list[str]:
    texts = list(values)
    for i, value in enumerate(texts):
        if not isinstance(value, str):
            raise TypeError(f"{where}: item {i} is {type(value).__name__} ({value!r:.60}), not text")
    return texts


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"{path}: not UTF-8 (byte {exc.start}, line {line}: {data[exc.start:exc.start + 4]!r}); "
            "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from exc


def _label_ids(train: list[Any], val: list[Any] | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Integer labels as they are; string labels numbered in sorted order (names kept)."""
    everything = train + (val or [])
    if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in everything):
        if min(everything) < 0:
            raise ValueError(f"classification labels must be >= 0, found {min(everything)}")
        names = [str(i) for i in range(max(everything) + 1)]
        to_id = int
    elif all(isinstance(x, str) for x in everything):
        names = sorted(set(everything))
        index = {name: i for i, name in enumerate(names)}
        to_id = index.__getitem__
    else:
        kinds = sorted({type(x).__name__ for x in everything})
        raise TypeError(f"classification labels must all be integers or all strings, found {kinds}")
    train_ids = np.array([to_id(x) for x in train], dtype=np.int64)
    val_ids = np.array([to_id(x) for x in val], dtype=np.int64) if val is not None else None
    return train_ids, val_ids, names


# -- the data modules -----------------------------------------------------------------------


def check_fits_model(tokenizer: Any, max_length: int, profile: Any) -> None:
    """Refuse, before any text is read, a tokenizer whose ids pass the model's vocabulary or a
    `max_length` past its `max_seq_len`: inside `fit` either is an IndexError on CPU and a
    device-side assert (a dead runtime) on a GPU. `profile` is a ModelProfile (or anything
    with `vocab_size` and `max_seq_len`); unknown sizes are not checked."""
    vocab = getattr(profile, "vocab_size", None)
    ids = tokenizer.get_vocab().values()
    needed = max(len(tokenizer), max(ids, default=-1) + 1)
    if vocab is not None and needed > vocab:
        raise ValueError(
            f"the tokenizer emits ids up to {needed - 1} but the model has vocab_size {vocab} "
            f"({getattr(profile, 'vocab_source', 'its profile')}): ids {vocab} and up would crash "
            f"its embedding. Use a tokenizer of at most {vocab} tokens, or a model with "
            f"vocab_size >= {needed}")
    limit = getattr(profile, "max_seq_len", None)
    if limit is not None and max_length > limit:
        raise ValueError(
            f"max_length={max_length} is longer than the model's max_seq_len {limit} "
            f"({getattr(profile, 'max_seq_len_source', 'its profile')}): positions past "
            f"{limit} have no embedding. Give max_length <= {limit}")


class AdaptiveTokenizerDataModule(pl.LightningDataModule):
    """Tokenise text once and serve batches for `task`; see the module docstring.

    >>> dm = AdaptiveTokenizerDataModule(dataset=texts, tokenizer=tok, batch_size=16,
    ...                                  max_length=512, val_split=0.1)
    >>> dm.setup(); batch = next(iter(dm.train_dataloader()))

    `profile` (the adapted model's `ModelProfile`, or the `AdaptedModel`) makes the module
    refuse, up front and naming both numbers, a tokenizer or `max_length` the model cannot
    take.
    """

    def __init__(
        self,
        dataset: Any,
        tokenizer: Any,
        batch_size: int = 16,
        max_length: int = 512,
        val_split: float = 0.1,
        task: str = "causal_lm",
        packing: bool = True,
        text_column: str = "text",
        label_column: str = "label",
        dataset_config: str | None = None,
        mlm_probability: float = 0.15,
        seed: int = 42,
        num_workers: int = 0,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        profile: Any = None,
    ) -> None:
        super().__init__()
        _check_positive_int("batch_size", batch_size)
        _check_positive_int("max_length", max_length)
        _check_positive_int("num_workers", num_workers, allow_zero=True)
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {TASKS}")
        if not 0.0 <= val_split < 1.0:
            raise ValueError(f"val_split must be in [0, 1), got {val_split}")
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        self.tokenizer = tokenizer.tokenizer if isinstance(tokenizer, TokenizerChoice) else tokenizer
        self.dataset = dataset
        self.batch_size, self.max_length, self.val_split = batch_size, max_length, val_split
        self.task, self.packing = task, packing and task != "classification"
        self.text_column, self.label_column = text_column, label_column
        self.dataset_config, self.mlm_probability = dataset_config, mlm_probability
        self.seed, self.num_workers = seed, num_workers
        self.cache_dir = (Path(cache_dir) if cache_dir else default_cache_dir()) if cache else None
        if profile is not None:
            check_fits_model(self.tokenizer, max_length, getattr(profile, "profile", profile))
        self.separator_id = self._required_ids()
        self.collator = BatchCollator(
            task=task,
            pad_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0,
            mask_id=self.tokenizer.mask_token_id,
            special_ids=tuple(i for i in self.tokenizer.all_special_ids if i is not None),
            vocab_size=len(self.tokenizer),
            mlm_probability=mlm_probability,
        )
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.label_names: list[str] = []
        self.stats: dict[str, Any] = {}

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def setup(self, stage: str | None = None) -> None:
        """Load, tokenise (or read the cache), pack and split; done once, whatever the stage."""
        if self.train_dataset is not None:
            return
        corpus = load_corpus(self.dataset, self.text_column,
                             self.label_column if self.task == "classification" else None,
                             self.dataset_config, self.cache_dir)
        if not any(corpus.train):
            raise ValueError(
                f"{corpus.source}: no text ({len(corpus.train)} documents, all empty)"
            )
        arrays = self._tokenized(corpus)
        train, val = self._examples(arrays, "train"), None
        if "val.tokens" in arrays:
            val = self._examples(arrays, "val")
        elif self.val_split > 0:
            train, val = self._split(train)
        self.train_dataset, self.val_dataset = train, val
        self.stats.update(source=corpus.source, train_examples=len(train),
                          val_examples=len(val) if val is not None else 0)
        log.info("data: %s", self.stats)

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader(self.train_dataset, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader | list:
        self._require_setup()
        return self._loader(self.val_dataset, shuffle=False) if self.val_dataset is not None else []

    # -- steps --------------------------------------------------------------------------

    def _required_ids(self) -> int | None:
        """Check the tokenizer has what the task needs; returns the document separator id."""
        tok = self.tokenizer
        separator = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if self.packing and separator is None:
            raise ValueError(
                "packing documents needs an end-of-text token to separate them, and the "
                "tokenizer has no eos_token (or sep_token): set tokenizer.eos_token, or "
                "packing=False"
            )
        if self.task == "masked_lm" and tok.mask_token_id is None:
            raise ValueError(
                "masked_lm needs a mask token and the tokenizer has none: "
                "tokenizer.add_special_tokens({'mask_token': '<mask>'}) (and grow the model's "
                "vocab_size to len(tokenizer)), or use task='causal_lm'"
            )
        if not self.packing and tok.pad_token_id is None:
            raise ValueError(
                f"task={self.task!r} pads rows to a common length and the tokenizer has no "
                "pad_token: set tokenizer.pad_token = tokenizer.eos_token (or add '<pad>')"
            )
        return separator

    def _tokenized(self, corpus: _Corpus) -> dict[str, np.ndarray]:
        """Arrays per split ("train.tokens", "train.lengths", "train.labels", "val.*"), from
        the cache when this text, tokenizer and task were tokenised before."""
        path = self._cache_path(corpus) if self.cache_dir is not None else None
        if path is not None and path.is_file():
            arrays = load_arrays(path.read_bytes())
            self.label_names = json.loads(arrays.pop("label_names").tobytes().decode())
            self.stats["cache"] = f"hit: {path}"
            return arrays
        arrays = self._encode(corpus)
        if path is not None:
            names = np.frombuffer(json.dumps(self.label_names).encode(), dtype=np.uint8)
            atomic_write_bytes(path, save_arrays({**arrays, "label_names": names}))
            self.stats["cache"] = f"written: {path}"
        return arrays

    def _cache_path(self, corpus: _Corpus) -> Path:
        key = hash_settings(format=_CACHE_FORMAT, corpus=corpus.fingerprint, task=self.task,
                            packing=self.packing, tokenizer=tokenizer_fingerprint(self.tokenizer))
        return self.cache_dir / "tokenized" / f"{key[:32]}.safetensors"

    def _encode(self, corpus: _Corpus) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        splits = {"train": corpus.train} | ({"val": corpus.val} if corpus.val is not None else {})
        for name, texts in splits.items():
            if self.packing:
                arrays[f"{name}.tokens"] = encode_stream(
                    self.tokenizer, texts, self.separator_id, sum(map(len, texts)))
                arrays[f"{name}.lengths"] = np.array([len(arrays[f"{name}.tokens"])], np.int64)
            else:
                flat, lengths = encode_ragged(self.tokenizer, texts)
                if self.task == "causal_lm" and self.separator_id is not None:
                    flat, lengths = _insert_after_each(flat, lengths, self.separator_id), lengths + 1
                arrays[f"{name}.tokens"], arrays[f"{name}.lengths"] = flat, lengths
        if self.task == "classification":
            train_ids, val_ids, self.label_names = _label_ids(corpus.train_labels, corpus.val_labels)
            arrays["train.labels"] = train_ids
            if val_ids is not None:
                arrays["val.labels"] = val_ids
        return arrays

    def _examples(self, arrays: dict[str, np.ndarray], split: str) -> Dataset:
        tokens = arrays[f"{split}.tokens"]
        if self.packing:
            n_blocks = len(tokens) // self.max_length
            if n_blocks == 0:
                raise ValueError(
                    f"the {split} text is shorter than one block: {len(tokens)} tokens, "
                    f"max_length={self.max_length}. Give more text or a smaller max_length"
                )
            self.stats[f"{split}_tokens"] = len(tokens)
            self.stats[f"{split}_dropped_tokens"] = len(tokens) - n_blocks * self.max_length
            return _Blocks(tokens[: n_blocks * self.max_length].reshape(n_blocks, self.max_length))
        lengths = arrays[f"{split}.lengths"]
        keep = lengths > 0
        if not keep.any():
            raise ValueError(f"every {split} document is empty after tokenisation")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        labels = arrays.get(f"{split}.labels")
        self.stats[f"{split}_tokens"] = int(lengths.sum())
        self.stats[f"{split}_truncated_rows"] = int((lengths > self.max_length).sum())
        self.stats[f"{split}_empty_rows_dropped"] = int((~keep).sum())
        return _Rows(tokens, offsets[:-1][keep], offsets[1:][keep], self.max_length,
                     labels[keep] if labels is not None else None)

    def _split(self, dataset: Dataset) -> tuple[Dataset, Dataset]:
        """Seeded permutation: the same seed gives the same validation examples."""
        n = len(dataset)
        n_val = max(1, round(n * self.val_split))
        if n - n_val < 1:
            raise ValueError(
                f"{n} example(s) cannot be split into training and validation with "
                f"val_split={self.val_split}: give more text, a smaller max_length, or val_split=0"
            )
        order = np.random.default_rng(self.seed).permutation(n)
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        return _Subset(dataset, train_idx), _Subset(dataset, val_idx)

    def _loader(self, dataset: Dataset, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def _require_setup(self) -> None:
        if self.train_dataset is None:
            self.setup()


class _Subset(Dataset):
    def __init__(self, dataset: Dataset, indices: np.ndarray) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[int(self.indices[i])]


class SimpleDataModule(pl.LightningDataModule):
    """Batches from tensors that are already token ids, in the same dict form.

    `input_ids` (N, T) integer; `attention_mask` (N, T), default all ones; `labels` (N, T)
    or (N,), default input_ids with -100 where attention_mask is 0. `val_split` holds out a
    seeded share of the rows (ignored when `val` tensors are given as a dict).
    """

    def __init__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        val: dict[str, torch.Tensor] | None = None,
        batch_size: int = 16,
        val_split: float = 0.1,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        _check_positive_int("batch_size", batch_size)
        if not 0.0 <= val_split < 1.0:
            raise ValueError(f"val_split must be in [0, 1), got {val_split}")
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        train = _tensor_dict(input_ids, attention_mask, labels, "input_ids")
        if val is not None:
            self.train = train
            self.val = _tensor_dict(val.get("input_ids"), val.get("attention_mask"),
                                    val.get("labels"), "val['input_ids']")
        elif val_split > 0:
            n = len(train["input_ids"])
            n_val = max(1, round(n * val_split))
            if n - n_val < 1:
                raise ValueError(f"{n} row(s) cannot be split with val_split={val_split}")
            order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
            self.val = {k: v[order[:n_val]] for k, v in train.items()}
            self.train = {k: v[order[n_val:]] for k, v in train.items()}
        else:
            self.train, self.val = train, None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val, shuffle=False) if self.val is not None else []

    def _loader(self, tensors: dict[str, torch.Tensor], shuffle: bool) -> DataLoader:
        return DataLoader(
            _TensorRows(tensors), batch_size=self.batch_size, shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )


class _TensorRows(Dataset):
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["input_ids"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


def _tensor_dict(input_ids: Any, attention_mask: Any, labels: Any, name: str) -> dict[str, torch.Tensor]:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError(f"{name} must be a 2-D integer tensor (N, T), got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    input_ids = input_ids.long()
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                         f"{tuple(input_ids.shape)}")
    attention_mask = attention_mask.long()
    if labels is None:
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    if labels.shape[0] != input_ids.shape[0] or labels.dim() not in (1, 2):
        raise ValueError(f"labels {tuple(labels.shape)} must be (N,) or (N, T) with N = {len(input_ids)}")
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels.long()}


def _check_positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
