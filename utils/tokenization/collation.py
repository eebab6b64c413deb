"""Collation: packing, masking for masked LM, and padding rows into batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.vocabulary import IGNORE_INDEX


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
            input_ids, labels = mask_tokens(
                input_ids, attention_mask, special, self.mask_id, self.vocab_size, self.mlm_probability
            )
        else:
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        if self.task == "seq2seq":  # prefix LM: the block's first half is the source, the rest the target
            half = input_ids.shape[1] // 2
            return {
                "input_ids": input_ids[:, :half],
                "attention_mask": attention_mask[:, :half],
                "labels": labels[:, half:],
            }
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

    def __init__(
        self, flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_length: int, labels: np.ndarray | None
    ) -> None:
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
