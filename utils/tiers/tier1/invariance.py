"""Tier 1 checks that the output depends only on what it should: rows never mix, padding is
ignored, and eval mode repeats itself."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from utils.checks import CheckResult, Verdict
from utils.tiers.probes import (
    DIFF_RTOL,
    as_bt,
    block_candidates,
    changed,
    first_divergent,
)
from utils.tiers.tier1.causality import changed_ids, embedding_grads, spread
from utils.tiers.tier1.context import (
    Needs,
    Tier1Context,
    check,
    eval_mode,
)
from utils.vocabulary import KEEP_ONE_MASK_NAMES, PAD_TRUE_MASK_NAMES


@dataclass(frozen=True)
class BatchIndependenceThresholds:
    # One backward pass per row; beyond this count an evenly spread sample is tested.
    max_grad_rows: int = 8
    max_change: float = DIFF_RTOL  # relative change of other rows that counts as mixing


@dataclass(frozen=True)
class PaddingThresholds:
    max_change: float = DIFF_RTOL  # relative change of real positions that counts as a leak


# -- batch_independence --------------------------------------------------------------------


def _batch_advice(ctx: Tier1Context, name: str | None) -> str:
    if name is not None:
        m = ctx.model.get_submodule(name)
        if isinstance(m, nn.MultiheadAttention) and not m.batch_first:
            return (
                f"`{name}` is an nn.MultiheadAttention built without batch_first=True, so it "
                "reads your (B, T, D) input as (T, B, D) and attends across the batch. "
                f"Construct it with `nn.MultiheadAttention(..., batch_first=True)` (or "
                "transpose to (T, B, D) around the call)."
            )
        return (
            f"`{name}` ({type(m).__name__}) is the first module whose output for one row "
            "changes when another row changes. Look for reductions over dim 0, a "
            "view/reshape that swaps batch and time (use transpose), or BatchNorm."
        )
    return (
        "Some row's output depends on another row. Look for reductions over dim 0, a "
        "view/reshape that swaps batch and time (use transpose), or attention built "
        "without batch_first=True."
    )


@check("batch_independence", thresholds=BatchIndependenceThresholds(), needs=Needs(comparable=True))
def batch_independence(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Rows of a batch never mix

    What it checks: each row's output depends on that row only, by exact cross-row gradients
    and by changing one row and comparing the others.
    Why it matters: rows that mix train on each other's tokens and generate differently
    depending on what else is in the batch.
    Known false alarms: BatchNorm in train mode mixes rows by design (the check runs in eval
    mode, where it does not); a batch of one row skips.
    Broken example: BatchMixingLM, an nn.MultiheadAttention built without batch_first=True.
    How to fix: construct nn.MultiheadAttention(..., batch_first=True) (or transpose to
    (T, B, D) around it); avoid reductions over dim 0 and reshapes that swap batch and time.
    """
    if ctx.batch_size < 2:
        return v.skip(
            "Needs a batch of at least 2 rows; batch_size is 1.", advice="Pass batch_size=2 or more to run_tier1."
        )
    ids = ctx.ids(offset=v.stream("tokens"))
    B, T = ids.shape
    rows = spread(B, v.thresholds.max_grad_rows)
    grads = embedding_grads(ctx, ids, rows, lambda o, i: o[i], offset=v.stream("gradient"))
    metrics: dict = {"method": "gradient + perturbation" if grads else "perturbation"}
    cross = 0.0
    if grads:
        for i, g in zip(rows, grads):
            if g is not None and B > 1:
                others = torch.cat([g[:i], g[i + 1 :]])
                cross = max(cross, float(others.abs().max()))
        metrics["max_cross_row_gradient"] = cross
    row0 = torch.zeros_like(ids, dtype=torch.bool)
    row0[0] = True
    alt = changed_ids(ctx, ids, row0, offset=v.stream("other_row"))
    with torch.no_grad(), eval_mode(ctx.adapted):
        moved = changed(ctx.adapted(ids)[1:], ctx.adapted(alt)[1:])
    metrics["other_rows_change"] = moved
    if cross == 0 and moved <= v.thresholds.max_change:
        return v.pass_(
            f"Rows are independent (B={B}): changing one row leaves the others exactly as they were.", metrics
        )

    def region(o):
        bt = as_bt(o, B, T)
        return None if bt is None else bt[1:]

    with torch.no_grad(), eval_mode(ctx.adapted):
        where = first_divergent(
            ctx.model,
            lambda: ctx.adapted(ids),
            lambda: ctx.adapted(alt),
            block_candidates(ctx.model, ctx.profile.attention_modules),
            region,
        )
    metrics["first_mixing_module"] = where
    return v.fail(
        "Rows mix: the output of one row depends on other rows"
        + (f"; first mixing module: `{where}`." if where else "."),
        metrics,
        _batch_advice(ctx, where),
    )


# -- padding_invariance --------------------------------------------------------------------


def _name_convention(name: str | None) -> str | None:
    if name in KEEP_ONE_MASK_NAMES:
        return "keep_one"
    if name in PAD_TRUE_MASK_NAMES:
        return "pad_true"
    return None


