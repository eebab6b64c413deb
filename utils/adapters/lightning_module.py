"""`UniversalModelAdapter`: the LightningModule that trains any adapted model.

The loss follows the task the adapter found (or the user set): a causal LM predicts token
t+1 from positions <= t, a masked LM is scored on masked positions only, a classifier on its
class labels. Positions labelled -100 never contribute, whatever id the tokenizer pads with.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn

from utils.adapters.adapt import adapt
from utils.adapters.adapted_model import AdaptedModel
from utils.adapters.losses import lm_loss
from utils.vocabulary import IGNORE_INDEX


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only; biases, norm weights and embedding
    tables (and any weight tied to one) are not decayed."""
    no_decay: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            no_decay.add(id(m.weight))
    decay, keep, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (keep if p.dim() < 2 or id(p) in no_decay else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class UniversalModelAdapter(pl.LightningModule):
    """Trains an `AdaptedModel` (or any nn.Module, adapted on the way in).

    module = UniversalModelAdapter(adapted, learning_rate=3e-4)
    pl.Trainer(max_steps=1000).fit(module, datamodule)
    """

    def __init__(
        self,
        model: nn.Module,
        learning_rate: float = 3e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        max_steps: int | None = None,
        min_lr_ratio: float = 0.1,
        task: str | None = None,
        eos_token_id: int | None = None,
    ):
        super().__init__()
        self.adapted = model if isinstance(model, AdaptedModel) else adapt(model, task=task)
        self.task = task or self.adapted.profile.task
        self.save_hyperparameters(ignore=["model"])
        self._last_step_time: float | None = None

    @property
    def profile(self):
        return self.adapted.profile

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self.adapted(input_ids, attention_mask)

    def _labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "labels" in batch:
            return batch["labels"]
        if self.task != "causal_lm":
            raise ValueError(f"a {self.task} batch needs 'labels' (the data module makes them)")
        labels = batch["input_ids"].clone()
        if batch.get("attention_mask") is not None:
            labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        return labels

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits = self(batch["input_ids"], batch.get("attention_mask"))
        return lm_loss(logits, self._labels(batch), self.task, self.profile.output_kind)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._step(batch)
        now = time.perf_counter()
        bs = batch["input_ids"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=bs)
        self.log("train_ppl", torch.exp(loss.detach().clamp(max=30)), batch_size=bs)
        if self.trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        if self._last_step_time is not None:
            self.log("tokens_per_sec", batch["input_ids"].numel() / max(now - self._last_step_time,
                                                                         1e-9), batch_size=bs)
        self._last_step_time = now
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._step(batch)
        bs = batch["input_ids"].shape[0]
        self.log("val_loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val_ppl", torch.exp(loss.clamp(max=30)), batch_size=bs, sync_dist=True)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(decay_groups(self.adapted, hp.weight_decay), lr=hp.learning_rate,
                                betas=tuple(hp.betas))
        total = hp.max_steps or int(self.trainer.estimated_stepping_batches)
        warmup = min(hp.warmup_steps, max(total // 10, 1)) if total else hp.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, warmup, total, hp.min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int = 50,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 eos_token_id: int | None = None, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Sample continuations of `prompt_ids` (B, T0). temperature 0 is greedy. The context
        is cropped to the model's max_seq_len; a row stops at `eos_token_id` (then pads with
        it)."""
        if self.task != "causal_lm":
            raise ValueError(f"generate() needs a causal LM; this model's task is {self.task}")
        was_training = self.training
        self.eval()
        eos = eos_token_id if eos_token_id is not None else self.hparams.eos_token_id
        ids = prompt_ids.to(self.device)
        if ids.dim() == 1:
            ids = ids[None]
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        limit = self.profile.max_seq_len
        for _ in range(max_new_tokens):
            ctx = ids if limit is None else ids[:, -limit:]
            logits = self(ctx)[:, -1, :].float()  # (B, V)
            nxt = _sample(logits, temperature, top_k, top_p, generator)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                done |= nxt == eos
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            if eos is not None and bool(done.all()):
                break
        self.train(was_training)
        return ids


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
