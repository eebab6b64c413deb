"""Text sources: lists, records, .txt/.csv/.jsonl/.parquet files, `datasets` Datasets and
hub dataset names, read as plain strings (and labels)."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.tokenization._common import (
    hash_files,
    hash_texts,
    hub_offline_reason,
    offline_mode,
)

FILE_TYPES = {".txt": "text", ".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


VALIDATION_SPLITS = ("validation", "valid", "val")


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
            return _from_dataset(datasets.Dataset.from_list(list(source)), text_column, label_column, "records")
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


def _from_file(path: Path, text_column: str, label_column: str | None, cache_dir: Path | None) -> _Corpus:
    import datasets

    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported file type; use one of {sorted(FILE_TYPES)}")
    if kind == "text":
        if label_column is not None:
            raise ValueError(
                f"{path}: a .txt file has no labels; classification needs .csv/.jsonl/.parquet with a label column"
            )
        return _Corpus([_read_utf8(path)], None, None, None, "file:" + hash_files([path]), str(path))
    if kind != "parquet":
        _read_utf8(path)  # a clear error naming the line, before the CSV/JSON parser fails
    try:
        ds = datasets.load_dataset(
            kind, data_files=str(path), split="train", cache_dir=str(cache_dir / "datasets") if cache_dir else None
        )
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
                            f"{bad.colno}); each line of a .jsonl file must be one JSON object"
                        )
    cause = exc.__cause__ or exc.__context__ or exc
    return ValueError(
        f"{path}: could not be read as {kind.upper()} ({type(cause).__name__}: "
        f"{str(cause).splitlines()[0] if str(cause) else 'no detail'}); fix the file "
        "or give a .txt file"
    )


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
            f"{path}: not UTF-8 (byte {exc.start}, line {line}: {data[exc.start : exc.start + 4]!r}); "
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
