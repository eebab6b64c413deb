"""Batches for `train()`: one seeded stream of examples whose position follows the run's
own progress, so a resumed run sees exactly the batches it would have seen.

The stream is the training examples in a permutation seeded by (seed, pass), pass after pass.
Micro-batch b on rank r holds stream items [(b * world + r) * micro, ... + micro): the
optimizer step's rows are the same whatever the micro-batch, accumulation and device count
(so halving the micro-batch after an out-of-memory error, or training on two devices,
changes nothing but speed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler


class StreamBatchSampler(Sampler[list[int]]):
    """Index batches of the seeded stream from micro-batch `start()` to `total`."""

    def __init__(
        self,
        n: int,
        micro: int,
        total: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        start: Callable[[], int] = lambda: 0,
    ) -> None:
        self.n, self.micro, self.total, self.seed = n, micro, total, seed
        self.rank, self.world, self.start = rank, world, start
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.total

    def _perm(self, p: int) -> np.ndarray:
        if p not in self._perms:
            self._perms = {p: np.random.default_rng([self.seed, p]).permutation(self.n)}
        return self._perms[p]

    def batch(self, b: int) -> list[int]:
        first = (b * self.world + self.rank) * self.micro
        return [int(self._perm(i // self.n)[i % self.n]) for i in range(first, first + self.micro)]

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start(), self.total):
            yield self.batch(b)


class TrainingData(pl.LightningDataModule):
    """Wraps a data module: training batches come from the seeded stream over its training
    examples, validation batches from its own validation loader."""

    def __init__(self, inner: pl.LightningDataModule, micro: int, total_batches: int, seed: int) -> None:
        super().__init__()
        self.inner, self.micro, self.total, self.seed = inner, micro, total_batches, seed

    @property
    def tokenizer(self) -> Any:
        return getattr(self.inner, "tokenizer", None)

    @property
    def max_length(self) -> Any:
        return getattr(self.inner, "max_length", None)

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    def train_dataloader(self) -> DataLoader:
        loader = self.inner.train_dataloader()
        dataset = loader.dataset if isinstance(loader, DataLoader) else None
        if dataset is None or isinstance(dataset, IterableDataset):
            raise TypeError(
                "train() needs a data module whose train_dataloader() is a DataLoader over a "
                "map-style Dataset (indexable, with a length), so that a resumed run continues "
                f"its data order; got {type(loader).__name__}"
            )
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = StreamBatchSampler(len(dataset), self.micro, self.total, self.seed, rank, world, self._batches_done)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.num_workers > 0,
        )

    def _batches_done(self) -> int:
        """Micro-batches the run has trained on, from the Trainer's own (restored) progress:
        `processed` counts a batch once its step ran, even when a hook after it failed."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def val_dataloader(self) -> Any:
        return self.inner.val_dataloader()

    def train_examples(self) -> int:
        loader = self.inner.train_dataloader()
        dataset: Dataset | None = getattr(loader, "dataset", None)
        return len(dataset) if dataset is not None and hasattr(dataset, "__len__") else 0
