"""Tier 1 checks of what the model computes: it runs, has the right shapes, never looks ahead,
never mixes rows, ignores padding, and repeats itself in eval mode."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from utils._frames import describe
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
    LM_TASKS,
    Needs,
    Tier1Context,
    check,
    eval_mode,
    other_task,
)
from utils.vocabulary import KEEP_ONE_MASK_NAMES, PAD_TRUE_MASK_NAMES, token_embedding


@dataclass(frozen=True)
class OutputShapeThresholds:
    # The full max_seq_len is run only up to this length; longer contexts (131072 for some
    # Llama configs) are probed at this length instead, which still exceeds any learned
    # position table a quick check could miss.
    max_len: int = 4096


@dataclass(frozen=True)
class CausalityThresholds:
    # One backward pass per position; beyond this count an evenly spread sample is tested
    # (first and last included).
    max_grad_positions: int = 64
    # Relative output change that counts as a leak (see probes.DIFF_RTOL: real leaks move
    # outputs by 1e-3 or more, float32 noise stays near 1e-7).
    max_change: float = DIFF_RTOL


@dataclass(frozen=True)
class BatchIndependenceThresholds:
    # One backward pass per row; beyond this count an evenly spread sample is tested.
    max_grad_rows: int = 8
    max_change: float = DIFF_RTOL  # relative change of other rows that counts as mixing


@dataclass(frozen=True)
class PaddingThresholds:
    max_change: float = DIFF_RTOL  # relative change of real positions that counts as a leak


# Error messages that say nothing a beginner can act on (and on a GPU are a device-side
# assert that leaves CUDA unusable until the runtime restarts).
_OPAQUE = ("index out of range", "device-side assert", "out of bounds", "indexselect")


# -- forward_signature ----------------------------------------------------------------------


@check("forward_signature", needs=Needs(adapted=False, forward=False))
def forward_signature(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """The model can be called and adapted

    What it checks: the adapter can call the model with token ids (and a padding mask when
    forward takes one) and find its logits, task, vocabulary size and maximum length.
    Why it matters: every other check, and training, calls the model through the adapter; a
    model it cannot call cannot be checked or trained.
    Known false alarms: a classifier without vocab_size or max_seq_len is not warned about; a
    model whose sizes live only in its code warns until they are passed or put in config.json.
    Broken example: NeedsUnknownArgs, whose forward requires an `alpha` argument besides
    input_ids.
    How to fix: make forward take token ids (B, T) and return logits, or pass task=,
    vocab_size= and max_seq_len= to run_tier1.
    """
    if ctx.adapted is None and ctx.adapt_out_of_time:
        return v.skip(ctx.adapt_error, advice="Give the tier more time, or run on a GPU.")
    if ctx.adapted is None:
        return v.fail(
            ctx.adapt_error.splitlines()[0],
            metrics={"error": ctx.adapt_error},
            advice=_adapt_fix(ctx.adapt_error),
        )
    p = ctx.profile
    metrics = {
        "task": p.task,
        "task_source": p.task_source,
        "vocab_size": p.vocab_size,
        "vocab_source": p.vocab_source,
        "max_seq_len": p.max_seq_len,
        "max_seq_len_source": p.max_seq_len_source,
        "input": p.input_name,
        "mask": p.mask_name,
        "mask_convention": p.mask_convention,
        "mask_verified": p.mask_verified,
        "batch_first": p.batch_first,
        "output_kind": p.output_kind,
        "graph_executor": p.uses_graph_executor,
        "attention_modules": list(p.attention_modules),
        "notes": list(p.notes),
    }
    # A class from an installed package that declares no length (BLOOM's ALiBi, Mamba) has
    # none to find: only the user's own code can have a limit nobody wrote down.
    missing = [
        name
        for name, value in (("vocab_size", p.vocab_size), ("max_seq_len", p.max_seq_len))
        if value is None and not (name == "max_seq_len" and p.library)
    ]
    if missing and p.task != "classification":
        return v.warn(
            f"Adapted, but {' and '.join(missing)} could not be found: {p.summary()}",
            metrics,
            advice=f"Pass {', '.join(m + '=...' for m in missing)} to run_tier1 (or put "
            "them in config.json) so shapes and lengths can be checked.",
        )
    return v.pass_(p.summary(), metrics)


def _adapt_fix(error: str) -> str:
    """What the adapter found, tried and advises (the lines after its first), else the
    general advice; the first line is the summary."""
    rest = " ".join(line.strip() for line in error.splitlines()[1:])
    return rest or (
        "Make forward take token ids (B, T) and return logits, or pass task=, "
        "vocab_size= and max_seq_len= to run_tier1."
    )


# -- output_shape ---------------------------------------------------------------------------


def _lengths(ctx: Tier1Context, max_len_tested: int) -> list[int]:
    """T in {1, an odd length, max_seq_len}, all within the model's limit."""
    max_len = ctx.profile.max_seq_len
    cap = min(max_len, max_len_tested) if max_len else None
    odd = [t for t in (ctx.seq_len, ctx.seq_len - 1, 5, 7, 3) if t > 1 and t % 2 == 1 and (cap is None or t <= cap)]
    preferred = [t for t in odd if t not in (3, ctx.vocab_size)]
    chosen = [1] + (preferred or odd)[:1] + ([cap] if cap else [])
    return sorted(set(chosen))


