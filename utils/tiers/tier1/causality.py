"""Tier 1's causality check: a causal model never looks ahead; when one does, find the layer
that leaks and say how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from utils.checks import CheckResult, Verdict, stream_offset
from utils.tiers.probes import (
    DIFF_RTOL,
    EmbeddingTap,
    as_bt,
    block_candidates,
    changed,
    first_divergent,
)
from utils.tiers.tier1.context import (
    Needs,
    Tier1Context,
    check,
    eval_mode,
    other_task,
)
from utils.vocabulary import token_embedding


@dataclass(frozen=True)
class CausalityThresholds:
    # One backward pass per position; beyond this count an evenly spread sample is tested
    # (first and last included).
    max_grad_positions: int = 64
    # Relative output change that counts as a leak (see probes.DIFF_RTOL: real leaks move
    # outputs by 1e-3 or more, float32 noise stays near 1e-7).
    max_change: float = DIFF_RTOL


def spread(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def changed_ids(ctx: Tier1Context, ids: torch.Tensor, where: torch.Tensor, offset: int) -> torch.Tensor:
    """`ids` with every position in the boolean `where` replaced by a different token."""
    V = ctx.id_high
    g = ctx.generator(offset)
    shift = torch.randint(1, max(V, 2), ids.shape, generator=g).to(ids.device)
    return torch.where(where, (ids + shift) % V, ids)


def embedding_grads(ctx: Tier1Context, ids: torch.Tensor, picks: list, select, offset: int):
    """For each pick, d(select(out, pick) . r) / d(token embedding), as (B, T, D); None when
    there is no token embedding or the output does not depend on it through autograd."""
    found = token_embedding(ctx.model, ctx.vocab_size)
    if found is None:
        return None
    B, T = ids.shape
    with EmbeddingTap(found[1]) as tap, eval_mode(ctx.adapted), torch.enable_grad():
        out = ctx.adapted(ids)
        if tap.leaf is None or not out.requires_grad:
            return None
        r = torch.randn(out.shape, generator=ctx.generator(offset)).to(out)
        grads = []
        for pick in picks:
            g = torch.autograd.grad(
                (select(out, pick) * select(r, pick)).sum(), tap.leaf, retain_graph=True, allow_unused=True
            )[0]
            grads.append(None if g is None else as_bt(g, B, T))
    return grads


def locate_future_leak(ctx: Tier1Context, ids: torch.Tensor, cut: int) -> str | None:
    """The first module whose output at positions <= cut changes when later tokens change."""
    B, T = ids.shape
    later = torch.zeros_like(ids, dtype=torch.bool)
    later[:, cut + 1 :] = True
    alt = changed_ids(ctx, ids, later, offset=stream_offset("locate_future_leak"))

    def region(o):
        bt = as_bt(o, B, T)
        return None if bt is None else bt[:, : cut + 1]

    names = block_candidates(ctx.model, ctx.profile.attention_modules)
    with torch.no_grad(), eval_mode(ctx.adapted):
        return first_divergent(ctx.model, lambda: ctx.adapted(ids), lambda: ctx.adapted(alt), names, region)


def is_builder_export(model: nn.Module) -> bool:
    """Whether the model's source file is a Transformer Builder export (its header says so)."""
    try:
        head = Path(type(model).forward.__code__.co_filename).read_text(errors="replace")[:400]
    except (OSError, AttributeError):
        return False
    return "Transformer Builder" in head