def _pad_mask(ids: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, T) mask, 1 = real, with padding where the model's family puts it, and which rows
    are left-padded. Only a causal LM is left-padded (row 0: batched generation puts prompts
    at the end); every other model is right-padded, as its tokenizer does (a classifier that
    pools the first token would otherwise pool a pad). Rows pad different numbers of tokens."""
    B, T = ids.shape
    n_pad = max(1, T // 3)
    mask = torch.ones_like(ids)  # (B, T)
    left = torch.zeros(B, dtype=torch.bool, device=ids.device)  # (B,)
    if causal:
        mask[0, :n_pad] = 0
        left[0] = True
    else:
        mask[0, T - n_pad :] = 0
    if B > 1:
        mask[1, T - max(1, n_pad - 1) :] = 0
    return mask, left


@check("padding_invariance", thresholds=PaddingThresholds(), needs=Needs(mask=True, min_len=2, comparable=True))
def padding_invariance(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Real positions ignore what is in pad positions

    What it checks: with rows padded where the model's family pads (right; a causal LM also
    left, as batched generation does; an encoder-decoder in its source), changing only the
    pad tokens leaves every real position unchanged, the mask is read the right way round,
    and no real position turns NaN, with gradients on and under no_grad.
    Why it matters: a padded batch that leaks pad content trains on garbage, and an inverted
    mask attends only to padding.
    Known false alarms: models that take no mask skip; nn.MultiheadAttention's inference fast
    path with a left pad under a causal mask warns (NaN under no_grad only); a causal LM that
    only left padding disturbs (Hugging Face's RWKV ignores its mask) warns, since right
    padding, all training needs, is unaffected.
    Broken example: IgnoresMaskEncoder (mask never used), InvertedMaskLM (`== 1` for padding)
    and SourceMaskIgnoredSeq2Seq.
    How to fix: pass the mask to every attention (key_padding_mask=attention_mask == 0 for
    nn.MultiheadAttention) and keep pads out of anything that pools over positions.
    """
    p = ctx.profile
    ids = ctx.ids(offset=v.stream("tokens"))
    mask, left = _pad_mask(ids, causal=p.task == "causal_lm")
    alt = changed_ids(ctx, ids, mask == 0, offset=v.stream("pads"))
    real = mask.bool()
    whole = p.task in ("classification", "seq2seq")  # one prediction / a target with no pads
    target = {"target_ids": ids} if p.task == "seq2seq" else {}  # only the source is padded

    def at_real(out: torch.Tensor, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """The outputs at real positions of `rows` (every output of a classifier, and of a
        seq2seq model, whose padding is in the source)."""
        return out[rows] if whole else out[rows][real[rows]]

    # With gradients on, as in training (nn.MultiheadAttention then takes its regular path);
    # then under no_grad, as in inference, where its fast path treats masks differently.
    with eval_mode(ctx.adapted), torch.enable_grad():
        a = ctx.adapted(ids, mask, **target).detach()
        b = ctx.adapted(alt, mask, **target).detach()
        unmasked = ctx.adapted(ids, **target).detach()
    with eval_mode(ctx.adapted), torch.no_grad():
        inference = ctx.adapted(ids, mask, **target)
    drift = changed(at_real(a), at_real(b))
    left_drift = changed(at_real(a, left), at_real(b, left)) if left.any() else 0.0
    right_drift = changed(at_real(a, ~left), at_real(b, ~left)) if (~left).any() else 0.0
    finite = bool(torch.isfinite(at_real(a)).all())
    finite_inference = bool(torch.isfinite(at_real(inference)).all())
    expected = _name_convention(p.mask_name)
    metrics = {
        "pad_positions": int((mask == 0).sum()),
        "real_position_change": drift,
        "padded_on": ("left (row 0) and right" if left.any() else "right, source-side" if target else "right"),
        "left_padding_change": left_drift,
        "right_padding_change": right_drift,
        "mask": p.mask_name or "attention_mask (graph executor)",
        "convention": p.mask_convention,
        "verified": p.mask_verified,
        "convention_by_name": expected,
        "finite_under_no_grad": finite_inference,
    }
    if not finite:
        return v.fail(
            "Real positions become NaN/Inf when a mask is given.",
            metrics,
            "A row of attention scores is all -inf somewhere (e.g. a causal mask "
            "and a padding mask together block every key of a pad query). Use a "
            "large negative number instead of -inf, or torch.nan_to_num after "
            "the softmax.",
        )
    if expected and p.mask_verified and p.mask_convention != expected:
        return v.fail(
            f"The mask is inverted: `{p.mask_name}` should mean "
            f"{'1 = real token' if expected == 'keep_one' else 'True = pad'}, but the model "
            f"only ignores pads when given the opposite.",
            metrics,
            f"Tokenizers send `{p.mask_name}` with 1 for real tokens and 0 for pads; the model "
            "treats it the other way round. Fix the conversion: `key_padding_mask = "
            "attention_mask == 0` (not `== 1`)."
            if expected == "keep_one"
            else f"By PyTorch's convention `{p.mask_name}` is True at pads (the keys to ignore); the "
            "model treats True as real tokens. Pass it to the attention as it is (drop the `~` "
            "or `== 0`), or rename the parameter attention_mask if you mean 1 = real token.",
        )
    if (~left).any() and right_drift <= v.thresholds.max_change < left_drift:
        return v.warn(
            f"Right padding is ignored, but with left padding real positions change (by "
            f"{left_drift:.3g}) when only pad content changes: the model does not use its mask "
            "where pads come first. Training on right-padded batches is unaffected (a causal "
            "model never sees the pads after a real position); batched generation with "
            "left-padded prompts is not.",
            metrics,
            "Pad on the right for training, and generate one prompt at a time (or with prompts "
            f"of one length). To support left padding, pass `{p.mask_name or 'attention_mask'}` "
            "on to every place positions are mixed (each attention's key mask; in a recurrent "
            "layer, keep the state unchanged at pad positions).",
        )
    if drift > v.thresholds.max_change:
        ignored = changed(a, unmasked) <= v.thresholds.max_change
        why = (
            "the model's output does not depend on the mask at all"
            if ignored
            else "the mask does not reach every place positions are mixed"
        )
        return v.fail(
            f"Real positions change (by {drift:.3g}) when only pad content changes: {why}.",
            metrics,
            f"Pass `{p.mask_name or 'attention_mask'}` on to every attention "
            "(e.g. `key_padding_mask=attention_mask == 0` for nn.MultiheadAttention) and keep "
            "pads out of anything that pools over positions.",
        )
    if not finite_inference:
        return v.warn(
            "Padding is ignored correctly in training, but under torch.no_grad (inference) "
            "real positions of the left-padded row become NaN.",
            metrics,
            "nn.MultiheadAttention's inference fast path returns NaN for a query whose keys are "
            "all masked (a left pad under a causal mask), and the NaN then spreads. Pass float "
            "masks (0 / a large negative number such as torch.finfo(x.dtype).min / 2) instead "
            "of boolean ones, or let pad queries attend to themselves.",
        )
    return v.pass_(
        f"Changing the {metrics['pad_positions']} pad tokens ({metrics['padded_on']} "
        "padding) leaves every real position unchanged.",
        metrics,
    )


# -- determinism ----------------------------------------------------------------------------


def dropout_sources(model: nn.Module) -> list[str]:
    """Dropout modules with p > 0 and modules with a positive `*drop*` rate attribute."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            found.append(name)
            continue
        for k, v in vars(m).items():
            if "drop" in k.lower() and isinstance(v, float) and v > 0:
                found.append(f"{name}.{k}" if name else k)
    return found


@check("determinism")
def determinism(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Eval mode is deterministic; train mode applies dropout

    What it checks: two eval-mode calls on the same input are identical, and train mode
    differs between calls when dropout is configured.
    Why it matters: randomness at inference makes evaluation and generation unrepeatable;
    dropout that never runs regularises nothing.
    Known false alarms: a model without dropout is deterministic in train mode too and
    passes.
    Broken example: EvalDropoutLM, calling F.dropout without training=self.training.
    How to fix: write F.dropout(x, p, training=self.training) or use nn.Dropout modules, and
    keep torch.rand/randn out of forward at inference.
    """
    ids = ctx.ids(offset=v.stream("tokens"))
    with torch.no_grad(), eval_mode(ctx.adapted):
        first, second = ctx.adapted(ids), ctx.adapted(ids)
    same_eval = torch.allclose(first, second, rtol=0, atol=0, equal_nan=True)
    drops = dropout_sources(ctx.model)
    metrics: dict = {"eval_max_change": changed(first, second), "dropout": drops[:20]}
    if not same_eval:
        names = [n for n, _ in ctx.model.named_modules() if n]
        with torch.no_grad(), eval_mode(ctx.adapted):
            where = first_divergent(ctx.model, lambda: ctx.adapted(ids), lambda: ctx.adapted(ids), names, lambda o: o)
        metrics["first_random_module"] = where
        return v.fail(
            "Two eval-mode calls on the same input give different outputs"
            + (f"; first differing module: `{where}`." if where else "."),
            metrics,
            "Something random runs in eval mode"
            + (f" in or just before `{where}`" if where else "")
            + ": F.dropout(x, p) defaults to training=True, so write "
            "F.dropout(x, p, training=self.training) (or use an nn.Dropout module); keep "
            "torch.rand/randn out of forward at inference.",
        )
    trainee = copy.deepcopy(ctx.adapted).train()
    with torch.no_grad():
        differs = not torch.equal(trainee(ids), trainee(ids))
    metrics["train_differs"] = differs
    if drops and not differs:
        return v.warn(
            f"Dropout is configured ({', '.join(drops[:3])}) but two train-mode calls give "
            "identical outputs: dropout never runs.",
            metrics,
            "Call the dropout modules in forward, or pass training=self.training to F.dropout.",
        )
    tail = (
        "train mode differs between calls (dropout active)."
        if differs
        else "no dropout, so train mode is deterministic too."
    )
    return v.pass_(f"Eval mode gives identical outputs on repeated calls; {tail}", metrics)