def _expected(ctx: Tier1Context, B: int, T: int) -> str:
    p = ctx.profile
    if p.task == "classification":
        return f"({B}, {p.num_classes})"
    return f"({B}, {T}, {p.vocab_size if p.task in LM_TASKS else 'D'})"


def _shape_ok(ctx: Tier1Context, out: torch.Tensor, B: int, T: int, width: list[int]) -> bool:
    p = ctx.profile
    if p.task == "classification":
        return tuple(out.shape) == (B, p.num_classes)
    if out.dim() != 3 or tuple(out.shape[:2]) != (B, T):
        return False
    if p.task in LM_TASKS:
        return p.vocab_size is None or out.shape[2] == p.vocab_size
    width.append(int(out.shape[2]))
    return len(set(width)) == 1


def _short_tables(ctx: Tier1Context, T: int) -> list[str]:
    """Embedding tables other than the token embedding with fewer rows than T."""
    tok = token_embedding(ctx.model, ctx.vocab_size)
    return [
        f"`{n}` ({m.num_embeddings} rows)"
        for n, m in ctx.model.named_modules()
        if isinstance(m, nn.Embedding) and (tok is None or m is not tok[1]) and m.num_embeddings < T
    ]


def _is_opaque(exc: Exception) -> bool:
    msg = str(exc).strip().lower()
    return not msg or isinstance(exc, IndexError) or any(k in msg for k in _OPAQUE)


def _over_length(ctx: Tier1Context, offset: int) -> tuple[str, str]:
    """Call with max_seq_len + 1 tokens, on a CPU copy (an index error on a GPU is a
    device-side assert that breaks every later check). Returns (outcome, message)."""
    T = ctx.profile.max_seq_len + 1
    model = ctx.adapted if ctx.device.type == "cpu" else copy.deepcopy(ctx.adapted).cpu()
    ids = ctx.ids(1, T, offset=offset).cpu()
    try:
        with torch.no_grad(), eval_mode(model):
            model(ids)
    except Exception as exc:  # noqa: BLE001 - the error itself is what is judged
        text = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        return ("opaque" if _is_opaque(exc) else "clear"), text
    return "accepted", ""


