"""`train()`: one call from a model and text to a trained model, with a real Lightning
`Trainer` underneath (precision, accumulation, clipping, DDP/FSDP, checkpoints, logging).

    result = train(adapted, texts, tokenizer=tok, max_steps=2000, out_dir="runs/a")
    result.val_loss, result.history[-1], result.best_checkpoint
"""

from __future__ import annotations

import logging
import math
import resource
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn

from utils.adapters import AdaptedModel, adapt
from utils.adapters.lightning_module import (
    DataMismatchError,
    NonFiniteLossError,
    UniversalModelAdapter,
    check_data_fits,
)
from utils.training.callbacks import (
    AtomicCheckpointIO,
    Checkpoints,
    EvalHook,
    LiveLossPlot,
    RunRecorder,
    SameTokenizer,
    SaveOnInterrupt,
    in_notebook,
)
from utils.training.config import DEFAULT_SEQ_LEN, TrainConfig, TrainConfigError
from utils.training.data import TrainingData
from utils.training.flops import flops_per_token, peak_flops
from utils.vocabulary import longest_row

log = logging.getLogger(__name__)

TRAINABLE_TASKS = ("causal_lm", "masked_lm", "classification", "seq2seq")


class TrainingOOMError(MemoryError):
    """Out of memory even with a micro-batch of one row."""