def causal_advice(ctx: Tier1Context, name: str | None) -> str:
    """What to change, naming the module that lets positions see the future."""
    if name is None:
        return (
            "Positions see later tokens, but no single module could be named. Apply a "
            "causal mask in every attention: scores.masked_fill(torch.triu(torch.ones(T, T, "
            "dtype=torch.bool, device=x.device), 1), float('-inf')) before the softmax."
        )
    m = ctx.model.get_submodule(name)
    canvas = (
        f' In the canvas, make node {name} causal ("causal": true in its config.json params) and export again.'
        if is_builder_export(ctx.model)
        else ""
    )
    if isinstance(m, nn.MultiheadAttention):
        return (
            f"`{name}` (nn.MultiheadAttention) is called without a causal mask, so position "
            "t attends to later tokens. Build the mask in forward and pass it: "
            "`mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)`, "
            f"then `self.{name}(x, x, x, attn_mask=mask, is_causal=True, "
            "key_padding_mask=...)` (is_causal=True alone is only a hint; the mask must be "
            f"passed).{canvas}"
        )
    if name in ctx.profile.attention_modules:
        return (
            f"`{name}` ({type(m).__name__}) lets position t attend to later positions. Mask "
            "the scores before the softmax: `scores = scores.masked_fill(torch.triu("
            "torch.ones(T, T, dtype=torch.bool, device=scores.device), 1), float('-inf'))`, "
            f"or use F.scaled_dot_product_attention(q, k, v, is_causal=True).{canvas}"
        )
    return (
        f"`{name}` ({type(m).__name__}) is the first module whose output at a position "
        "changes when later tokens change: it mixes positions without a causal mask "
        "(attention without a mask, a convolution padded on both sides, a mean over the "
        "sequence...). Make it use positions <= t only."
    )


