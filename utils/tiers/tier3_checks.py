"""Tier 3's checks: training, generalization, the baseline comparison, the search,
generation and the export, each read from the runs in `Tier3Context`."""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from utils.checks import CheckResult, Verdict
from utils.checks.report import figure_to_png
from utils.tiers.tier3_context import (
    TIER3_CHECKS,
    BaselineThresholds,
    GeneralizationThresholds,
    GenerationThresholds,
    Tier3Context,
    TrainingThresholds,
    needs_training,
)

log = logging.getLogger(__name__)


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
    if (skip := needs_training(ctx, v)) is not None:
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

    What it checks: a GPT-2 (BERT for a masked LM, BART for an encoder-decoder) from transformers, sized within 10% of
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
            advice="Run with baseline=True (the default) to compare with a size-matched GPT-2, BERT or BART.",
        )
    if (skip := needs_training(ctx, v)) is not None:
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
    warns when a greedy continuation is a single token repeated, or when every one is empty
    (the model ends each prompt at once). An encoder-decoder gets
    each prompt as its source: its first target token's distribution must depend on it,
    and it generates the continuation (trained as a prefix LM, that is what it learnt).
    Why it matters: the loss can look fine while the model ignores its prompt or loops;
    samples show it.
    Known false alarms: a briefly trained model repeats common words; that is a warning
    at most.
    Broken example: a model whose output ignores its input continues every prompt alike.
    How to fix: train longer; if continuations ignore the prompt, check the attention path.
    """
    if ctx.task not in ("causal_lm", "seq2seq"):
        return v.skip(f"Generation needs a causal LM or an encoder-decoder; this model is a {ctx.task}.")
    if (skip := needs_training(ctx, v)) is not None:
        return skip
    from utils.training.generation import generate_text

    t = v.thresholds
    n, prompts = t.new_tokens, ctx.prompts
    if ctx.task == "seq2seq":  # the target has the decoder's positions only
        n = min(n, ctx.adapted.profile.max_seq_len or n)
    greedy = generate_text(ctx.adapted, ctx.tokenizer, prompts, max_new_tokens=n, temperature=0)
    sampled = generate_text(
        ctx.adapted, ctx.tokenizer, prompts[0], max_new_tokens=n, temperature=0.8, top_k=50, top_p=0.95, seed=0
    )
    tails = greedy if ctx.task == "seq2seq" else [text[len(p) :] for text, p in zip(greedy, prompts)]
    new_ids = [ctx.tokenizer(tail, add_special_tokens=False)["input_ids"] for tail in tails]
    repeat = max((Counter(ids).most_common(1)[0][1] / len(ids) for ids in new_ids if ids), default=0.0)
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
    if not any(new_ids):
        return v.warn(
            "Every greedy continuation is empty: the model ends each prompt at once with its end-of-text token.",
            metrics,
            advice="Train longer; a briefly trained model over-predicts the token that separates documents.",
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
    if (skip := needs_training(ctx, v)) is not None:
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


def _prompt_sensitivity(ctx: Tier3Context) -> float:
    """Largest |log p(next token)| difference between the first prompt and the others; for
    an encoder-decoder, of the first target token with the prompt as the source (the decoder
    sees only its start token, so only the source can make the difference)."""
    import torch

    device = next(ctx.adapted.parameters()).device
    modes = [(m, m.training) for m in ctx.adapted.modules()]
    ctx.adapted.eval()  # dropout would make any two forwards differ
    dists = []
    try:
        with torch.no_grad():
            for prompt in ctx.prompts:
                ids = ctx.tokenizer(prompt, add_special_tokens=False)["input_ids"]
                source = torch.tensor([ids], device=device)  # (1, S)
                if ctx.task == "seq2seq":
                    first = torch.zeros((1, 1), dtype=torch.long, device=device)  # shifted away: start token in
                    logits = ctx.adapted(source, target_ids=first)[0, 0].float()  # (V,)
                else:
                    logits = ctx.adapted(source)[0, -1].float()  # (V,)
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
