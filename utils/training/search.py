"""Hyperparameter search with Optuna: seeded TPE, pruning on validation loss, shared storage.

    result = search("example:gpt-mini", texts, n_trials=20, max_steps=200)
    result.best_params, result.best_value, result.figures["optimization_history"]

Each trial builds a fresh model, trains it with `train()` and reports its validation loss
at every evaluation, so the pruner stops a bad trial early. The study lives in SQLite in the
output folder unless `storage` names another Optuna storage (PostgreSQL, MySQL, ...):
run `search` again and it continues the same study; run it on several machines with one
storage URL and they share it. A trial that crashes or ends with a non-finite loss is
recorded as failed and the study goes on.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from torch import nn

from utils.errors import ToolkitError

log = logging.getLogger(__name__)

PRUNERS = ("hyperband", "median", "none")
DEFAULT_STUDY = "tbuilder-search"


class SearchError(ToolkitError, ValueError):
    """Bad search settings; the message names the parameter and what to do."""


@dataclass
class SearchResult:
    """The study after this call: its best trial, counts by state, and figures (PNG)."""

    study_name: str
    storage: str
    best_params: dict[str, Any]
    best_value: float | None
    best_trial: int | None
    n_trials: int  # every trial in the study, from every run and worker
    states: dict[str, int]  # COMPLETE, PRUNED, FAIL, ... -> count
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_history: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "figures"} | {"figures": sorted(self.figures)}


# -- the search space --------------------------------------------------------------------


def default_space(base: Mapping[str, Any], has_dropout: bool) -> dict[str, optuna.distributions.BaseDistribution]:
    """Learning rate (log scale), weight decay, warmup, batch size around the base batch,
    and dropout when the model has nn.Dropout modules."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    batch = int(base.get("batch_size") or 16)
    steps = int(base.get("max_steps") or 200)
    space: dict[str, optuna.distributions.BaseDistribution] = {
        "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
        "weight_decay": FloatDistribution(0.0, 0.2),
        "warmup_steps": IntDistribution(0, max(1, steps // 5)),
        "batch_size": CategoricalDistribution(sorted({max(1, batch // 2), batch, batch * 2})),
    }
    if has_dropout:
        space["dropout"] = FloatDistribution(0.0, 0.3)
    return space


def _merged_space(
    space: Mapping[str, Any] | None, base: Mapping[str, Any], has_dropout: bool
) -> dict[str, optuna.distributions.BaseDistribution]:
    """The default space updated by `space` (name -> distribution; None drops a name)."""
    merged = default_space(base, has_dropout)
    for name, dist in (space or {}).items():
        if dist is None:
            merged.pop(name, None)
        elif isinstance(dist, optuna.distributions.BaseDistribution):
            merged[name] = dist
        else:
            raise SearchError(
                f"search(space={{{name!r}: {dist!r}}}): give an optuna "
                "distribution (e.g. optuna.distributions.FloatDistribution"
                "(1e-4, 1e-2, log=True)) or None to leave it out"
            )
    return merged


# -- models per trial ------------------------------------------------------------------------


def _model_maker(source: Any) -> Callable[[], nn.Module]:
    """A function giving a fresh model for each trial: a factory or class is called, a
    source string is loaded, a built module is deep-copied (its initial weights each time)."""
    if isinstance(source, nn.Module):
        template = copy.deepcopy(source)
        return lambda: copy.deepcopy(template)
    if isinstance(source, (str, os.PathLike)):
        from utils.loading import load_model

        def load() -> nn.Module:
            loaded = load_model(source)
            return _Loaded(loaded.model, loaded.config)

        return load
    if callable(source):
        if inspect.isclass(source) or not inspect.signature(source).parameters:
            return source
    raise SearchError(
        f"search() needs a model factory (no arguments), a model class, a "
        f"built nn.Module or a source for load_model; got {type(source).__name__}"
    )


class _Loaded(nn.Module):
    """A loaded model with its config, so the trial adapts it the way the config says."""

    def __init__(self, model: nn.Module, config: Any):
        super().__init__()
        self.model, self.config = model, config


def _dropout_modules(model: nn.Module) -> list[nn.Dropout]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


# -- pruning -----------------------------------------------------------------------------------


def _pruning_hook(trial: optuna.Trial) -> Callable[[int, float], None]:
    """train()'s on_eval hook: report each validation loss; TrialPruned stops the run."""

    def hook(step: int, val_loss: float) -> None:
        trial.report(val_loss, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (validation loss {val_loss:.4f})")

    return hook


def _pruner(pruner: Any) -> optuna.pruners.BasePruner:
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if pruner in ("none", None):
        return optuna.pruners.NopPruner()
    raise SearchError(f"search(pruner={pruner!r}): give one of {', '.join(PRUNERS)} or an optuna pruner")


# -- the search ----------------------------------------------------------------------------


def search(
    model_factory_or_source: Any,
    data: Any,
    *,
    n_trials: int,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    space: Mapping[str, Any] | None = None,
    pruner: Any = "hyperband",
    tokenizer: Any = None,
    seed: int = 0,
    out_dir: str | os.PathLike = "tbuilder_runs/search",
    **train_overrides: Any,
) -> SearchResult:
    """Run `n_trials` more trials of the study (or until `timeout` seconds) and return it.

    `train_overrides` are `train()`'s settings for every trial (max_steps, seq_len, ...);
    the searched names override them trial by trial."""
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise SearchError(f"search(n_trials={n_trials!r}): give a positive integer")
    if timeout is not None and not timeout > 0:
        raise SearchError(f"search(timeout={timeout!r}): give a positive number of seconds")
    chosen_pruner = _pruner(pruner)
    _merged_space(space, train_overrides, False)  # a bad space is an error before any work
    make = _model_maker(model_factory_or_source)
    dims = _merged_space(space, train_overrides, bool(_dropout_modules(_unwrap(make()))))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or DEFAULT_STUDY
    study = _open_study(name, storage, chosen_pruner)
    # a resumed study or a second worker draws its own stream, reproducibly from the study
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    objective = _Objective(make, data, tokenizer, dims, dict(train_overrides), out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,), gc_after_trial=True)
    return _result(study, storage)


def _open_study(name: str, storage: str, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create or load the study. Workers starting together race to create the storage's
    tables; the loser of that race finds them made and loads the study on a retry."""

    def create() -> optuna.Study:
        return optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True, pruner=pruner
        )

    for attempt in range(4):
        try:
            return create()
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's IntegrityError, by name
            if "IntegrityError" not in f"{type(exc).__name__} {exc}":
                raise
            time.sleep(0.2 * (attempt + 1))
    return create()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, _Loaded) else model


class _Objective:
    """One trial: sample, build, train with pruning, return the best validation loss."""

    def __init__(
        self,
        make: Callable[[], nn.Module],
        data: Any,
        tokenizer: Any,
        dims: dict[str, optuna.distributions.BaseDistribution],
        overrides: dict[str, Any],
        out: Path,
    ):
        self.make, self.data, self.tokenizer = make, data, tokenizer
        self.dims, self.overrides, self.out = dims, overrides, out

    def __call__(self, trial: optuna.Trial) -> float:
        from utils.training.trainer import train

        params = {k: _suggest(trial, k, d) for k, d in self.dims.items()}
        built = self.make()
        model, config = _unwrap(built), getattr(built, "config", None)
        dropout = params.pop("dropout", None)
        if dropout is not None:
            for m in _dropout_modules(model):
                m.p = dropout
        settings = {
            "progress": False,
            "live_plot": False,
            **self.overrides,
            **params,
            "out_dir": str(self.out / f"trial-{trial.number}"),
        }
        result = train(
            _with_config(model, config), self.data, tokenizer=self.tokenizer, on_eval=_pruning_hook(trial), **settings
        )
        trial.set_user_attr("history", _curve(result.history))
        value = result.best_val_loss
        if value is None or not math.isfinite(value):
            raise FloatingPointError(
                f"trial {trial.number} ended with validation loss {value} ({result.stopped_reason})"
            )
        return float(value)


def _suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    d = optuna.distributions
    if isinstance(dist, d.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise SearchError(f"search(space=...): {name!r} has an unsupported distribution {dist!r}")


def _with_config(model: nn.Module, config: Any) -> Any:
    """What train() takes: the model, adapted with its config when a config came with it."""
    if config is None:
        return model
    from utils.adapters import adapt

    return adapt(model, config)


def _curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with a validation loss, as (step, tokens, val_loss): small enough to store."""
    return [
        {"step": r.get("step"), "tokens": r.get("tokens"), "val_loss": r["val_loss"]}
        for r in history
        if r.get("val_loss") is not None
    ]


def _result(study: optuna.Study, storage: str) -> SearchResult:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params} for t in trials]
    return SearchResult(
        study.study_name,
        storage,
        dict(best.params) if best else {},
        best.value if best else None,
        best.number if best else None,
        len(trials),
        states,
        rows,
        list(best.user_attrs.get("history", [])) if best else [],
        _figures(study, best),
    )


def _figures(study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> dict[str, bytes]:
    """Optimisation history, parameter importances (with two or more finished trials) and
    the best trial's validation curve, as PNG."""
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from utils.checks.report import figure_to_png

    figures: dict[str, bytes] = {}
    if best is None:
        return figures
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        figures["optimization_history"] = figure_to_png(ovm.plot_optimization_history(study).figure)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) >= 2 and best.params:
            try:
                ax = ovm.plot_param_importances(study)
                figures["param_importances"] = figure_to_png(ax.figure)
            except (ValueError, RuntimeError) as exc:  # too few distinct values to rank
                log.info("parameter importances not drawn: %s", exc)
    curve = best.user_attrs.get("history", [])
    if curve:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["tokens"] or r["step"] for r in curve], [r["val_loss"] for r in curve], "o-")
        ax.set_xlabel("tokens" if curve[0]["tokens"] else "step")
        ax.set_ylabel("validation loss")
        ax.set_title(f"best trial #{best.number}: {best.value:.3f}")
        figures["best_trial_curve"] = figure_to_png(fig)
    return figures
