"""Tier 1 checks of what the model computes: it runs, has the right shapes, never looks ahead,
never mixes rows, ignores padding, and repeats itself in eval mode."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from utils._frames import describe
from utils.tiers.probes import (
    DIFF_RTOL,
    EmbeddingTap,
    as_bt,
    block_candidates,
    changed,
    first_divergent,
    token_embedding,
)
from utils.tiers.report import CheckResult
from utils.tiers.tier1_context import (
    LM_TASKS,
    Needs,
    Tier1Context,
    eval_mode,
    other_task,
    tier1_check,
)

# output_shape runs the full max_seq_len only up to this length; longer contexts (131072 for
# some Llama configs) are probed at this length instead, which still exceeds any learned
# position table a quick check could miss.
OUTPUT_SHAPE_MAX_T = 4096
# The gradient checks take one backward pass per position / row; beyond these counts they
# test an evenly spread sample (first and last included).
MAX_GRAD_POSITIONS = 64
MAX_GRAD_ROWS = 8
# Error messages that say nothing a beginner can act on (and on a GPU are a device-side
# assert that leaves CUDA unusable until the runtime restarts).
_OPAQUE = ("index out of range", "device-side assert", "out of bounds", "indexselect")
# Padding-mask parameter names whose convention is fixed by the ecosystem they come from.
_KEEP_ONE_NAMES = ("attention_mask", "input_mask")
_PAD_TRUE_NAMES = ("key_padding_mask", "src_key_padding_mask", "padding_mask", "pad_mask")


# -- forward_signature ----------------------------------------------------------------------


@tier1_check("forward_signature", "The model can be called and adapted",
             Needs(adapted=False, forward=False))
def forward_signature(ctx: Tier1Context) -> CheckResult:
    title = "The model can be called and adapted"
    if ctx.adapted is None and ctx.adapt_out_of_time:
        return CheckResult("forward_signature", title, "skip", ctx.adapt_error,
                           advice="Give the tier more time, or run on a GPU.")
    if ctx.adapted is None:
        return CheckResult(
            "forward_signature", title, "fail", ctx.adapt_error.splitlines()[0],
            metrics={"error": ctx.adapt_error},
            advice=_adapt_fix(ctx.adapt_error),
        )
    p = ctx.profile
    metrics = {
        "task": p.task, "task_source": p.task_source, "vocab_size": p.vocab_size,
        "vocab_source": p.vocab_source, "max_seq_len": p.max_seq_len,
        "max_seq_len_source": p.max_seq_len_source, "input": p.input_name,
        "mask": p.mask_name, "mask_convention": p.mask_convention,
        "mask_verified": p.mask_verified, "batch_first": p.batch_first,
        "output_kind": p.output_kind, "graph_executor": p.uses_graph_executor,
        "attention_modules": list(p.attention_modules), "notes": list(p.notes),
    }
    missing = [name for name, value in (("vocab_size", p.vocab_size),
                                        ("max_seq_len", p.max_seq_len)) if value is None]
    if missing and p.task != "classification":
        return CheckResult(
            "forward_signature", title, "warn",
            f"Adapted, but {' and '.join(missing)} could not be found: {p.summary()}",
            metrics, advice=f"Pass {', '.join(m + '=...' for m in missing)} to run_tier1 (or put "
                            "them in config.json) so shapes and lengths can be checked.")
    return CheckResult("forward_signature", title, "pass", p.summary(), metrics)


def _adapt_fix(error: str) -> str:
    """What the adapter found, tried and advises (the lines after its first), else the
    general advice; the first line is the summary."""
    rest = " ".join(line.strip() for line in error.splitlines()[1:])
    return rest or ("Make forward take token ids (B, T) and return logits, or pass task=, "
                    "vocab_size= and max_seq_len= to run_tier1.")


# -- output_shape ---------------------------------------------------------------------------


def _lengths(ctx: Tier1Context) -> list[int]:
    """T in {1, an odd length, max_seq_len}, all within the model's limit."""
    max_len = ctx.profile.max_seq_len
    cap = min(max_len, OUTPUT_SHAPE_MAX_T) if max_len else None
    odd = [t for t in (ctx.seq_len, ctx.seq_len - 1, 5, 7, 3)
           if t > 1 and t % 2 == 1 and (cap is None or t <= cap)]
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
    return [f"`{n}` ({m.num_embeddings} rows)" for n, m in ctx.model.named_modules()
            if isinstance(m, nn.Embedding) and (tok is None or m is not tok[1])
            and m.num_embeddings < T]


