"""The Lightning callbacks and the checkpoint writer `train()` adds to every run."""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from utils._io import atomic_write_bytes
from utils.training.config import TrainConfigError

log = logging.getLogger(__name__)

EvalHook = Callable[[int, float], None]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, then renames it over:
    a run killed while saving leaves the previous checkpoint readable (works on a mounted
    Drive folder too, where a rename within one folder is atomic)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


class RunRecorder(pl.Callback):
    """One history row per optimizer step (step, tokens, train_loss, val_loss, lr,
    grad_norm), training time without validation, and the `on_eval(step, val_loss)` hooks.

    Per-step values stay tensors until an evaluation or a checkpoint turns them into numbers,
    so recording never waits for the GPU. The history travels in checkpoints: a resumed run
    continues it."""

    def __init__(self, tokens_per_step: int, on_eval: list[EvalHook] | None = None) -> None:
        self.tokens_per_step = tokens_per_step  # all ranks and micro-batches together
        self.on_eval = on_eval or []
        self.rows: list[dict[str, Any]] = []
        self._loss_sum: torch.Tensor | None = None
        self._micro = 0
        self._lr = math.nan
        self._train_seconds = 0.0
        self._val_seconds = 0.0
        self._t0: float | None = None
        self._val_t0 = 0.0
        self.tokens = 0
        self.steps_this_session = 0

    # -- training steps -------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self._lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = getattr(pl_module, "last_train_loss", None)
        if loss is not None:
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._micro += 1
        step = trainer.global_step
        if step == 0 or (self.rows and step <= self.rows[-1]["step"]):
            return  # still accumulating gradients for the next step
        self.tokens = step * self.tokens_per_step
        norm = getattr(pl_module, "last_grad_norm", None)
        self.rows.append(
            {
                "step": step,
                "tokens": self.tokens,
                "train_loss": self._loss_sum / self._micro if self._loss_sum is not None else None,
                "val_loss": None,
                "lr": self._lr,
                "grad_norm": norm,
            }
        )
        self._loss_sum, self._micro = None, 0
        self.steps_this_session += 1

    # -- evaluation -----------------------------------------------------------------------

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_seconds += time.perf_counter() - self._val_t0
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val_loss")
        if value is None:
            return
        val = float(value)
        step = trainer.global_step
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1]["val_loss"] = val
        else:
            self.rows.append(
                {
                    "step": step,
                    "tokens": self.tokens,
                    "train_loss": None,
                    "val_loss": val,
                    "lr": self._lr,
                    "grad_norm": None,
                }
            )
        self.settle()
        for hook in self.on_eval:
            hook(step, val)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_clock()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.stop_clock()

    def stop_clock(self) -> None:
        if self._t0 is not None:
            self._train_seconds += time.perf_counter() - self._t0 - self._val_seconds
            self._t0, self._val_seconds = None, 0.0

    @property
    def train_seconds(self) -> float:
        return self._train_seconds

    # -- numbers and checkpoints ----------------------------------------------------------

    def settle(self) -> list[dict[str, Any]]:
        """Turn the recorded tensors into floats (one device sync for all of them)."""
        for row in self.rows:
            for key in ("train_loss", "grad_norm"):
                if isinstance(row[key], torch.Tensor):
                    row[key] = float(row[key])
        return self.rows

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.settle()], "tokens": self.tokens}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
        self.tokens = int(state_dict.get("tokens", 0))


class Checkpoints(pl.Callback):
    """`last.ckpt` after every evaluation (every `every` steps when there is no validation)
    and `best.ckpt` whenever the validation loss improves, written atomically."""

    def __init__(self, folder: Path, every: int) -> None:
        self.folder, self.every = folder, every
        self.best = math.inf

    @property
    def last_path(self) -> Path:
        return self.folder / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.ckpt"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.after_eval(trainer)

    def after_eval(self, trainer: pl.Trainer) -> None:
        value = trainer.callback_metrics.get("val_loss")
        if value is not None and float(value) < self.best:
            self.best = float(value)
            trainer.save_checkpoint(self.best_path)
        trainer.save_checkpoint(self.last_path)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (
            not trainer.num_val_batches
            and trainer.global_step % self.every == 0
            and ((batch_idx + 1) % trainer.accumulate_grad_batches == 0)
        ):
            trainer.save_checkpoint(self.last_path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict.get("best", math.inf))


class SaveOnInterrupt(pl.Callback):
    """On Ctrl-C or an exception, writes the run's state to `last.ckpt`, so `resume=True`
    continues from the step it reached. Not for errors a resume would meet again at once
    (a NaN loss, bad data) nor for out-of-memory errors, which `train()` handles itself."""

    def __init__(self, path: Path, skip: tuple[type[BaseException], ...]) -> None:
        self.path, self.skip = path, skip
        self.saved: Path | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, self.skip) or trainer.global_step == 0:
            return
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done != trainer.global_step * trainer.accumulate_grad_batches:
            # Between two micro-batches of one step: the gradients gathered so far are not in
            # a checkpoint, so the consistent state is the last one written.
            log.warning(
                "training interrupted at step %d, inside a gradient accumulation: "
                "resume=True continues from the last checkpoint in %s",
                trainer.global_step,
                self.path.parent,
            )
            return
        trainer.save_checkpoint(self.path)
        self.saved = self.path
        log.warning(
            "training interrupted at step %d (%s); its state is saved in %s: run again with resume=True to continue",
            trainer.global_step,
            type(exception).__name__,
            self.path,
        )


class SameTokenizer(pl.Callback):
    """Keeps the tokenizer's fingerprint in every checkpoint and refuses to resume with
    another: the same ids would mean other tokens, and the run would go on training on
    scrambled text without a sign (a character tokenizer chosen for other data, say)."""

    def __init__(self, fingerprint: str, checkpoint: Path | None) -> None:
        self.fingerprint, self.checkpoint = fingerprint, checkpoint

    def state_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.fingerprint}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("tokenizer")
        if saved is not None and saved != self.fingerprint:
            raise TrainConfigError(
                f"{self.checkpoint or 'the checkpoint'}: it was trained with another tokenizer (vocabulary "
                f"{saved[:12]}, this run's {self.fingerprint[:12]}), whose ids mean other tokens: give "
                "train() the tokenizer (or, for the automatic one, the data) it was trained with, "
                "or resume=False to start over"
            )


class LiveLossPlot(pl.Callback):
    """In a notebook: one figure of training and validation loss against tokens, redrawn in
    place every `every` steps and after each evaluation."""

    def __init__(self, recorder: RunRecorder, every: int = 10) -> None:
        self.recorder, self.every = recorder, every
        self._handle: Any = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every == 0:
            self.draw()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self.draw()

    def draw(self) -> None:
        from IPython.display import Image, display

        from utils.training.figures import loss_curve_png

        rows = self.recorder.settle()
        if not rows:
            return
        image = Image(loss_curve_png(rows))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel (not a plain IPython terminal, not a script)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
