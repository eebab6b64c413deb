"""Tier 3: how well does the design learn, with which settings, and against what?

    report = run_tier3(model, data=texts, max_steps=300)    # nn.Module, AdaptedModel, LoadedModel
    report["baseline_comparison"].summary

One run folder (`out_dir`) holds everything: the search study (when asked), the training
run's checkpoints and CSV log, the baseline's run, the export, and the report with figures.
The work happens once, in the order the checks need it: search first (its best settings
train the model), then training, the baseline on the same data and budget, samples, and
the export with its parity checks.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from utils.adapters import AdaptedModel, adapt
from utils.checks import CheckResult, CheckSet, TierReport, Verdict, run_checks
from utils.checks.report import figure_to_png
from utils.errors import ToolkitError

log = logging.getLogger(__name__)

TIER3_NAME = "Tier 3: training"
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


def _needs_training(ctx: Tier3Context, v: Verdict) -> CheckResult | None:
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


# -- the checks -------------------------------------------------------------------------------


@TIER3_CHECKS.check("training", thresholds=TrainingThresholds())
def training(ctx: Tier3Context, v: Verdict) -> CheckResult:
    """Training lowers the loss well below chance and below the unigram entropy, with no NaN

    What it checks: the run finished; every logged loss is finite; the validation loss ends
    well below ln(V) (a uniform guess) and below the entropy of the token frequencies (what
    a model that ignores its input can reach); the training loss did not climb back up.
    Why it matters: a design that cannot use its context, or that diverges, is not worth
    tuning; this says which of the two it is.
    Known false alarms: short runs may not get below the unigram entropy yet (a warning);
    give more steps (max_steps) before concluding.
    Broken example: a model that goes NaN, or whose training loss climbs back up (noise that
    grows every step), fails; one whose output ignores its input stalls at the unigram
    entropy (a warning).
    How to fix: check that the attention and embeddings feed the output; lower the learning
    rate or enable gradient clipping for a diverging run.
    """
    t = v.thresholds
    r = ctx.result
    if "training_oom" in ctx.errors:
        return v.skip(
            f"Out of memory even at micro-batch 1: {ctx.errors['training_oom']}.",
            advice="Use a shorter seq_len, a GPU with more memory, or precision='bf16-mixed'.",
        )
    if r is None:
        return v.fail(
            f"Training stopped with an error: {ctx.errors.get('training')}.",
            advice="The error names the step or module; Tier 1 (tbuilder check) finds most causes before training.",
        )
    ln_v = math.log(ctx.adapted.profile.vocab_size or 2)
    losses = [row.get("train_loss") for row in r.history if row.get("train_loss") is not None]
    metrics = {
        "val_loss": r.val_loss,
        "best_val_loss": r.best_val_loss,
        "ln_vocab": ln_v,
        "unigram_entropy": ctx.unigram_entropy,
        "steps": r.steps,
        "tokens_seen": r.tokens_seen,
        "stopped_reason": r.stopped_reason,
    }
    figures = {"loss": _loss_figure(r)} if r.history else {}
    bad = [x for x in losses + [r.val_loss] if x is None or not math.isfinite(x)]
    if bad or "nan" in str(r.stopped_reason).lower() or "finite" in str(r.stopped_reason).lower():
        return v.fail(
            f"The loss became non-finite ({r.stopped_reason}).",
            metrics,
            advice="Lower learning_rate, keep grad_clip on, and run Tier 1's "
            "numerical_stability check to find the module that overflows.",
            figures=figures,
        )
    lowest, final = min(losses), _tail_mean(losses)
    if final > lowest + t.max_rise:
        return v.fail(
            f"Training diverged: the training loss fell to {lowest:.3f} and climbed back to {final:.3f}.",
            metrics,
            advice="Lower learning_rate (try 3x lower), keep grad_clip=1.0, or lengthen warmup_steps.",
            figures=figures,
        )
    best, bar = r.best_val_loss, ln_v * (1 - t.min_drop_fraction)
    if best > bar:
        return v.fail(
            f"The validation loss only reached {best:.3f}; chance is ln V = "
            f"{ln_v:.3f} and a learning model gets below {bar:.3f}.",
            metrics,
            advice="Train longer or with a higher learning rate; if the loss is flat "
            "from the start, the output may not depend on the input.",
            figures=figures,
        )
    h1 = ctx.unigram_entropy
    if h1 is not None and best > h1 - t.min_unigram_margin:
        return v.warn(
            f"The validation loss {best:.3f} is no better than the unigram entropy "
            f"{h1:.3f}: so far the model learned token frequencies, not context.",
            metrics,
            advice="Train longer (max_steps); if it stays there, the output "
            "ignores the input (the generation check tests that directly).",
            figures=figures,
        )
    return v.pass_(
        f"The validation loss fell from chance ({ln_v:.2f}) to {best:.3f}"
        + (f", {h1 - best:.2f} nats below the unigram entropy" if h1 else "")
        + f", over {r.steps} steps and {r.tokens_seen:,} tokens.",
        metrics,
        figures=figures,
    )


@TIER3_CHECKS.check("generalization", thresholds=GeneralizationThresholds())
def generalization(ctx: Tier3Context, v: Verdict) -> CheckResult:
    """The validation loss follows the training loss (no overfitting)

    What it checks: the gap between the final validation and training losses, and whether
    the validation loss rose from its best by the end of the run.
    Why it matters: a gap means the model memorises its training text; more steps then make
    it worse, not better.
    Known false alarms: with dropout on, the training loss is measured with dropout and can
    sit above the validation loss; that is no problem and passes.
    Broken example: a model trained many passes over a few documents.
    How to fix: more data, more dropout or weight decay, fewer steps, or early stopping
    (early_stopping_patience).
    """
    if (skip := _needs_training(ctx, v)) is not None:
        return skip
    t, r = v.thresholds, ctx.result
    losses = [row["train_loss"] for row in r.history if row.get("train_loss") is not None]
    train_loss = r.train_loss if r.train_loss is not None else _tail_mean(losses)
    gap, rise = r.val_loss - train_loss, r.val_loss - r.best_val_loss
    metrics = {
        "train_loss": train_loss,
        "val_loss": r.val_loss,
        "gap": gap,
        "best_val_loss": r.best_val_loss,
        "val_rise": rise,
    }
    if gap > t.max_gap or rise > t.max_val_rise:
        why = (
            f"validation loss {r.val_loss:.3f} is {gap:.2f} nats above training {train_loss:.3f}"
            if gap > t.max_gap
            else f"validation loss climbed {rise:.2f} nats above its best {r.best_val_loss:.3f}"
        )
        return v.warn(
            f"The model is overfitting: {why}.",
            metrics,
            advice="Use more data, raise dropout or weight_decay, or stop earlier (early_stopping_patience=3).",
        )
    return v.pass_(f"Validation {r.val_loss:.3f} against training {train_loss:.3f} (gap {gap:+.2f} nats).", metrics)


@TIER3_CHECKS.check("baseline_comparison", thresholds=BaselineThresholds())
def baseline_comparison(ctx: Tier3Context, v: Verdict) -> CheckResult:
    """The design learns at least as well as a standard transformer of its size

    What it checks: a GPT-2 (BERT for a masked LM) from transformers, sized within 10% of
    the model's parameters, trained on the same data, tokenizer, budget, recipe and seed;
    it warns when the model's final validation loss is clearly worse than the baseline's.
    Why it matters: a new design is worth its complexity only when it beats (or matches)
    the standard one at equal size and budget.
    Known false alarms: very short runs favour whichever model starts faster; compare at
    the budget you care about.
    Broken example: a model whose output ignores its input ends far above the baseline.
    How to fix: look at what the baseline does differently (pre-norm, tied embeddings,
    learned positions, width-to-depth ratio) and try it in the design.
    """
    if not ctx.baseline:
        return v.skip(
            "Not asked for (baseline=False).",
            advice="Run with baseline=True (the default) to compare with a size-matched GPT-2 or BERT.",
        )
    if (skip := _needs_training(ctx, v)) is not None:
        return skip
    c = ctx.comparison
    if c is None:
        return v.skip(
            f"No baseline could be trained: {ctx.errors.get('baseline')}.",
            advice="This is the toolkit's limit, not a fault of the model.",
        )
    t = v.thresholds
    base = c.rows()[1]["val_loss"]
    metrics = {"loss_gap": c.loss_gap, "rows": c.rows(), "sizing": c.sizing.to_dict()}
    figures = {"val_loss_vs_tokens": c.figure}
    versus = (
        f"{c.rows()[0]['val_loss']:.3f} against the {c.sizing.family} baseline's "
        f"{base:.3f} ({c.sizing.total:,} parameters, {c.sizing.total_error:+.1%})"
    )
    if c.loss_gap > t.max_gap and c.loss_gap > t.max_gap_fraction * abs(base):
        return v.warn(
            f"Clearly worse than the baseline by {c.loss_gap:.3f} nats ({c.loss_gap / base:+.1%}): {versus}.",
            metrics,
            advice="See what the standard block does that the design does not "
            "(pre-norm residuals, tied embeddings, 4x MLP width); try those first.",
            figures=figures,
        )
    return v.pass_(f"Validation loss {versus}.", metrics, figures=figures)


@TIER3_CHECKS.check("hyperparameter_search")
def hyperparameter_search(ctx: Tier3Context, v: Verdict) -> CheckResult:
    """A seeded Optuna search found settings that train the model

    What it checks: the study ran its trials (pruning the bad ones on validation loss) and
    at least one finished; its best settings are the ones the model was trained with.
    Why it matters: a design judged on one learning rate may be judged on the wrong one.
    Known false alarms: with very few trials, TPE samples at random; the best may be luck.
    Broken example: a model that diverges under every setting: every trial fails.
    How to fix: widen the space (space=...), lower the learning-rate range, or fix the
    numerical problem Tier 1 reports.
    """
    if ctx.search_trials < 1:
        return v.skip(
            "Not asked for (search_trials=0).",
            advice="Pass search_trials=20 (tbuilder train --search 20) to tune the "
            "learning rate, weight decay, warmup, batch size and dropout.",
        )
    s = ctx.search
    if s is None:
        return v.skip(
            f"The search could not run: {ctx.errors.get('search')}.",
            advice="This is the toolkit's limit, not a fault of the model.",
        )
    metrics = {
        "study": s.study_name,
        "storage": s.storage,
        "trials": s.n_trials,
        "states": s.states,
        "best_params": s.best_params,
        "best_value": s.best_value,
    }
    if s.best_value is None:
        return v.fail(
            f"All {s.n_trials} trials failed or were pruned ({s.states}): no setting trains this model.",
            metrics,
            figures=s.figures,
            advice="Run tbuilder check for numerical problems; try a lower learning-rate range through space=.",
        )
    params = ", ".join(f"{k}={_fmt(x)}" for k, x in s.best_params.items())
    return v.pass_(
        f"Best of {s.n_trials} trials ({s.states}): validation loss "
        f"{s.best_value:.3f} with {params}; the model was trained with these.",
        metrics,
        figures=s.figures,
    )


@TIER3_CHECKS.check("generation", thresholds=GenerationThresholds())
def generation(ctx: Tier3Context, v: Verdict) -> CheckResult:
    """Samples from the trained model depend on their prompts and do not loop

    What it checks: the next-token distributions after three different prompts (openings
    of the training texts; they must differ: a model whose output ignores its input gives the same one), greedy
    continuations of each, and one sampled at temperature 0.8 with top-k 50 and top-p 0.95;
    warns when a greedy continuation is a single token repeated.
    Why it matters: the loss can look fine while the model ignores its prompt or loops;
    samples show it.
    Known false alarms: a briefly trained model repeats common words; that is a warning
    at most.
    Broken example: a model whose output ignores its input continues every prompt alike.
    How to fix: train longer; if continuations ignore the prompt, check the attention path.
    """
    if ctx.task != "causal_lm":
        return v.skip(f"Generation needs a causal LM; this model is a {ctx.task}.")
    if (skip := _needs_training(ctx, v)) is not None:
        return skip
    from utils.training.generation import generate_text

    t = v.thresholds
    n, prompts = t.new_tokens, ctx.prompts
    greedy = generate_text(ctx.adapted, ctx.tokenizer, prompts, max_new_tokens=n, temperature=0)
    sampled = generate_text(
        ctx.adapted, ctx.tokenizer, prompts[0], max_new_tokens=n, temperature=0.8, top_k=50, top_p=0.95, seed=0
    )
    tails = [text[len(p) :] for text, p in zip(greedy, prompts)]
    new_ids = [ctx.tokenizer(tail, add_special_tokens=False)["input_ids"] for tail in tails]
    repeat = max((Counter(ids).most_common(1)[0][1] / len(ids) for ids in new_ids if ids), default=1.0)
    spread = _prompt_sensitivity(ctx)
    metrics = {
        "greedy": dict(zip(prompts, greedy)),
        "sampled": sampled,
        "max_repeat_fraction": repeat,
        "prompt_sensitivity": spread,
    }
    if spread < t.min_prompt_sensitivity:
        return v.fail(
            f"The next-token distribution is the same after every prompt (largest "
            f"log-probability difference {spread:.2g}): the output does not depend "
            "on the input.",
            metrics,
            advice="Check that the token embeddings reach the output through the "
            "attention blocks (Tier 1's gradient_flow names unused parameters).",
        )
    if repeat >= t.max_repeat_fraction:
        return v.warn(
            f"A greedy continuation is one token repeated ({repeat:.0%}): {greedy[0][:60]!r}.",
            metrics,
            advice="Train longer, or sample with temperature and top-p instead of greedy decoding.",
        )
    return v.pass_(f"Greedy: {greedy[0][:70]!r}; sampled: {sampled[:70]!r}.", metrics)


@TIER3_CHECKS.check("export")
def export_check(ctx: Tier3Context, v: Verdict) -> CheckResult:
    """The exported folder loads in a fresh process and gives the same logits

    What it checks: model.safetensors, model.py, config.json and the tokenizer, loaded
    through load_model.py in a new Python process, give identical logits; torch.export and
    ONNX (onnxruntime) files agree within 1e-4 in float32, or are skipped with the reason.
    Why it matters: a checkpoint that does not reproduce its model silently ships a
    different model.
    Known false alarms: a model trained on a GPU is compared on the CPU within 1e-4.
    Broken example: a model with a random buffer that is not saved (persistent=False)
    reloads with different logits.
    How to fix: register state as persistent buffers or parameters, and keep model.py free
    of randomness outside __init__'s weight initialisation.
    """
    if (skip := _needs_training(ctx, v)) is not None:
        return skip
    e = ctx.exported
    if e is None:
        return v.skip(
            f"The model could not be exported: {ctx.errors.get('export')}.",
            advice="Save the model class in a .py file and load it from there.",
        )
    f = e.formats
    metrics = {"directory": str(e.directory), "formats": {k: x.__dict__ for k, x in f.items()}}
    line = "; ".join(
        f"{k} {x.status}"
        + (f" (max diff {x.max_abs_diff:.2g})" if x.max_abs_diff is not None else "")
        + (f": {x.reason}" if x.status == "skipped" else "")
        for k, x in f.items()
    )
    if f["safetensors"].status != "ok":
        return v.fail(
            f"The exported model does not reproduce the trained one: {f['safetensors'].reason}.",
            metrics,
            advice="Make every tensor the forward uses a parameter or a persistent "
            "buffer, so the saved weights rebuild it.",
        )
    if any(x.status == "mismatch" for x in f.values()):
        return v.warn(
            f"An optional format disagrees with the model: {line}.",
            metrics,
            advice="Use model.safetensors; report the disagreeing format's difference to its exporter.",
        )
    return v.pass_(f"Exported to {e.directory}: {line}.", metrics)


TIER3_CHECK_IDS: tuple[str, ...] = TIER3_CHECKS.ids


# -- running the tier -----------------------------------------------------------------------------


def run_tier3(
    model_or_adapted: Any,
    config: Any = None,
    *,
    data: Any = None,
    tokenizer: Any = None,
    search_trials: int = 0,
    baseline: bool = True,
    export_dir: str | Path | None = None,
    out_dir: str | Path = "tbuilder_runs",
    checks: list[str] | None = None,
    progress: bool = True,
    **train_overrides: Any,
) -> TierReport:
    """Train the model (after a search when `search_trials` > 0), compare it with a matched
    baseline, sample from it and export it; the report is also saved under `out_dir/report`.

    `data`: texts, a file, a datasets Dataset (default: the embedded offline corpus).
    `tokenizer`: the user's (default: the adaptive choice for the model's vocabulary).
    `train_overrides`: train()'s settings (max_steps, batch_size, learning_rate, seed, ...).
    """
    started = time.perf_counter()
    if not isinstance(search_trials, int) or search_trials < 0:
        raise ValueError(
            f"run_tier3(search_trials={search_trials!r}): give 0 (no search) or a positive number of trials"
        )
    train_overrides.setdefault("progress", progress)
    adapted = _adapted(model_or_adapted, config)
    texts = _texts(data)
    tok = _tokenizer(tokenizer, adapted, texts)
    out = Path(out_dir)
    ctx = Tier3Context(
        adapted,
        tok,
        texts,
        out,
        dict(train_overrides),
        search_trials,
        baseline,
        Path(export_dir) if export_dir else out / "export",
    )
    selected = TIER3_CHECKS.select(checks) if checks else list(TIER3_CHECKS)
    meta = {
        "profile": adapted.profile.summary(),
        "out_dir": str(out),
        "tokenizer": type(tok).__name__,
        "settings": dict(train_overrides),
        "search_trials": search_trials,
    }
    report = run_checks(TIER3_NAME, selected, ctx, meta=meta, progress=progress)
    report.meta["settings"] = ctx.settings if "settings" in ctx.__dict__ else dict(train_overrides)
    report.meta["seconds"] = round(time.perf_counter() - started, 3)
    report.save(out / "report")
    return report


def _adapted(obj: Any, config: Any) -> AdaptedModel:
    if isinstance(obj, AdaptedModel):
        return obj
    if not isinstance(obj, nn.Module) and hasattr(obj, "model"):  # a LoadedModel
        config = config if config is not None else getattr(obj, "config", None)
        obj = obj.model
    if not isinstance(obj, nn.Module):
        raise ValueError(f"run_tier3 needs an nn.Module, an AdaptedModel or a loaded model; got {type(obj).__name__}")
    return adapt(obj, config)


def _texts(data: Any) -> list[str]:
    """The texts to train on: the data given, or the embedded corpus split into paragraphs."""
    if data is None:
        from utils.examples import default_corpus

        return [p for p in default_corpus().split("\n\n") if p.strip()]
    if isinstance(data, str) and not Path(data).exists():
        raise ValueError(
            f"run_tier3(data={data[:60]!r}): not an existing file; pass a list of "
            "texts, a .txt file or a datasets Dataset with a 'text' column"
        )
    if isinstance(data, (str, Path)) and Path(data).suffix == ".txt":
        return [p for p in Path(data).read_text(encoding="utf-8").split("\n\n") if p.strip()]
    if isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data):
        return list(data)
    if hasattr(data, "column_names") and "text" in data.column_names:
        return list(data["text"])
    raise ValueError(
        f"run_tier3(data=...): got {type(data).__name__}; pass a list of texts, "
        "a .txt file or a datasets Dataset with a 'text' column"
    )


def _tokenizer(tokenizer: Any, adapted: AdaptedModel, texts: list[str]) -> Any:
    from utils.tokenization import AdaptiveTokenizer

    vocab = adapted.profile.vocab_size
    if not vocab:
        raise ValueError("run_tier3: the model's vocabulary size is unknown; pass a config stating vocab_size")
    return AdaptiveTokenizer.load_or_create(vocab_size=vocab, texts=texts, tokenizer=tokenizer).tokenizer


def _prompt_sensitivity(ctx: Tier3Context) -> float:
    """Largest |log p(next token)| difference between the first prompt and the others."""
    import torch

    device = next(ctx.adapted.parameters()).device
    modes = [(m, m.training) for m in ctx.adapted.modules()]
    ctx.adapted.eval()  # dropout would make any two forwards differ
    dists = []
    try:
        with torch.no_grad():
            for prompt in ctx.prompts:
                ids = ctx.tokenizer(prompt, add_special_tokens=False)["input_ids"]
                logits = ctx.adapted(torch.tensor([ids], device=device))[0, -1].float()  # (V,)
                dists.append(logits.log_softmax(-1))
    finally:
        for m, mode in modes:
            m.training = mode
    return max(float((d - dists[0]).abs().max()) for d in dists[1:])


def _tail_mean(values: list[float], fraction: float = 0.1) -> float:
    """The mean of the last 10% of a series (at least one value): the end, smoothed."""
    n = max(1, int(len(values) * fraction))
    return sum(values[-n:]) / n


def _fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _loss_figure(result: Any) -> bytes:
    import matplotlib.pyplot as plt

    rows = result.history
    fig, ax = plt.subplots(figsize=(6.5, 4))
    train = [(r["tokens"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    val = [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.7)
    if val:
        ax.plot(*zip(*val), "o-", markersize=3, label="validation")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    return figure_to_png(fig)