def _is_opaque(exc: Exception) -> bool:
    msg = str(exc).strip().lower()
    return not msg or isinstance(exc, IndexError) or any(k in msg for k in _OPAQUE)


def _over_length(ctx: Tier1Context) -> tuple[str, str]:
    """Call with max_seq_len + 1 tokens, on a CPU copy (an index error on a GPU is a
    device-side assert that breaks every later check). Returns (outcome, message)."""
    T = ctx.profile.max_seq_len + 1
    model = ctx.adapted if ctx.device.type == "cpu" else copy.deepcopy(ctx.adapted).cpu()
    ids = ctx.ids(1, T, offset=3).cpu()
    try:
        with torch.no_grad(), eval_mode(model):
            model(ids)
    except Exception as exc:  # noqa: BLE001 - the error itself is what is judged
        text = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        return ("opaque" if _is_opaque(exc) else "clear"), text
    return "accepted", ""


@tier1_check("output_shape", "Logits are (B, T, V) or (B, C) for every batch size and length",
             Needs(forward=False))
def output_shape(ctx: Tier1Context) -> CheckResult:
    title = "Logits are (B, T, V) or (B, C) for every batch size and length"
    p = ctx.profile
    rows, bad, width = [], [], []
    longest = max(_lengths(ctx))
    for B in (1, 3):
        for T in _lengths(ctx):
            if B > 1 and T == longest > ctx.seq_len:
                continue  # the full length once (B=1): a long context costs seconds per call
            try:
                with torch.no_grad(), eval_mode(ctx.adapted):
                    out = ctx.adapted(ctx.ids(B, T, offset=B * 1000 + T))
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
        advice = (f"Position table(s) {', '.join(short)} are shorter than max_seq_len "
                  f"{p.max_seq_len}: make them max_seq_len rows long, or lower max_seq_len in the "
                  "config." if short else
                  "Make forward return logits of shape (B, T, vocab_size) for every B and T up to "
                  "max_seq_len (or (B, num_classes) for a classifier); the calls above show "
                  "which sizes break.")
        return CheckResult(
            "output_shape", title, "fail",
            f"{len(bad)} of {len(rows)} calls failed; e.g. B={worst['B']}, T={worst['T']}: "
            f"expected {worst['expected']}, got {worst['got']}", metrics, advice)
    summary = (f"Shapes right for B in (1, 3) and T in {tuple(sorted({r['T'] for r in rows}))}"
               f"{f' (T={longest} at B=1)' if longest > ctx.seq_len else ''}.")
    if not p.max_seq_len:
        return CheckResult("output_shape", title, "pass",
                           summary + " max_seq_len unknown: the limit was not tested.", metrics)
    if p.max_seq_len > OUTPUT_SHAPE_MAX_T:
        return CheckResult("output_shape", title, "pass",
                           summary + f" max_seq_len {p.max_seq_len} is tested at "
                           f"{OUTPUT_SHAPE_MAX_T} only.", metrics)
    outcome, message = _over_length(ctx)
    metrics.update(over_length=outcome, over_length_error=message)
    if outcome == "opaque":
        return CheckResult(
            "output_shape", title, "warn",
            summary + f" But max_seq_len + 1 = {p.max_seq_len + 1} tokens gives an opaque error: "
            f"{message}", metrics,
            advice="Check the length at the top of forward: `if T > self.max_seq_len: raise "
                   "ValueError(f'sequence of {T} tokens; this model takes at most "
                   "{self.max_seq_len}')`. Without it a GPU reports a device-side assert and the "
                   "runtime must be restarted.")
    tail = (f" {p.max_seq_len + 1} tokens give a clear error." if outcome == "clear" else
            f" {p.max_seq_len + 1} tokens are accepted (no fixed-size position table).")
    return CheckResult("output_shape", title, "pass", summary + tail, metrics)


