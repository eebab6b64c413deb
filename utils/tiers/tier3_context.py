"""Tier 3's shared state: what every check reads (the model, data, tokenizer and the runs
made once for all checks), the list of checks, and their thresholds."""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from utils.adapters import AdaptedModel
from utils.checks import CheckResult, CheckSet, Verdict
from utils.errors import ToolkitError

log = logging.getLogger(__name__)


PROMPTS = ("The ", "def ", "In the ")  # when the data has too few distinct openings
_UNIGRAM_SAMPLE_CHARS = 400_000


# -- what every check reads ---------------------------------------------------------------------


@dataclass
class Tier3Context:
    """One Tier 3 run: the model, its tokenizer and data, and each stage's outcome, computed
    on first use. A stage that raised keeps its error so the checks can report it."""

    adapted: AdaptedModel
    tokenizer: Any
    texts: list[str]
    out_dir: Path
    overrides: dict[str, Any]
    search_trials: int
    baseline: bool
    export_dir: Path
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.adapted.profile.task

    @functools.cached_property
    def search(self) -> Any:
        """The study's result (None when not asked or when it could not run)."""
        if self.search_trials < 1:
            return None
        from utils.training.search import search

        try:
            return search(
                copy.deepcopy(self.adapted),
                self.texts,
                n_trials=self.search_trials,
                tokenizer=self.tokenizer,
                out_dir=self.out_dir / "search",
                **self.overrides,
            )
        except ToolkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by hyperparameter_search
            log.debug("search failed", exc_info=True)
            self.errors["search"] = f"{type(exc).__name__}: {exc}"
            return None

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """train()'s settings: the user's, with the search's best trial on top."""
        best = dict(self.search.best_params) if self.search is not None else {}
        dropout = best.pop("dropout", None)
        if dropout is not None:
            for m in self.adapted.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.p = dropout
        return {**self.overrides, **best}

    @functools.cached_property
    def result(self) -> Any:
        """The training run (None when it raised; `errors["training"]` says why)."""
        from utils.adapters.lightning_module import DataMismatchError, NonFiniteLossError
        from utils.training import TrainConfigError, TrainingOOMError, train

        settings = self.settings
        try:
            return train(
                self.adapted, self.texts, tokenizer=self.tokenizer, out_dir=str(self.out_dir / "train"), **settings
            )
        except (TrainConfigError, DataMismatchError):
            raise  # bad input: the user's settings or data, said before training starts
        except TrainingOOMError as exc:
            self.errors["training_oom"] = str(exc)
        except NonFiniteLossError as exc:
            self.errors["training"] = f"the loss became non-finite: {exc}"
        except Exception as exc:  # noqa: BLE001 - the training check reports it
            log.debug("training raised", exc_info=True)
            self.errors["training"] = f"{type(exc).__name__}: {exc}"
        return None

    @functools.cached_property
    def unigram_entropy(self) -> float | None:
        """Entropy (nats) of the token frequencies: the loss of the best model that ignores
        its input. Below it, a model has learned from context."""
        sample, size = [], 0
        for text in self.texts:
            sample.append(text)
            size += len(text)
            if size >= _UNIGRAM_SAMPLE_CHARS:
                break
        counts: Counter[int] = Counter()
        for ids in self.tokenizer(sample, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
        total = sum(counts.values())
        if total == 0:
            return None
        return -sum(c / total * math.log(c / total) for c in counts.values())

    @functools.cached_property
    def prompts(self) -> list[str]:
        """Three distinct openings of the data's texts (a word or two each), so samples are
        asked for the kind of text the model was trained on."""
        found: list[str] = []
        step = max(1, len(self.texts) // 50)
        for text in self.texts[::step]:
            words = text.split()
            opening = " ".join(words[:2]) if len(words) > 2 else ""
            if opening and opening not in found:
                found.append(opening)
            if len(found) == 3:
                return found
        return list(PROMPTS)

    @functools.cached_property
    def comparison(self) -> Any:
        if not self.baseline or self.result is None:
            return None
        from utils.training.compare import compare_to_baseline

        try:
            return compare_to_baseline(
                self.adapted,
                self.texts,
                tokenizer=self.tokenizer,
                model_result=self.result,
                out_dir=str(self.out_dir / "baseline"),
                **self.settings,
            )
        except Exception as exc:  # noqa: BLE001 - our baseline failing is a skip, not the user's fault
            log.debug("baseline failed", exc_info=True)
            self.errors["baseline"] = f"{type(exc).__name__}: {exc}"
            return None

    @functools.cached_property
    def exported(self) -> Any:
        from utils.training.export import export

        try:
            return export(self.adapted, self.export_dir, tokenizer=self.tokenizer)
        except Exception as exc:  # noqa: BLE001 - reported by the export check
            log.debug("export failed", exc_info=True)
            self.errors["export"] = f"{type(exc).__name__}: {exc}"
            return None


def needs_training(ctx: Tier3Context, v: Verdict) -> CheckResult | None:
    if ctx.result is None:
        why = ctx.errors.get("training") or ctx.errors.get("training_oom") or "no result"
        return v.skip(
            f"Training did not finish ({why}), so there is nothing to measure.",
            advice="Fix what the training check reports, then run Tier 3 again.",
        )
    return None


TIER3_CHECKS = CheckSet("tier3")


# -- thresholds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingThresholds:
    # the loss must end this far below ln V (uniform guessing), or nothing was learned: 10%
    # of ln V is 0.76 nats for V = 2048; gpt-mini passes it within 60 steps (ln V - 1.27)
    min_drop_fraction: float = 0.1
    # below the unigram entropy by this much, or only token frequencies were learned (a model
    # that ignores its input stops at the unigram entropy); short runs sit there too, so a warn
    min_unigram_margin: float = 0.05
    # a final training loss this far above the run's lowest means it diverged
    max_rise: float = 1.0


@dataclass(frozen=True)
class GeneralizationThresholds:
    max_gap: float = 0.5  # nats of validation over training loss before it is overfitting
    max_val_rise: float = 0.1  # nats the validation loss may climb above its best by the end


@dataclass(frozen=True)
class BaselineThresholds:
    # "clearly worse": both this many nats and this fraction of the baseline's loss
    max_gap: float = 0.1
    max_gap_fraction: float = 0.02


@dataclass(frozen=True)
class GenerationThresholds:
    max_repeat_fraction: float = 0.9  # share of new tokens that are one token: degenerate
    new_tokens: int = 24
    # largest next-token log-probability difference between prompts below which the output
    # ignores its input: exactly 0 for such a model, > 1e-2 for gpt-mini after 60 steps
    min_prompt_sensitivity: float = 1e-5
