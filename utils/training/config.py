"""`TrainConfig`: every setting of a training run, checked before anything runs."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_STEPS = 200
DEFAULT_SEQ_LEN = 256  # used when the model states no context, and as a cap for CPU speed
LOGGERS = ("csv", "tensorboard", "wandb", "none")
PRECISIONS = ("auto", "32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64")


class TrainConfigError(ValueError):
    """A training setting that cannot work; the message names the field and the value."""


@dataclass
class TrainConfig:
    """Settings of one run. `max_steps` and `max_tokens` are two ways to give the budget
    (one of them; neither means DEFAULT_MAX_STEPS). `batch_size` is the micro-batch per
    device; the optimizer sees batch_size * grad_accum * devices rows per step.
    `warmup_steps=None` warms up over 10% of the run (at most 100 steps); `seq_len=None`
    takes the model's context, capped at 256. `precision="auto"`: bf16-mixed on GPUs that
    support it, 16-mixed on older GPUs, 32 on CPU."""

    max_steps: int | None = None
    max_tokens: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    seq_len: int | None = None
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    precision: str = "auto"
    eval_every: int = 50
    eval_batches: int = 20
    val_split: float = 0.1
    seed: int = 42
    out_dir: str | Path = "tbuilder_runs/train"
    resume: bool | str | Path = False
    early_stopping_patience: int | None = None
    compile: bool = False
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    strategy: str | Any = "auto"
    logger: str = "csv"
    progress: bool = True
    live_plot: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with `overrides` applied; an unknown name is an error listing the fields."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TrainConfigError(f"unknown training setting(s) {unknown}; the settings are {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    @property
    def steps(self) -> int | None:
        """The step budget when it is given in steps (max_tokens needs the batch shape)."""
        if self.max_tokens is None:
            return self.max_steps or DEFAULT_MAX_STEPS
        return None

    def validate(self) -> None:
        """Raise TrainConfigError naming the first setting that cannot work."""
        if self.max_steps is not None and self.max_tokens is not None:
            _fail("max_steps", self.max_steps, "give max_steps or max_tokens, not both")
        _int("max_steps", self.max_steps, 1, optional=True)
        _int("max_tokens", self.max_tokens, 1, optional=True)
        _int("batch_size", self.batch_size, 1)
        _int("grad_accum", self.grad_accum, 1)
        _int("seq_len", self.seq_len, 2, optional=True)
        _number(
            "learning_rate",
            self.learning_rate,
            low=0.0,
            open_low=True,
            hint="a finite number > 0, typically 1e-4 to 1e-3",
        )
        _number("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0, hint="in [0, 1]")
        _int("warmup_steps", self.warmup_steps, 0, optional=True)
        steps = self.steps
        if self.warmup_steps is not None and steps is not None and self.warmup_steps >= steps:
            _fail(
                "warmup_steps",
                self.warmup_steps,
                f"warmup must end before the run does (max_steps={steps}): use about 10% of the run, or leave it unset",
            )
        _number("weight_decay", self.weight_decay, low=0.0, hint="a finite number >= 0")
        if (
            not isinstance(self.betas, (tuple, list))
            or len(self.betas) != 2
            or not all(_is_number(b) and 0 <= b < 1 for b in self.betas)
        ):
            _fail("betas", self.betas, "two numbers in [0, 1), e.g. (0.9, 0.95)")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.grad_clip is not None:
            _number("grad_clip", self.grad_clip, low=0.0, open_low=True, hint="a number > 0, or None for no clipping")
        if self.precision not in PRECISIONS:
            _fail("precision", self.precision, f"one of {PRECISIONS}")
        _int("eval_every", self.eval_every, 1)
        _int("eval_batches", self.eval_batches, 1)
        _number("val_split", self.val_split, low=0.0, high=1.0, hint="in [0, 1)")
        if self.val_split >= 1:
            _fail("val_split", self.val_split, "in [0, 1)")
        _int("seed", self.seed, 0)
        _int("early_stopping_patience", self.early_stopping_patience, 1, optional=True)
        if self.early_stopping_patience is not None and self.val_split == 0:
            _fail(
                "early_stopping_patience",
                self.early_stopping_patience,
                "early stopping watches the validation loss; it needs val_split > 0",
            )
        if not isinstance(self.out_dir, (str, Path)) or not str(self.out_dir):
            _fail("out_dir", self.out_dir, "a folder path")
        if not isinstance(self.resume, (bool, str, Path)):
            _fail("resume", self.resume, "True (the run's last checkpoint), False, or a checkpoint path")
        if self.logger not in LOGGERS:
            _fail("logger", self.logger, f"one of {LOGGERS}")
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(self.logger)
        if module and importlib.util.find_spec(module) is None:
            _fail("logger", self.logger, f"needs the {module} package: pip install {module}, or logger='csv'")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["resume"] = self.resume if isinstance(self.resume, bool) else str(self.resume)
        out["strategy"] = self.strategy if isinstance(self.strategy, str) else type(self.strategy).__name__
        return out


def _fail(name: str, value: Any, expected: str) -> None:
    raise TrainConfigError(f"{name}={value!r} is not valid: expected {expected}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(name: str, value: Any, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        _fail(name, value, f"an integer >= {low}")


def _number(
    name: str, value: Any, low: float | None = None, high: float | None = None, open_low: bool = False, hint: str = ""
) -> None:
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        _fail(name, value, hint or "a finite number")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]