def _not_causal(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Other tasks skip, except a masked LM that the adapter only guessed from behaviour: it
    guessed so because positions see later tokens, which in a model meant to be a GPT is the
    very leak this check exists for, so that one warns instead."""
    p = ctx.profile
    if p.task != "masked_lm" or not p.task_source.startswith("behaviour"):
        why, todo = other_task(p, ("causal_lm",))
        return v.skip(why, advice=todo)
    where = locate_future_leak(ctx, ctx.ids(offset=v.stream("tokens")), 0)
    metrics = {"task_source": p.task_source, "first_leaking_module": where}
    return v.warn(
        "Positions see later tokens"
        + (f" (first in `{where}`)" if where else "")
        + ', so the model was taken for a masked LM: neither config.json ("task") nor the '
        "class name says what it is.",
        metrics,
        "If the model is meant to generate text left to right (GPT-style), this is a "
        "future-token leak: run again with task='causal_lm' to have it checked and explained. "
        "If it is a bidirectional encoder (BERT-style), pass task='masked_lm' and this goes "
        "away.",
    )


def _decoder_causality(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """An encoder-decoder's decoder: with the source held fixed, resampling the target after
    position t must leave the logits at positions <= t as they were (the encoder sees the
    whole source, by design, so only the target side is judged)."""
    source, target = ctx.ids(offset=v.stream("tokens")), ctx.ids(offset=v.stream("target"))
    B, T = target.shape
    diffs: dict[int, float] = {}
    alts: dict[int, torch.Tensor] = {}
    with torch.no_grad(), eval_mode(ctx.adapted):
        base = ctx.adapted(source, target_ids=target)  # (B, T, V)
        for cut in sorted({0, T // 2 - 1, T - 2} - {-1}):
            later = torch.zeros_like(target, dtype=torch.bool)
            later[:, cut + 1 :] = True
            alts[cut] = changed_ids(ctx, target, later, offset=v.stream(f"resample@{cut}"))
            alt = ctx.adapted(source, target_ids=alts[cut])
            diffs[cut] = changed(base[:, : cut + 1], alt[:, : cut + 1])
    metrics: dict = {
        "method": "resampling the target, source fixed",
        "resample_change": {str(c): d for c, d in diffs.items()},
    }
    moved = [c for c, d in diffs.items() if d > v.thresholds.max_change]
    if not moved:
        return v.pass_(
            "No leak in the decoder: resampling later target tokens leaves the logits at "
            "earlier target positions unchanged (source held fixed).",
            metrics,
        )
    cut = min(moved)

    def region(o):
        bt = as_bt(o, B, T)
        return None if bt is None else bt[:, : cut + 1]

    names = block_candidates(ctx.model, ctx.profile.attention_modules)
    with torch.no_grad(), eval_mode(ctx.adapted):
        where = first_divergent(
            ctx.model,
            lambda: ctx.adapted(source, target_ids=target),
            lambda: ctx.adapted(source, target_ids=alts[cut]),
            names,
            region,
        )
    metrics["first_leaking_module"] = where
    return v.fail(
        f"Future-token leak in the decoder: logits at target position {cut} depend on later "
        "target tokens" + (f"; first leaking module: `{where}`." if where else "."),
        metrics,
        causal_advice(ctx, where),
    )


@check("causality", thresholds=CausalityThresholds(), needs=Needs(min_len=2, comparable=True))
def causality(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """No position sees later tokens

    What it checks: for a causal LM, the gradient of each position's logits with respect to
    later token embeddings is exactly zero, and resampling later tokens leaves earlier logits
    unchanged; a leak names the first module where it appears.
    Why it matters: a model that sees the next token learns to copy it; its training loss
    looks excellent and it cannot generate.
    Known false alarms: bidirectional models (masked LM, encoders) skip; a model the adapter
    only guessed to be a masked LM from this very behaviour warns instead of skipping. An
    encoder-decoder is judged on its decoder only, with the source held fixed.
    Broken example: NoCausalMaskGPT (no causal mask), LateLeakGPT (only block 2 unmasked) and
    PeekingDecoderSeq2Seq (a decoder without its causal mask).
    How to fix: mask the attention scores before the softmax with torch.triu(..., 1) filled
    with -inf, or use F.scaled_dot_product_attention(q, k, v, is_causal=True).
    """
    if ctx.task == "seq2seq":
        return _decoder_causality(ctx, v)
    if ctx.task != "causal_lm":
        return _not_causal(ctx, v)
    ids = ctx.ids(offset=v.stream("tokens"))
    T = ids.shape[1]
    positions = spread(T - 1, v.thresholds.max_grad_positions)
    grads = embedding_grads(ctx, ids, positions, lambda o, t: o[:, t], offset=v.stream("gradient"))
    metrics: dict = {"method": "gradient + resampling" if grads else "resampling"}
    leaks = []
    if grads:
        future = [0.0 if g is None else float(g[:, t + 1 :].abs().max()) for t, g in zip(positions, grads)]
        leaks = [t for t, f in zip(positions, future) if f > 0]
        metrics.update(max_future_gradient=max(future), leaking_positions=len(leaks), positions_tested=len(positions))
    diffs = {}
    with torch.no_grad(), eval_mode(ctx.adapted):
        base = ctx.adapted(ids)
        for cut in sorted({0, T // 2 - 1, T - 2} - {-1}):
            later = torch.zeros_like(ids, dtype=torch.bool)
            later[:, cut + 1 :] = True
            alt = ctx.adapted(changed_ids(ctx, ids, later, offset=v.stream(f"resample@{cut}")))
            diffs[cut] = changed(base[:, : cut + 1], alt[:, : cut + 1])
    metrics["resample_change"] = {str(c): d for c, d in diffs.items()}
    moved = [c for c, d in diffs.items() if d > v.thresholds.max_change]
    if not leaks and not moved:
        how = (
            "the gradient of every tested position's logits with respect to later token embeddings is exactly 0, and "
            if grads
            else ""
        )
        return v.pass_(f"No leak: {how}resampling later tokens leaves earlier logits unchanged.", metrics)
    cut = min(leaks + moved)
    where = locate_future_leak(ctx, ids, cut)
    metrics["first_leaking_module"] = where
    first = f"logits at position {cut} depend on later tokens" + (f"; first leaking module: `{where}`" if where else "")
    return v.fail(
        f"Future-token leak: {first} ({len(leaks)} of {len(positions)} positions by gradient).",
        metrics,
        causal_advice(ctx, where),
    )