@check("output_shape", thresholds=OutputShapeThresholds(), needs=Needs(forward=False))
def output_shape(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Logits are (B, T, V) or (B, C) for every batch size and length

    What it checks: logits are (B, T, V) (or (B, C) for a classifier) for B in {1, 3} and T in
    {1, an odd length, max_seq_len}, and max_seq_len + 1 tokens give a clear error.
    Why it matters: a wrong shape breaks the loss or silently trains the wrong axis; an
    opaque index error past the position table is a device-side assert on a GPU.
    Known false alarms: models without a fixed-size position table accept max_seq_len + 1
    tokens and pass; contexts longer than 4096 are tested at 4096 only. A class from an
    installed package (Hugging Face's) is not asked to check its length: the adapter refuses
    longer inputs with a clear error itself.
    Broken example: ShortPositionLM, whose position table has 8 rows for max_seq_len 16.
    How to fix: return (B, T, vocab_size) logits for every B and T up to max_seq_len, size
    position tables max_seq_len rows, and check the length at the top of forward.
    """
    p = ctx.profile
    rows, bad, width = [], [], []
    longest = max(_lengths(ctx, v.thresholds.max_len))
    for B in (1, 3):
        for T in _lengths(ctx, v.thresholds.max_len):
            if B > 1 and T == longest > ctx.seq_len:
                continue  # the full length once (B=1): a long context costs seconds per call
            try:
                with torch.no_grad(), eval_mode(ctx.adapted):
                    out = ctx.adapted(ctx.ids(B, T, offset=v.stream(f"B={B},T={T}")))
                got = str(tuple(out.shape))
                ok = _shape_ok(ctx, out, B, T, width)
            except Exception as exc:  # noqa: BLE001 - a failing size is the finding
                got, ok = describe(exc), False
            rows.append({"B": B, "T": T, "expected": _expected(ctx, B, T), "got": got})
            if not ok:
                bad.append(rows[-1])
    metrics: dict = {"calls": rows}
    if bad:
        worst = bad[0]
        short = _short_tables(ctx, max(r["T"] for r in bad))
        advice = (
            f"Position table(s) {', '.join(short)} are shorter than max_seq_len "
            f"{p.max_seq_len}: make them max_seq_len rows long, or lower max_seq_len in the "
            "config."
            if short
            else "Make forward return logits of shape (B, T, vocab_size) for every B and T up to "
            "max_seq_len (or (B, num_classes) for a classifier); the calls above show "
            "which sizes break."
        )
        return v.fail(
            f"{len(bad)} of {len(rows)} calls failed; e.g. B={worst['B']}, T={worst['T']}: "
            f"expected {worst['expected']}, got {worst['got']}",
            metrics,
            advice,
        )
    summary = (
        f"Shapes right for B in (1, 3) and T in {tuple(sorted({r['T'] for r in rows}))}"
        f"{f' (T={longest} at B=1)' if longest > ctx.seq_len else ''}."
    )
    if not p.max_seq_len:
        return v.pass_(summary + " max_seq_len unknown: the limit was not tested.", metrics)
    if p.max_seq_len > v.thresholds.max_len:
        return v.pass_(summary + f" max_seq_len {p.max_seq_len} is tested at {v.thresholds.max_len} only.", metrics)
    outcome, message = _over_length(ctx, v.stream("over_length"))
    metrics.update(over_length=outcome, over_length_error=message, library=p.library)
    if p.library and outcome == "clear":
        return v.pass_(
            summary + f" {p.model_class} comes from the installed package {p.library}, so the "
            f"toolkit enforces the limit itself: {p.max_seq_len + 1} tokens get the adapter's "
            f"clear error ({message[:160]}).",
            metrics,
        )
    if outcome == "opaque":
        return v.warn(
            summary + f" But max_seq_len + 1 = {p.max_seq_len + 1} tokens gives an opaque error: {message}",
            metrics,
            advice="Check the length at the top of forward: `if T > self.max_seq_len: raise "
            "ValueError(f'sequence of {T} tokens; this model takes at most "
            "{self.max_seq_len}')`. Without it a GPU reports a device-side assert and the "
            "runtime must be restarted.",
        )
    tail = (
        f" {p.max_seq_len + 1} tokens give a clear error."
        if outcome == "clear"
        else f" {p.max_seq_len + 1} tokens are accepted (no fixed-size position table)."
    )
    return v.pass_(summary + tail, metrics)


# -- causality ------------------------------------------------------------------------------


def _spread(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _changed_ids(ctx: Tier1Context, ids: torch.Tensor, where: torch.Tensor, offset: int) -> torch.Tensor:
    """`ids` with every position in the boolean `where` replaced by a different token."""
    V = ctx.id_high
    g = ctx.generator(offset)
    shift = torch.randint(1, max(V, 2), ids.shape, generator=g).to(ids.device)
    return torch.where(where, (ids + shift) % V, ids)


def _embedding_grads(ctx: Tier1Context, ids: torch.Tensor, picks: list, select, offset: int):
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
    alt = _changed_ids(ctx, ids, later, offset=stream_offset("locate_future_leak"))

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
            alts[cut] = _changed_ids(ctx, target, later, offset=v.stream(f"resample@{cut}"))
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
    positions = _spread(T - 1, v.thresholds.max_grad_positions)
    grads = _embedding_grads(ctx, ids, positions, lambda o, t: o[:, t], offset=v.stream("gradient"))
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
            alt = ctx.adapted(_changed_ids(ctx, ids, later, offset=v.stream(f"resample@{cut}")))
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
    rows = _spread(B, v.thresholds.max_grad_rows)
    grads = _embedding_grads(ctx, ids, rows, lambda o, i: o[i], offset=v.stream("gradient"))
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
    alt = _changed_ids(ctx, ids, row0, offset=v.stream("other_row"))
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
    alt = _changed_ids(ctx, ids, mask == 0, offset=v.stream("pads"))
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
