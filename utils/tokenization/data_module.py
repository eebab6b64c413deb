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
`classification` keeps one text per row (truncated to `max_length`, padded per batch);
`seq2seq` (encoder-decoders) packs the same way and splits every block in two, T5's prefix-LM
objective: the first half is the source (`input_ids`, `attention_mask`), the second the target
(`labels`, which the model's own rule shifts into the decoder's input), so any text trains one.
`packing=False` gives one padded document per row for causal and masked LM.

Speed: documents are joined into ~32K-character chunks and encoded with the tokenizer's
fast batch API (`encode_batch_fast`, or the character tokenizer's numpy path), straight into
numpy arrays. The result is cached on disk (safetensors) under a fingerprint of the text,
the tokenizer and the task, so a corpus is tokenised once. The train/validation split is a
permutation seeded by `seed`: the same arguments always give the same split.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from torch.utils.data import DataLoader, Dataset

from utils._io import atomic_write_bytes, default_cache_dir
from utils.tokenization._common import (
    hash_settings,
    tokenizer_fingerprint,
)
from utils.tokenization.adaptive_tokenizer import TokenizerChoice
from utils.tokenization.collation import BatchCollator, _Blocks, _Rows
from utils.tokenization.encoding import _insert_after_each, encode_ragged, encode_stream
from utils.tokenization.sources import _Corpus, _label_ids, load_corpus
from utils.vocabulary import DATA_TASKS as TASKS
from utils.vocabulary import IGNORE_INDEX, longest_row

log = logging.getLogger(__name__)

_CACHE_FORMAT = 1


def check_fits_model(tokenizer: Any, max_length: int, profile: Any, task: str | None = None) -> None:
    """Refuse, before any text is read, a tokenizer whose ids pass the model's vocabulary or a
    `max_length` past its `max_seq_len` (twice that for a seq2seq row, a source and a target):
    inside `fit` either is an IndexError on CPU and a device-side assert (a dead runtime) on a
    GPU. `profile` is a ModelProfile (or anything with `vocab_size` and `max_seq_len`);
    unknown sizes are not checked."""
    vocab = getattr(profile, "vocab_size", None)
    ids = tokenizer.get_vocab().values()
    needed = max(len(tokenizer), max(ids, default=-1) + 1)
    if vocab is not None and needed > vocab:
        raise ValueError(
            f"the tokenizer emits ids up to {needed - 1} but the model has vocab_size {vocab} "
            f"({getattr(profile, 'vocab_source', 'its profile')}): ids {vocab} and up would crash "
            f"its embedding. Use a tokenizer of at most {vocab} tokens, or a model with "
            f"vocab_size >= {needed}"
        )
    positions = getattr(profile, "max_seq_len", None)
    limit = longest_row(task, positions)
    if limit is not None and max_length > limit:
        halves = " (a source and a target of up to max_seq_len each)" if limit != positions else ""
        raise ValueError(
            f"max_length={max_length} is more than the model's max_seq_len {positions} "
            f"({getattr(profile, 'max_seq_len_source', 'its profile')}) allows{halves}: positions past "
            f"{positions} have no embedding. Give max_length <= {limit}"
        )


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
        if task == "seq2seq" and not packing:
            raise ValueError("task='seq2seq' splits packed blocks into a source and a target: use packing=True")
        if task == "seq2seq" and max_length < 2:
            raise ValueError(f"task='seq2seq' needs max_length >= 2 (a source and a target token), got {max_length}")
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
            check_fits_model(self.tokenizer, max_length, getattr(profile, "profile", profile), task)
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
        corpus = load_corpus(
            self.dataset,
            self.text_column,
            self.label_column if self.task == "classification" else None,
            self.dataset_config,
            self.cache_dir,
        )
        if not any(corpus.train):
            raise ValueError(f"{corpus.source}: no text ({len(corpus.train)} documents, all empty)")
        arrays = self._tokenized(corpus)
        train, val = self._examples(arrays, "train"), None
        if "val.tokens" in arrays:
            val = self._examples(arrays, "val")
        elif self.val_split > 0:
            train, val = self._split(train)
        self.train_dataset, self.val_dataset = train, val
        self.stats.update(
            source=corpus.source, train_examples=len(train), val_examples=len(val) if val is not None else 0
        )
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
        key = hash_settings(
            format=_CACHE_FORMAT,
            corpus=corpus.fingerprint,
            task=self.task,
            packing=self.packing,
            tokenizer=tokenizer_fingerprint(self.tokenizer),
        )
        return self.cache_dir / "tokenized" / f"{key[:32]}.safetensors"

    def _encode(self, corpus: _Corpus) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        splits = {"train": corpus.train} | ({"val": corpus.val} if corpus.val is not None else {})
        for name, texts in splits.items():
            if self.packing:
                arrays[f"{name}.tokens"] = encode_stream(self.tokenizer, texts, self.separator_id, sum(map(len, texts)))
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
        return _Rows(
            tokens, offsets[:-1][keep], offsets[1:][keep], self.max_length, labels[keep] if labels is not None else None
        )

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
            self.val = _tensor_dict(
                val.get("input_ids"), val.get("attention_mask"), val.get("labels"), "val['input_ids']"
            )
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
            _TensorRows(tensors),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
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
        raise ValueError(
            f"{name} must be a 2-D integer tensor (N, T), got {getattr(input_ids, 'shape', type(input_ids).__name__)}"
        )
    input_ids = input_ids.long()
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}")
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
