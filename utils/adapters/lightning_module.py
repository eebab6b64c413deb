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
from utils.adapters.tracing import trace_nonfinite
from utils.vocabulary import IGNORE_INDEX, longest_row


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
        warmup_steps: int | None = None,
        max_steps: int | None = None,
        min_lr_ratio: float = 0.1,
        task: str | None = None,
        eos_token_id: int | None = None,
    ):
        super().__init__()
        check_optimizer_settings(learning_rate, weight_decay, betas, warmup_steps, max_steps, min_lr_ratio)
        self.adapted = model if isinstance(model, AdaptedModel) else adapt(model, task=task)
        self.task = task or self.adapted.profile.task
        self.save_hyperparameters(ignore=["model"])
        self._last_step_time: float | None = None
        self._ids_checked = False
        self.last_train_loss: torch.Tensor | None = None  # unscaled loss of the latest batch
        self.last_grad_norm: torch.Tensor | None = None  # before clipping, latest step

    @property
    def profile(self):
        return self.adapted.profile

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
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
        labels = self._labels(batch)
        if self.task == "seq2seq":  # labels are the target: the adapter shifts them in
            logits = self.adapted(batch["input_ids"], batch.get("attention_mask"), target_ids=labels)
        else:
            logits = self(batch["input_ids"], batch.get("attention_mask"))
        return lm_loss(logits, labels, self.task, self.profile.output_kind)

    def on_fit_start(self) -> None:
        self._ids_checked = False
        check_data_fits(self.profile, getattr(self.trainer, "datamodule", None))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if not self._ids_checked:
            check_batch_ids(self.profile, batch["input_ids"])
            if self.task == "seq2seq":  # the target's ids reach the decoder's embedding
                target = batch["labels"]
                check_batch_ids(self.profile, target.masked_fill(target == IGNORE_INDEX, 0))
            self._ids_checked = True
        loss, n = self._step(batch)
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(self._nonfinite_message(loss, batch, batch_idx))
        now = time.perf_counter()
        bs = batch["input_ids"].shape[0]
        self.last_train_loss = loss.detach()
        self.log("train_loss", loss, prog_bar=True, batch_size=bs)
        self.log("train_ppl", torch.exp(loss.detach().clamp(max=30)), batch_size=bs)
        if self.trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        if self._last_step_time is not None:
            world = self.trainer.world_size if self.trainer is not None else 1
            tokens = batch["input_ids"].numel() + (batch["labels"].numel() if self.task == "seq2seq" else 0)
            rate = tokens * world / max(now - self._last_step_time, 1e-9)
            self.log("tokens_per_sec", rate, prog_bar=True, batch_size=bs)
        self._last_step_time = now
        return loss

    def _nonfinite_message(self, loss: torch.Tensor, batch: dict[str, torch.Tensor], batch_idx: int) -> str:
        """Where the NaN/Inf came from: the batch's forward again, under hooks on every
        submodule, names the first module whose output was not finite."""
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        target = self._labels(batch) if self.task == "seq2seq" else None
        module, kind = trace_nonfinite(self.adapted, lambda: self.adapted(ids, mask, target_ids=target))
        step = self.trainer.global_step if self.trainer is not None else 0
        where = (
            f"the first module with a NaN/Inf output is `{module}` ({kind})"
            if module
            else "every module's output was finite, so it arose in forward's own code or the loss"
        )
        return (
            f"training loss is {float(loss.detach())} at step {step} (batch {batch_idx}); "
            f"{where}. Training stopped before this batch changed any weight. Lower the "
            "learning rate, clip gradients, or check that module's arithmetic "
            "(log/sqrt of negatives, division by zero, exp() overflow)"
        )

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by global norm and keep the norm before clipping (one pass over the
        gradients serves both); other algorithms and sharded strategies go to Lightning."""
        sharded = type(self.trainer.strategy).__name__.startswith(("FSDP", "DeepSpeed"))
        if sharded or gradient_clip_algorithm not in (None, "norm"):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        limit = gradient_clip_val if gradient_clip_val else float("inf")
        self.last_grad_norm = torch.nn.utils.clip_grad_norm_(params, limit).detach()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._step(batch)
        bs = batch["input_ids"].shape[0]
        self.log("val_loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val_ppl", torch.exp(loss.clamp(max=30)), batch_size=bs, sync_dist=True)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(decay_groups(self.adapted, hp.weight_decay), lr=hp.learning_rate, betas=tuple(hp.betas))
        total = hp.max_steps or int(self.trainer.estimated_stepping_batches)
        warmup = resolve_warmup(hp.warmup_steps, total)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, total, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int = 50,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample continuations of `prompt_ids` (B, T0): (B, T0 + new). temperature 0 is
        greedy. For an encoder-decoder `prompt_ids` is the source and the result the target
        generated for it (B, new), the decoder fed its own tokens. The context (the target, for
        an encoder-decoder) is cropped to the model's max_seq_len; a source longer than that
        is refused. A row stops at `eos_token_id` (then pads with it)."""
        if self.task not in ("causal_lm", "seq2seq"):
            raise ValueError(f"generate() needs a causal LM or an encoder-decoder; this model's task is {self.task}")
        was_training = self.training
        self.eval()
        eos = eos_token_id if eos_token_id is not None else self.hparams.eos_token_id
        prompt = prompt_ids.to(self.device)
        if prompt.dim() == 1:
            prompt = prompt[None]
        limit = self.profile.max_seq_len
        if self.task == "seq2seq" and limit is not None and prompt.shape[1] > limit:
            raise ValueError(
                f"the source has {prompt.shape[1]} tokens and this model reads at most {limit} "
                "(max_seq_len): shorten the prompt; cutting a source would change what it asks"
            )
        ids = prompt if self.task == "causal_lm" else prompt[:, :0]  # the tokens produced so far
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logits = self._next_logits(ids, prompt).float()  # (B, V)
            nxt = _sample(logits, temperature, top_k, top_p, generator)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                done |= nxt == eos
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            if eos is not None and bool(done.all()):
                break
        self.train(was_training)
        return ids

    def _next_logits(self, ids: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The logits (B, V) of the token after `ids`, within the model's context. An
        encoder-decoder reads `source`; its target gets one placeholder token appended, which
        the shift right drops, so the last position's decoder input is the last token made."""
        limit = self.profile.max_seq_len
        if self.task == "causal_lm":
            return self(ids if limit is None else ids[:, -limit:])[:, -1, :]
        target = torch.cat([ids, torch.zeros_like(source[:, :1])], dim=1)  # (B, k + 1)
        target = target if limit is None else target[:, -limit:]
        return self.adapted(source, target_ids=target)[:, -1, :]


def _sample(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> torch.Tensor:
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


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step, the batch and
    the first module whose output was not finite."""


class DataMismatchError(ValueError):
    """The data does not fit the model (ids past its vocabulary, rows past its context)."""


def resolve_warmup(warmup_steps: int | None, total: int) -> int:
    """Warmup steps for a run of `total` steps: as given, or by default 10% of the run up to
    100 steps (a long warmup on a short run would leave no time to learn)."""
    if warmup_steps is None:
        return min(100, max(total // 10, 1))
    return warmup_steps


def check_optimizer_settings(
    learning_rate: Any, weight_decay: Any, betas: Any, warmup_steps: Any, max_steps: Any, min_lr_ratio: Any
) -> None:
    """Refuse settings that would train on garbage (an infinite learning rate makes every
    weight NaN after one step), before any step runs."""
    if not _is_number(learning_rate) or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r} (typical: 1e-4 to 1e-3)")
    if not _is_number(weight_decay) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r} (typical: (0.9, 0.95))")
    if max_steps is not None and (not _is_int(max_steps) or max_steps < 1):
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if warmup_steps is not None:
        if not _is_int(warmup_steps) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if max_steps is not None and warmup_steps >= max_steps:
            raise ValueError(
                f"warmup_steps={warmup_steps} leaves no steps after warmup in a run "
                f"of max_steps={max_steps}: use fewer warmup steps (about 10% of "
                "the run) or leave it unset"
            )
    if not _is_number(min_lr_ratio) or not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")


def check_data_fits(profile: Any, datamodule: Any) -> None:
    """A data module whose tokenizer has more ids than the model's vocabulary, or whose rows
    are longer than the model's context, fails deep inside the first forward (an IndexError,
    a device-side assert on a GPU): refuse it here with both numbers."""
    if datamodule is None:
        return
    tokenizer = getattr(datamodule, "tokenizer", None)
    vocab = profile.vocab_size
    if tokenizer is not None and vocab is not None and len(tokenizer) > vocab:
        raise DataMismatchError(
            f"the tokenizer has {len(tokenizer)} ids but the model's vocabulary has {vocab} "
            f"rows (ids {vocab}..{len(tokenizer) - 1} would index past its embedding): use a "
            f"tokenizer of at most {vocab} ids, or build the model with vocab_size >= "
            f"{len(tokenizer)}"
        )
    length = getattr(datamodule, "max_length", None)
    limit = longest_row(profile.task, profile.max_seq_len)
    if isinstance(length, int) and limit is not None and length > limit:
        raise DataMismatchError(
            f"the data module makes rows of {length} tokens but the model's context is "
            f"{limit} (max_seq_len): set max_length (seq_len) <= {limit}"
        )


def check_batch_ids(profile: Any, input_ids: torch.Tensor) -> None:
    """The first batch's ids and length against the model's vocabulary and context."""
    vocab, limit = profile.vocab_size, profile.max_seq_len
    if vocab is not None and input_ids.numel() and int(input_ids.max()) >= vocab:
        raise DataMismatchError(
            f"the batch holds token id {int(input_ids.max())} but the model's vocabulary has "
            f"{vocab} rows (ids 0..{vocab - 1}): the tokenizer does not fit the model"
        )
    if limit is not None and input_ids.dim() == 2 and input_ids.shape[1] > limit:
        raise DataMismatchError(
            f"the batch rows are {input_ids.shape[1]} tokens but the model's context is {limit} "
            "(max_seq_len): use shorter rows"
        )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
