"""Tier 1 checks that the model runs: it takes the call it is given and returns the right
shapes at every length it claims."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from utils._frames import describe
from utils.checks import CheckResult, Verdict
from utils.tiers.tier1.context import (
    LM_TASKS,
    Needs,
    Tier1Context,
    check,
    eval_mode,
)
from utils.vocabulary import token_embedding


@dataclass(frozen=True)
class OutputShapeThresholds:
    # The full max_seq_len is run only up to this length; longer contexts (131072 for some
    # Llama configs) are probed at this length instead, which still exceeds any learned
    # position table a quick check could miss.
    max_len: int = 4096


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
    tests_limit = bool(p.max_seq_len) and p.max_seq_len <= v.thresholds.max_len
    # The over-length call first: it usually raises at once, and after a full-length call
    # the clock would price it as one more.
    outcome, message = _over_length(ctx, v.stream("over_length")) if tests_limit else ("untested", "")
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
    if tests_limit:
        metrics.update(over_length=outcome, over_length_error=message, library=p.library)
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