# -- causality ------------------------------------------------------------------------------


def _spread(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _changed_ids(ctx: Tier1Context, ids: torch.Tensor, where: torch.Tensor, offset: int
                 ) -> torch.Tensor:
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
            g = torch.autograd.grad((select(out, pick) * select(r, pick)).sum(), tap.leaf,
                                    retain_graph=True, allow_unused=True)[0]
            grads.append(None if g is None else as_bt(g, B, T))
    return grads


def locate_future_leak(ctx: Tier1Context, ids: torch.Tensor, cut: int) -> str | None:
    """The first module whose output at positions <= cut changes when later tokens change."""
    B, T = ids.shape
    later = torch.zeros_like(ids, dtype=torch.bool)
    later[:, cut + 1:] = True
    alt = _changed_ids(ctx, ids, later, offset=41)

    def region(o):
        bt = as_bt(o, B, T)
        return None if bt is None else bt[:, : cut + 1]

    names = block_candidates(ctx.model, ctx.profile.attention_modules)
    with torch.no_grad(), eval_mode(ctx.adapted):
        return first_divergent(ctx.model, lambda: ctx.adapted(ids), lambda: ctx.adapted(alt),
                               names, region)


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
        return ("Positions see later tokens, but no single module could be named. Apply a "
                "causal mask in every attention: scores.masked_fill(torch.triu(torch.ones(T, T, "
                "dtype=torch.bool, device=x.device), 1), float('-inf')) before the softmax.")
    m = ctx.model.get_submodule(name)
    canvas = (f" In the canvas, make node {name} causal (\"causal\": true in its config.json "
              "params) and export again." if is_builder_export(ctx.model) else "")
    if isinstance(m, nn.MultiheadAttention):
        return (f"`{name}` (nn.MultiheadAttention) is called without a causal mask, so position "
                "t attends to later tokens. Build the mask in forward and pass it: "
                "`mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)`, "
                f"then `self.{name}(x, x, x, attn_mask=mask, is_causal=True, "
                "key_padding_mask=...)` (is_causal=True alone is only a hint; the mask must be "
                f"passed).{canvas}")
    if name in ctx.profile.attention_modules:
        return (f"`{name}` ({type(m).__name__}) lets position t attend to later positions. Mask "
                "the scores before the softmax: `scores = scores.masked_fill(torch.triu("
                "torch.ones(T, T, dtype=torch.bool, device=scores.device), 1), float('-inf'))`, "
                f"or use F.scaled_dot_product_attention(q, k, v, is_causal=True).{canvas}")
    return (f"`{name}` ({type(m).__name__}) is the first module whose output at a position "
            "changes when later tokens change: it mixes positions without a causal mask "
            "(attention without a mask, a convolution padded on both sides, a mean over the "
            "sequence...). Make it use positions <= t only.")


def _not_causal(ctx: Tier1Context, title: str) -> CheckResult:
    """Other tasks skip, except a masked LM that the adapter only guessed from behaviour: it
    guessed so because positions see later tokens, which in a model meant to be a GPT is the
    very leak this check exists for, so that one warns instead."""
    p = ctx.profile
    if p.task != "masked_lm" or not p.task_source.startswith("behaviour"):
        why, todo = other_task(p, ("causal_lm",))
        return CheckResult("causality", title, "skip", why, advice=todo)
    where = locate_future_leak(ctx, ctx.ids(offset=11), 0)
    metrics = {"task_source": p.task_source, "first_leaking_module": where}
    return CheckResult(
        "causality", title, "warn",
        "Positions see later tokens" + (f" (first in `{where}`)" if where else "")
        + ", so the model was taken for a masked LM: neither config.json (\"task\") nor the "
        "class name says what it is.", metrics,
        "If the model is meant to generate text left to right (GPT-style), this is a "
        "future-token leak: run again with task='causal_lm' to have it checked and explained. "
        "If it is a bidirectional encoder (BERT-style), pass task='masked_lm' and this goes "
        "away.")


@tier1_check("causality", "No position sees later tokens", Needs(min_len=2, comparable=True))
def causality(ctx: Tier1Context) -> CheckResult:
    title = "No position sees later tokens"
    if ctx.task != "causal_lm":
        return _not_causal(ctx, title)
    ids = ctx.ids(offset=11)
    T = ids.shape[1]
    positions = _spread(T - 1, MAX_GRAD_POSITIONS)
    grads = _embedding_grads(ctx, ids, positions, lambda o, t: o[:, t], offset=12)
    metrics: dict = {"method": "gradient + resampling" if grads else "resampling"}
    leaks = []
    if grads:
        future = [0.0 if g is None else float(g[:, t + 1:].abs().max())
                  for t, g in zip(positions, grads)]
        leaks = [t for t, f in zip(positions, future) if f > 0]
        metrics.update(max_future_gradient=max(future), leaking_positions=len(leaks),
                       positions_tested=len(positions))
    diffs = {}
    with torch.no_grad(), eval_mode(ctx.adapted):
        base = ctx.adapted(ids)
        for cut in sorted({0, T // 2 - 1, T - 2} - {-1}):
            later = torch.zeros_like(ids, dtype=torch.bool)
            later[:, cut + 1:] = True
            alt = ctx.adapted(_changed_ids(ctx, ids, later, offset=20 + cut))
            diffs[cut] = changed(base[:, : cut + 1], alt[:, : cut + 1])
    metrics["resample_change"] = {str(c): d for c, d in diffs.items()}
    moved = [c for c, d in diffs.items() if d > DIFF_RTOL]
    if not leaks and not moved:
        how = ("the gradient of every tested position's logits with respect to later token "
               "embeddings is exactly 0, and " if grads else "")
        return CheckResult("causality", title, "pass",
                           f"No leak: {how}resampling later tokens leaves earlier logits "
                           "unchanged.", metrics)
    cut = min(leaks + moved)
    where = locate_future_leak(ctx, ids, cut)
    metrics["first_leaking_module"] = where
    first = (f"logits at position {cut} depend on later tokens" +
             (f"; first leaking module: `{where}`" if where else ""))
    return CheckResult("causality", title, "fail",
                       f"Future-token leak: {first} ({len(leaks)} of {len(positions)} positions "
                       "by gradient).", metrics, causal_advice(ctx, where))


# -- batch_independence --------------------------------------------------------------------


def _batch_advice(ctx: Tier1Context, name: str | None) -> str:
    if name is not None:
        m = ctx.model.get_submodule(name)
        if isinstance(m, nn.MultiheadAttention) and not m.batch_first:
            return (f"`{name}` is an nn.MultiheadAttention built without batch_first=True, so it "
                    "reads your (B, T, D) input as (T, B, D) and attends across the batch. "
                    f"Construct it with `nn.MultiheadAttention(..., batch_first=True)` (or "
                    "transpose to (T, B, D) around the call).")
        return (f"`{name}` ({type(m).__name__}) is the first module whose output for one row "
                "changes when another row changes. Look for reductions over dim 0, a "
                "view/reshape that swaps batch and time (use transpose), or BatchNorm.")
    return ("Some row's output depends on another row. Look for reductions over dim 0, a "
            "view/reshape that swaps batch and time (use transpose), or attention built "
            "without batch_first=True.")


@tier1_check("batch_independence", "Rows of a batch never mix", Needs(comparable=True))
def batch_independence(ctx: Tier1Context) -> CheckResult:
    title = "Rows of a batch never mix"
    if ctx.batch_size < 2:
        return CheckResult("batch_independence", title, "skip",
                           "Needs a batch of at least 2 rows; batch_size is 1.",
                           advice="Pass batch_size=2 or more to run_tier1.")
    ids = ctx.ids(offset=13)
    B, T = ids.shape
    rows = _spread(B, MAX_GRAD_ROWS)
    grads = _embedding_grads(ctx, ids, rows, lambda o, i: o[i], offset=14)
    metrics: dict = {"method": "gradient + perturbation" if grads else "perturbation"}
    cross = 0.0
    if grads:
        for i, g in zip(rows, grads):
            if g is not None and B > 1:
                others = torch.cat([g[:i], g[i + 1:]])
                cross = max(cross, float(others.abs().max()))
        metrics["max_cross_row_gradient"] = cross
    row0 = torch.zeros_like(ids, dtype=torch.bool)
    row0[0] = True
    alt = _changed_ids(ctx, ids, row0, offset=15)
    with torch.no_grad(), eval_mode(ctx.adapted):
        moved = changed(ctx.adapted(ids)[1:], ctx.adapted(alt)[1:])
    metrics["other_rows_change"] = moved
    if cross == 0 and moved <= DIFF_RTOL:
        return CheckResult("batch_independence", title, "pass",
                           f"Rows are independent (B={B}): changing one row leaves the others "
                           "exactly as they were.", metrics)

    def region(o):
        bt = as_bt(o, B, T)
        return None if bt is None else bt[1:]

    with torch.no_grad(), eval_mode(ctx.adapted):
        where = first_divergent(ctx.model, lambda: ctx.adapted(ids), lambda: ctx.adapted(alt),
                                block_candidates(ctx.model, ctx.profile.attention_modules),
                                region)
    metrics["first_mixing_module"] = where
    return CheckResult("batch_independence", title, "fail",
                       "Rows mix: the output of one row depends on other rows"
                       + (f"; first mixing module: `{where}`." if where else "."),
                       metrics, _batch_advice(ctx, where))


# -- padding_invariance --------------------------------------------------------------------


def _name_convention(name: str | None) -> str | None:
    if name in _KEEP_ONE_NAMES:
        return "keep_one"
    if name in _PAD_TRUE_NAMES:
        return "pad_true"
    return None


@tier1_check("padding_invariance", "Real positions ignore what is in pad positions",
             Needs(mask=True, min_len=2, comparable=True))
def padding_invariance(ctx: Tier1Context) -> CheckResult:
    title = "Real positions ignore what is in pad positions"
    p = ctx.profile
    ids = ctx.ids(offset=16)
    B, T = ids.shape
    n_pad = max(1, T // 3)
    mask = torch.ones_like(ids)
    mask[0, :n_pad] = 0  # row 0 left-padded: a causal LM's real tokens come after the pads
    if B > 1:
        mask[1, T - n_pad:] = 0  # row 1 right-padded
    alt = _changed_ids(ctx, ids, mask == 0, offset=18)
    real = mask.bool()

    def at_real(out: torch.Tensor) -> torch.Tensor:
        return out if p.task == "classification" else out[real]

    # With gradients on, as in training (nn.MultiheadAttention then takes its regular path);
    # then under no_grad, as in inference, where its fast path treats masks differently.
    with eval_mode(ctx.adapted), torch.enable_grad():
        a, b = ctx.adapted(ids, mask).detach(), ctx.adapted(alt, mask).detach()
        unmasked = ctx.adapted(ids).detach()
    with eval_mode(ctx.adapted), torch.no_grad():
        inference = ctx.adapted(ids, mask)
    drift = changed(at_real(a), at_real(b))
    finite = bool(torch.isfinite(at_real(a)).all())
    finite_inference = bool(torch.isfinite(at_real(inference)).all())
    expected = _name_convention(p.mask_name)
    metrics = {"pad_positions": int((mask == 0).sum()), "real_position_change": drift,
               "mask": p.mask_name or "attention_mask (graph executor)",
               "convention": p.mask_convention, "verified": p.mask_verified,
               "convention_by_name": expected, "finite_under_no_grad": finite_inference}
    if not finite:
        return CheckResult("padding_invariance", title, "fail",
                           "Real positions become NaN/Inf when a mask is given.", metrics,
                           "A row of attention scores is all -inf somewhere (e.g. a causal mask "
                           "and a padding mask together block every key of a pad query). Use a "
                           "large negative number instead of -inf, or torch.nan_to_num after "
                           "the softmax.")
    if expected and p.mask_verified and p.mask_convention != expected:
        return CheckResult(
            "padding_invariance", title, "fail",
            f"The mask is inverted: `{p.mask_name}` should mean "
            f"{'1 = real token' if expected == 'keep_one' else 'True = pad'}, but the model "
            f"only ignores pads when given the opposite.", metrics,
            f"Tokenizers send `{p.mask_name}` with 1 for real tokens and 0 for pads; the model "
            "treats it the other way round. Fix the conversion: `key_padding_mask = "
            "attention_mask == 0` (not `== 1`)." if expected == "keep_one" else
            f"By PyTorch's convention `{p.mask_name}` is True at pads (the keys to ignore); the "
            "model treats True as real tokens. Pass it to the attention as it is (drop the `~` "
            "or `== 0`), or rename the parameter attention_mask if you mean 1 = real token.")
    if drift > DIFF_RTOL:
        ignored = changed(a, unmasked) <= DIFF_RTOL
        why = ("the model's output does not depend on the mask at all" if ignored else
               "the mask does not reach every place positions are mixed")
        return CheckResult(
            "padding_invariance", title, "fail",
            f"Real positions change (by {drift:.3g}) when only pad content changes: {why}.",
            metrics,
            f"Pass `{p.mask_name or 'attention_mask'}` on to every attention "
            "(e.g. `key_padding_mask=attention_mask == 0` for nn.MultiheadAttention) and keep "
            "pads out of anything that pools over positions.")
    if not finite_inference:
        return CheckResult(
            "padding_invariance", title, "warn",
            "Padding is ignored correctly in training, but under torch.no_grad (inference) "
            "real positions of the left-padded row become NaN.", metrics,
            "nn.MultiheadAttention's inference fast path returns NaN for a query whose keys are "
            "all masked (a left pad under a causal mask), and the NaN then spreads. Pass float "
            "masks (0 / a large negative number such as torch.finfo(x.dtype).min / 2) instead "
            "of boolean ones, or let pad queries attend to themselves.")
    return CheckResult("padding_invariance", title, "pass",
                       f"Changing the {metrics['pad_positions']} pad tokens (left and right "
                       "padding) leaves every real position unchanged.", metrics)


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


@tier1_check("determinism", "Eval mode is deterministic; train mode applies dropout")
def determinism(ctx: Tier1Context) -> CheckResult:
    title = "Eval mode is deterministic; train mode applies dropout"
    ids = ctx.ids(offset=19)
    with torch.no_grad(), eval_mode(ctx.adapted):
        first, second = ctx.adapted(ids), ctx.adapted(ids)
    same_eval = torch.allclose(first, second, rtol=0, atol=0, equal_nan=True)
    drops = dropout_sources(ctx.model)
    metrics: dict = {"eval_max_change": changed(first, second), "dropout": drops[:20]}
    if not same_eval:
        names = [n for n, _ in ctx.model.named_modules() if n]
        with torch.no_grad(), eval_mode(ctx.adapted):
            where = first_divergent(ctx.model, lambda: ctx.adapted(ids), lambda: ctx.adapted(ids),
                                    names, lambda o: o)
        metrics["first_random_module"] = where
        return CheckResult(
            "determinism", title, "fail",
            "Two eval-mode calls on the same input give different outputs"
            + (f"; first differing module: `{where}`." if where else "."), metrics,
            "Something random runs in eval mode"
            + (f" in or just before `{where}`" if where else "")
            + ": F.dropout(x, p) defaults to training=True, so write "
            "F.dropout(x, p, training=self.training) (or use an nn.Dropout module); keep "
            "torch.rand/randn out of forward at inference.")
    trainee = copy.deepcopy(ctx.adapted).train()
    with torch.no_grad():
        differs = not torch.equal(trainee(ids), trainee(ids))
    metrics["train_differs"] = differs
    if drops and not differs:
        return CheckResult(
            "determinism", title, "warn",
            f"Dropout is configured ({', '.join(drops[:3])}) but two train-mode calls give "
            "identical outputs: dropout never runs.", metrics,
            "Call the dropout modules in forward, or pass training=self.training to F.dropout.")
    tail = ("train mode differs between calls (dropout active)." if differs else
            "no dropout, so train mode is deterministic too.")
    return CheckResult("determinism", title, "pass",
                       f"Eval mode gives identical outputs on repeated calls; {tail}", metrics)