@dataclass
class TrainResult:
    """What a run produced. Losses in nats; `history` has one row per optimizer step
    (step, tokens, train_loss, val_loss, lr, grad_norm; val_loss only where an evaluation
    ran). `mfu` is on a GPU only, against `peak_flops` (the dense bf16/fp16 tensor-core peak
    assumed for the device); `peak_memory_bytes` is the GPU's peak allocation, or the
    process's peak resident memory on a CPU."""

    val_loss: float | None
    best_val_loss: float | None
    train_loss: float | None
    perplexity: float | None
    steps: int
    tokens_seen: int
    tokens_per_second: float
    seconds: float
    peak_memory_bytes: int | None
    mfu: float | None
    peak_flops: float | None
    history: list[dict[str, Any]]
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    stopped_reason: str
    batch_size: int
    grad_accum: int
    precision: str
    config: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("best_checkpoint", "last_checkpoint", "out_dir"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


def train(
    model_or_adapted: nn.Module,
    data: Any,
    *,
    tokenizer: Any = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[pl.Callback] = (),
    on_eval: EvalHook | Sequence[EvalHook] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train `model_or_adapted` in place and return a `TrainResult`.

    data: a list of strings (or {"text", "label"} records), a .txt/.csv/.jsonl/.parquet file
    or a `datasets` Dataset (tokenised by `AdaptiveTokenizerDataModule` with `tokenizer`, or
    one `AdaptiveTokenizer` picks for the model's vocabulary), or a ready
    `LightningDataModule` whose `train_dataloader()` is a DataLoader over a map-style
    dataset. config / overrides: `TrainConfig` fields. callbacks: extra Lightning callbacks.
    on_eval: called as hook(step, val_loss) after every evaluation (raise from it, e.g.
    `optuna.TrialPruned`, to stop the run; the exception reaches the caller)."""
    cfg = (config or TrainConfig()).replace(**overrides)
    hooks = [on_eval] if callable(on_eval) else list(on_eval or [])
    adapted = _adapted(model_or_adapted)
    task = adapted.profile.task
    if task not in TRAINABLE_TASKS:
        raise TrainConfigError(
            f"the model's task is {task!r}, which has no training loss: adapt it with task= one of {TRAINABLE_TASKS}"
        )
    seq_len = _seq_len(cfg, adapted.profile)
    inner = _data_module(data, tokenizer, cfg, adapted.profile, seq_len, task)
    check_data_fits(adapted.profile, inner)
    inner.setup("fit")
    if isinstance(data, pl.LightningDataModule):
        seq_len = _row_length(inner, seq_len)
    world = _world_size(cfg)
    _check_enough_data(inner, cfg.batch_size * world, seq_len)
    steps = cfg.steps or math.ceil(cfg.max_tokens / (cfg.batch_size * cfg.grad_accum * world * seq_len))
    if cfg.warmup_steps is not None and cfg.warmup_steps >= steps:
        raise TrainConfigError(
            f"warmup_steps={cfg.warmup_steps} is not below the run's {steps} steps (from max_tokens={cfg.max_tokens})"
        )
    micro, accum = cfg.batch_size, cfg.grad_accum
    initial = {k: v.detach().to("cpu", copy=True) for k, v in adapted.state_dict().items()}
    ckpt = _resume_path(cfg, Path(cfg.out_dir).expanduser() / "checkpoints")
    extra = [*callbacks, *_tokenizer_guard(inner, ckpt)]
    while True:
        try:
            return _run(adapted, inner, cfg, steps, micro, accum, seq_len, world, extra, hooks, ckpt)
        except torch.cuda.OutOfMemoryError as exc:
            if micro == 1:
                raise TrainingOOMError(
                    f"out of memory with a micro-batch of 1 row of {seq_len} tokens "
                    f"(grad_accum={accum}): use a shorter seq_len, precision='bf16-mixed', a "
                    f"smaller model, or a larger device. ({str(exc).splitlines()[0]})"
                ) from exc
            smaller = _smaller_batch(micro)
            log.warning(
                "out of memory with micro-batch %d: retrying from the start with "
                "micro-batch %d and grad_accum %d (the same %d rows per step)",
                micro,
                smaller,
                accum * micro // smaller,
                micro * accum * world,
            )
            micro, accum = smaller, accum * micro // smaller
            adapted.load_state_dict(initial)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _run(
    adapted: AdaptedModel,
    inner: pl.LightningDataModule,
    cfg: TrainConfig,
    steps: int,
    micro: int,
    accum: int,
    seq_len: int,
    world: int,
    extra: Sequence[pl.Callback],
    hooks: list[EvalHook],
    ckpt: Path | None,
) -> TrainResult:
    """One attempt at the run with this micro-batch and accumulation, from `ckpt` if set."""
    module = UniversalModelAdapter(
        adapted,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        warmup_steps=cfg.warmup_steps,
        max_steps=steps,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    if hasattr(inner, "batch_size"):
        inner.batch_size = micro  # validation batches shrink with the training ones
    data = TrainingData(inner, micro, steps * accum, cfg.seed)
    out_dir = Path(cfg.out_dir).expanduser()
    folder = out_dir / "checkpoints"
    recorder = RunRecorder(micro * accum * world * seq_len, hooks)
    checkpoints = Checkpoints(folder, min(cfg.eval_every, steps))
    interrupt = SaveOnInterrupt(
        folder / "last.ckpt", (NonFiniteLossError, DataMismatchError, TrainConfigError, torch.cuda.OutOfMemoryError)
    )
    callbacks: list[pl.Callback] = [recorder, checkpoints, interrupt]
    if cfg.early_stopping_patience:
        callbacks.append(
            pl.callbacks.EarlyStopping("val_loss", patience=cfg.early_stopping_patience, check_on_train_epoch_end=False)
        )
    if cfg.live_plot and in_notebook():
        callbacks.append(LiveLossPlot(recorder))
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    has_val = _has_validation(inner)
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=precision,
        accumulate_grad_batches=accum,
        gradient_clip_val=cfg.grad_clip,
        val_check_interval=min(cfg.eval_every, steps) * accum,
        limit_val_batches=cfg.eval_batches * (cfg.batch_size // micro) if has_val else 0,
        num_sanity_val_steps=0,
        logger=_logger(cfg.logger, out_dir),
        callbacks=[*callbacks, *extra],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        log_every_n_steps=min(10, steps),
        use_distributed_sampler=False,
        default_root_dir=str(out_dir),
        enable_checkpointing=False,
    )
    compiled = _compile(adapted) if cfg.compile else False
    fpt = _flops_per_token(adapted, inner, module.task, trainer, precision)
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)
    try:
        _fit(trainer, module, data, ckpt, interrupt)
        if recorder.rows and recorder.rows[-1]["val_loss"] is None and has_val:
            trainer.validate(module, datamodule=data, verbose=False, weights_only=True)
            checkpoints.after_eval(trainer)
        if not recorder.rows or not (folder / "last.ckpt").exists() or recorder.steps_this_session:
            trainer.save_checkpoint(folder / "last.ckpt")
    finally:
        if compiled:
            adapted._compiled_call_impl = None
    return _result(trainer, recorder, checkpoints, cfg, steps, micro, accum, precision, fpt, out_dir)


def _fit(
    trainer: pl.Trainer,
    module: UniversalModelAdapter,
    data: TrainingData,
    ckpt: Path | None,
    interrupt: SaveOnInterrupt,
) -> None:
    """trainer.fit; Lightning answers Ctrl-C with sys.exit(1), which would end a notebook
    kernel's cell with SystemExit: turn it back into KeyboardInterrupt, saying where the
    state was saved."""
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt, weights_only=True)
    except SystemExit as exc:
        if not trainer.interrupted:
            raise
        where = (
            (
                f"; the state at step {trainer.global_step} is in {interrupt.saved}: "
                "train(..., resume=True) continues from it"
            )
            if interrupt.saved
            else ""
        )
        raise KeyboardInterrupt(f"training interrupted{where}") from exc


def _result(
    trainer: pl.Trainer,
    recorder: RunRecorder,
    checkpoints: Checkpoints,
    cfg: TrainConfig,
    steps: int,
    micro: int,
    accum: int,
    precision: str,
    fpt: float | None,
    out_dir: Path,
) -> TrainResult:
    rows = recorder.settle()
    trains = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    vals = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    seconds = recorder.train_seconds
    tokens = trainer.global_step * recorder.tokens_per_step
    session_tokens = recorder.steps_this_session * recorder.tokens_per_step
    rate = session_tokens / seconds if seconds > 0 else 0.0
    device = trainer.strategy.root_device
    peak = peak_flops(device) if device.type == "cuda" else None
    mfu = fpt * rate / (peak * trainer.world_size) if peak and fpt else None
    if device.type == "cuda":
        memory = int(torch.cuda.max_memory_allocated(device))
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    val = vals[-1] if vals else None
    early = any(isinstance(c, pl.callbacks.EarlyStopping) and c.wait_count >= c.patience for c in trainer.callbacks)
    reason = "early_stopping" if early else "max_tokens" if cfg.max_tokens else "max_steps"
    return TrainResult(
        val_loss=val,
        best_val_loss=min(vals) if vals else None,
        train_loss=trains[-1] if trains else None,
        perplexity=math.exp(min(val, 50)) if val is not None else None,
        steps=trainer.global_step,
        tokens_seen=tokens,
        tokens_per_second=rate,
        seconds=seconds,
        peak_memory_bytes=memory,
        mfu=mfu,
        peak_flops=peak if mfu is not None else None,
        history=rows,
        best_checkpoint=checkpoints.best_path if checkpoints.best_path.exists() else None,
        last_checkpoint=checkpoints.last_path if checkpoints.last_path.exists() else None,
        stopped_reason=reason,
        batch_size=micro,
        grad_accum=accum,
        precision=precision,
        config=cfg.to_dict(),
        out_dir=out_dir,
    )


# -- settings and checks --------------------------------------------------------------------


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """ "auto": bf16-mixed on a GPU that supports it, 16-mixed on older GPUs, 32 on CPU."""
    if precision != "auto":
        return "32-true" if precision == "32" else precision
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if not gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _adapted(model: nn.Module) -> AdaptedModel:
    if isinstance(model, UniversalModelAdapter):
        return model.adapted
    if isinstance(model, AdaptedModel):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"train() needs an nn.Module (or adapt()'s AdaptedModel), got {type(model).__name__}")
    return adapt(model)


def _seq_len(cfg: TrainConfig, profile: Any) -> int:
    """Tokens per row; an encoder-decoder's row is a source and a target (half each), so it
    may be twice the model's context."""
    limit = longest_row(profile.task, profile.max_seq_len)
    if cfg.seq_len is None:
        return min(limit, DEFAULT_SEQ_LEN) if limit else DEFAULT_SEQ_LEN
    if limit is not None and cfg.seq_len > limit:
        halves = ", a source and a target of up to that each" if limit != profile.max_seq_len else ""
        raise TrainConfigError(
            f"seq_len={cfg.seq_len} is above what the model's context of {profile.max_seq_len} "
            f"tokens (max_seq_len{halves}) allows: use seq_len <= {limit}"
        )
    return cfg.seq_len


def _data_module(
    data: Any, tokenizer: Any, cfg: TrainConfig, profile: Any, seq_len: int, task: str
) -> pl.LightningDataModule:
    if isinstance(data, pl.LightningDataModule):
        return data
    from utils.tokenization import AdaptiveTokenizer, AdaptiveTokenizerDataModule

    if tokenizer is None:
        if profile.vocab_size is None:
            raise TrainConfigError(
                "the model's vocabulary size is unknown, so no tokenizer can be chosen for it: pass tokenizer="
            )
        texts = data if isinstance(data, list) and all(isinstance(t, str) for t in data) else None
        choice = AdaptiveTokenizer.load_or_create(vocab_size=profile.vocab_size, texts=texts)
        log.info("tokenizer: %s (%s)", choice.strategy, choice.reason)
        tokenizer = choice.tokenizer
    return AdaptiveTokenizerDataModule(
        dataset=data,
        tokenizer=tokenizer,
        batch_size=cfg.batch_size,
        max_length=seq_len,
        val_split=cfg.val_split,
        task=task,
        seed=cfg.seed,
    )


def _check_enough_data(inner: pl.LightningDataModule, rows: int, seq_len: int) -> None:
    dataset = getattr(inner.train_dataloader(), "dataset", None)
    n = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
    if n is not None and n < rows:
        raise TrainConfigError(
            f"too little text for one batch: the training split has {n} row(s) of up to "
            f"{seq_len} tokens and one batch needs {rows} (batch_size x devices): give more "
            "text, or a smaller batch_size or seq_len"
        )


def _row_length(inner: pl.LightningDataModule, default: int) -> int:
    """Tokens per row of a ready data module: its max_length, else its first row's length
    (for the token counts; the rows are what the module makes)."""
    length = getattr(inner, "max_length", None)
    if isinstance(length, int):
        return length
    dataset = getattr(inner.train_dataloader(), "dataset", None)
    try:
        return int(dataset[0]["input_ids"].shape[-1])
    except (TypeError, KeyError, IndexError, AttributeError):
        return default


def _has_validation(inner: pl.LightningDataModule) -> bool:
    loader = inner.val_dataloader()
    return loader is not None and not (isinstance(loader, list) and not loader)


def _world_size(cfg: TrainConfig) -> int:
    """Devices the run will use, before the Trainer exists (for the token budget)."""
    import os

    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if isinstance(cfg.devices, int):
        return max(1, cfg.devices)
    if isinstance(cfg.devices, list):
        return len(cfg.devices)
    if cfg.devices in ("auto", "-1", -1) and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


def _tokenizer_guard(inner: pl.LightningDataModule, ckpt: Path | None) -> list[pl.Callback]:
    """The callback that keeps the tokenizer's fingerprint in the checkpoints and refuses a
    resume with another; none for a data module without a tokenizer. Hashed once a run,
    not again on each out-of-memory retry."""
    tokenizer = getattr(inner, "tokenizer", None)
    if tokenizer is None:
        return []
    from utils.tokenization import tokenizer_fingerprint

    return [SameTokenizer(tokenizer_fingerprint(tokenizer), ckpt)]


def _smaller_batch(micro: int) -> int:
    """The largest divisor of `micro` at most half of it, so micro x accumulation stays the
    same rows per step."""
    return next(d for d in range(micro // 2, 0, -1) if micro % d == 0)


def _resume_path(cfg: TrainConfig, folder: Path) -> Path | None:
    if cfg.resume is False:
        return None
    if cfg.resume is True:
        path = folder / "last.ckpt"
        if not path.is_file():
            log.info("resume=True but %s does not exist yet: starting a new run", path)
            return None
        return path
    path = Path(cfg.resume).expanduser()
    if not path.is_file():
        raise TrainConfigError(
            f"resume={str(cfg.resume)!r}: no checkpoint file there; give "
            "a .ckpt written by train(), or resume=True for the run's last"
        )
    return path


def _logger(kind: str, out_dir: Path) -> Any:
    from pytorch_lightning import loggers

    if kind == "none":
        return False
    if kind == "csv":
        return loggers.CSVLogger(str(out_dir), name="logs")
    if kind == "tensorboard":
        return loggers.TensorBoardLogger(str(out_dir), name="logs")
    return loggers.WandbLogger(save_dir=str(out_dir))


def _compile(adapted: AdaptedModel) -> bool:
    """torch.compile in place (nn.Module.compile): the state_dict keys stay the same, so
    checkpoints load with or without it."""
    adapted.compile()
    return True


def _flops_per_token(
    adapted: AdaptedModel, inner: pl.LightningDataModule, task: str, trainer: pl.Trainer, precision: str
) -> float | None:
    """Measured on one micro-batch on the GPU (for MFU); None on a CPU, where MFU is not
    reported."""
    if trainer.strategy.root_device.type != "cuda" or trainer.world_size > 1:
        return None
    batch = next(iter(inner.train_dataloader()))
    return flops_per_token(adapted, batch, task, trainer.strategy.root_device)
