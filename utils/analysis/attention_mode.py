"""The `TorchFunctionMode` that sees every torch call of one forward and rebuilds the attention
weights each attention call used (the how is told in `utils.analysis.attention`), with the
pieces it is made of: finding operands, reshaping heads, zeroing heads, verifying a map."""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from utils.analysis.attention_map import AttentionMap

# An additive bias at or below this is a mask, not a score: -1e4 is the mildest mask constant
# in common use (the original BERT); no trained model's q.k / sqrt(d) gets near it.
MASKED_BELOW = -1e4
# A tagged tensor whose rows sum to 1 within this (and are non-negative) is a probability
# distribution even without a softmax call (a hand-written exp / sum): rounding each weight
# to bfloat16 (2^-9 of itself) leaves a row off by under 4e-3.
ROW_SUM_TOL = 1e-2

_MHA_PARAMS = tuple(inspect.signature(F.multi_head_attention_forward).parameters)
_SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
_SCORE_ONLY = {torch.baddbmm, torch.Tensor.baddbmm}  # beta * M + q @ k: scores, never probs @ v
_CONTRACTIONS = _SCORE_ONLY | {
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.bmm,
    torch.Tensor.bmm,
    torch.einsum,
}


# -- the mode ----------------------------------------------------------------------------------


@dataclass
class _Scores:
    """A tensor derived from a contraction of two activations; `logits` is the softmax input
    when the chain went through one (for the masked-entry check), `normalised` whether it did."""

    logits: torch.Tensor | None = None
    normalised: bool = False


class AttentionMode(TorchFunctionMode):
    """Sees every torch call of the forward; records attention maps, optionally ablating."""

    def __init__(self, batch: int, ablate: dict[int, set[int]], measure: bool = True):
        super().__init__()
        self.batch = batch
        self.ablate = ablate
        self.measure = measure  # False: only number the calls and zero the asked heads
        self.calls = 0
        self.stack: list[str] = []
        self.maps: list[AttentionMap] = []
        self._tags: dict[int, tuple[weakref.ref, _Scores]] = {}
        self._causal_masks: dict[tuple[int, int, str], torch.Tensor] = {}
        self.ablated: set[int] = set()  # layers whose heads were zeroed as asked
        self.unablated: list[str] = []  # modules whose output layout hides the heads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward:
            return self._mha(args, kwargs)
        if func is F.scaled_dot_product_attention:
            return self._sdpa(args, kwargs)
        out = func(*args, **kwargs)
        if func in _CONTRACTIONS:
            return self._contraction(func, args, out)
        if self._tags and isinstance(out, torch.Tensor):
            self._propagate(func, args, kwargs, out)
        return out

    # -- bookkeeping --

    @property
    def _where(self) -> str:
        return self.stack[-1] if self.stack else "(functional)"

    def _begin(self) -> tuple[int, set[int]]:
        """Number this attention call (execution order) and say which heads to zero in it."""
        layer = self.calls
        self.calls += 1
        return layer, self.ablate.get(layer, set())

    def _tag(self, t: torch.Tensor, scores: _Scores) -> None:
        key = id(t)
        self._tags[key] = (weakref.ref(t, lambda _r, k=key: self._tags.pop(k, None)), scores)

    def _tag_of(self, t: Any) -> _Scores | None:
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._tags.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def _record(self, layer: int, method: str, weights: torch.Tensor, errors: dict[str, float], note: str = "") -> None:
        finite = [e for e in errors.values() if e is not None]
        self.maps.append(
            AttentionMap(
                module=self._where,
                layer=layer,
                weights=weights.detach().to("cpu", torch.float32).contiguous(),
                method=method,
                max_error=max(finite) if finite else None,
                errors=errors,
                note=note,
            )
        )

    def _causal(self, L: int, S: int, device: torch.device) -> torch.Tensor:
        """(L, S) True above the diagonal, as SDPA's is_causal masks (top-left aligned)."""
        key = (L, S, str(device))
        if key not in self._causal_masks:
            ones = torch.ones(L, S, dtype=torch.bool, device=device)
            self._causal_masks[key] = ~ones.tril()
        return self._causal_masks[key]

    def _ablated_output(self, layer: int, out: torch.Tensor, zeroed: torch.Tensor | None) -> torch.Tensor:
        """The output with the asked heads zeroed, or, where its layout hides the heads, the
        output as it was and a note (run_with_capture then refuses to return a result)."""
        if zeroed is None:
            self.unablated.append(self._where)
            return out
        self.ablated.add(layer)
        return zeroed

    # -- hand-written attention --

    def _propagate(self, func, args, kwargs, out: torch.Tensor) -> None:
        """A shape-keeping op on a tagged tensor gives a tagged tensor; a softmax marks it
        normalised and keeps its input as the logits. Any axis counts: a softmax over the
        wrong one is still the model's attention, and the row check then shows the bug."""
        for a in _tensors(args, kwargs):
            tag = self._tag_of(a)
            if tag is None:
                continue
            if out.numel() == a.numel() and out.dim() >= 2 and out.shape[-1] == a.shape[-1]:
                if func in _SOFTMAX:
                    tag = _Scores(logits=a, normalised=True)
                if out is not a:
                    self._tag(out, tag)
            return

    def _contraction(self, func, args, out: Any) -> Any:
        operands = _operands(func, args)
        if operands is None or not isinstance(out, torch.Tensor):
            return out
        a, b = operands
        tag = self._tag_of(a)
        if tag is not None and func not in _SCORE_ONLY and (tag.normalised or _row_stochastic(a)):
            return self._confirmed(func, args, a, b, out, tag)
        if not (_is_weight(a) or _is_weight(b)) and a.dim() >= 2 and b.dim() >= 2 and out.dim() >= 2:
            self._tag(out, _Scores())
        return out

    def _confirmed(
        self, func, args, probs: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tag: _Scores
    ) -> torch.Tensor:
        """`probs @ v` of a tagged, normalised tensor: a hand-written attention call."""
        w = _to_bhts(probs, self.batch)
        if w is None:
            return out
        layer, heads = self._begin()
        if self.measure:
            masked = None
            if tag.logits is not None and tag.logits.shape == probs.shape:
                masked = _to_bhts(tag.logits <= MASKED_BELOW, self.batch)
            rebuilt = (
                torch.einsum(args[0], probs.float(), v.float())
                if func is torch.einsum
                else func(probs.float(), v.float())
            )
            self._record(layer, "softmax", w, _verify(w, masked, rebuilt, out.float()))
        if not heads:
            return out
        zeroed = _zero_heads(out, self.batch, w.shape[1], heads) if out.shape[:-1] == probs.shape[:-1] else None
        return self._ablated_output(layer, out, zeroed)

    # -- F.scaled_dot_product_attention --

    def _sdpa(self, args, kwargs) -> torch.Tensor:
        out = F.scaled_dot_product_attention(*args, **kwargs)
        layer, heads = self._begin()
        if self.measure:
            self._measure_sdpa(layer, dict(zip(_SDPA_PARAMS, args)) | kwargs, out)
        if not heads:
            return out
        n_heads = out.shape[-3] if out.dim() >= 4 else out.shape[0] // self.batch
        return self._ablated_output(layer, out, _zero_heads(out, self.batch, n_heads, heads))

    def _measure_sdpa(self, layer: int, p: dict[str, Any], out: torch.Tensor) -> None:
        """Recompute SDPA's weights as it computes them, verify and record them."""
        q, k, v = p["query"], p["key"], p["value"]
        k, v = _repeat_kv(q, k), _repeat_kv(q, v)
        scale = p.get("scale") or 1.0 / math.sqrt(q.shape[-1])
        scores = (q.float() @ k.float().transpose(-2, -1)) * scale  # (..., L, S)
        L, S = scores.shape[-2:]
        mask = p.get("attn_mask")
        hard = self._causal(L, S, q.device) if p.get("is_causal") else None  # (L, S)
        masked = hard
        if mask is not None and mask.dtype == torch.bool:
            hard = masked = ~mask if hard is None else hard | ~mask
        elif mask is not None:
            scores = scores + mask.float()
            soft = mask <= MASKED_BELOW
            masked = soft if masked is None else masked | soft
        if hard is not None:
            scores.masked_fill_(hard, -math.inf)
        probs = torch.softmax(scores, dim=-1)
        if masked is not None and bool(masked.all(-1).any()):
            probs = probs.nan_to_num(0.0)  # a row with every key masked attends nowhere
        note = ""
        if p.get("dropout_p", 0.0):
            note = (
                f"dropout_p={p['dropout_p']} in eval mode: the output is random, so the "
                "weights are the distribution before dropout and the output is not compared"
            )
        if probs.dim() == 4 and probs.shape[0] == self.batch:
            w = probs  # masks broadcast against it as they are
        else:
            w = _to_bhts(probs, self.batch)
            masked = None if masked is None else _to_bhts(masked.expand(probs.shape), self.batch)
        if w is not None:
            errors = _verify(w, masked, None if note else probs @ v.float(), out.float())
            self._record(layer, "sdpa", w, errors, note)

    # -- nn.MultiheadAttention --

    def _mha(self, args, kwargs) -> Any:
        out = F.multi_head_attention_forward(*args, **kwargs)
        layer, heads = self._begin()
        if not (self.measure or heads):
            return out
        p = dict(zip(_MHA_PARAMS, args)) | kwargs
        batched = p["query"].dim() == 3
        w, heads_out, masked = _mha_weights(p, batched)  # (N, H, L, S), (N, H, L, d), mask
        actual = out[0] if batched else out[0].unsqueeze(1)  # (L, N, E)
        if self.measure:
            note = ""
            if p.get("training") and p.get("dropout_p", 0.0):
                note = "dropout in training mode: the output is random and is not compared"
            rebuilt = None if note else _mha_project(p, heads_out)
            errors = _verify(w.float(), masked, rebuilt, actual.float(), projected=True)
            self._record(layer, "mha", w, errors, note)
        if not heads:
            return out
        only = torch.zeros_like(heads_out)  # what the zeroed heads add, taken away exactly
        only[:, sorted(heads)] = heads_out[:, sorted(heads)]
        ablated = (actual.float() - _mha_project(p, only, bias=False)).to(actual.dtype)
        self.ablated.add(layer)
        return (ablated if batched else ablated.squeeze(1)), out[1]


# -- pieces of the mode ------------------------------------------------------------------------


def _tensors(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Iterator[torch.Tensor]:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (x for x in a if isinstance(x, torch.Tensor))


def _operands(func, args: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (left, right) operands of a two-tensor contraction; for einsum only when the left
    operand's last index is the one summed over (the `probs @ v` shape)."""
    if func in _SCORE_ONLY:
        return (args[1], args[2]) if len(args) >= 3 else None
    if func is torch.einsum:
        ops = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        if not isinstance(args[0], str) or len(ops) != 2 or "->" not in args[0]:
            return None
        inputs, output = args[0].replace(" ", "").split("->")
        left = inputs.split(",")[0]
        if not left or left[-1] in output:
            return None
        a, b = ops
    else:
        if len(args) < 2:
            return None
        a, b = args[0], args[1]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_floating_point():
        return a, b
    return None


def _is_weight(t: torch.Tensor) -> bool:
    """A parameter or a view of one (`W.t()`): `x @ W` is a projection, not attention."""
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def _row_stochastic(t: torch.Tensor) -> bool:
    if t.dim() < 2 or t.shape[-1] < 1 or not t.is_floating_point():
        return False
    x = t.float()
    return bool((x >= 0).all() and ((x.sum(-1) - 1).abs() <= ROW_SUM_TOL).all())


def _to_bhts(t: torch.Tensor, batch: int) -> torch.Tensor | None:
    """(B, H, T, S) view of weights whose leading axes are batch and heads in any grouping:
    (B, H, T, S), (B * H, T, S), (T, S) for one row, (B, G, H, T, S)."""
    if t.dim() < 2 or t.numel() % (batch * t.shape[-2] * t.shape[-1]):
        return None
    if t.dim() >= 3 and t.shape[0] not in (batch,) and t.shape[0] % batch:
        return None
    return t.reshape(batch, -1, t.shape[-2], t.shape[-1])


def _zero_heads(out: torch.Tensor, batch: int, n_heads: int, heads: set[int]) -> torch.Tensor | None:
    """A copy of per-head outputs (B, H, T, d) or (B * H, T, d) with `heads` set to 0."""
    if out.dim() >= 4 and out.shape[-3] == n_heads:
        out = out.clone()
        out[..., sorted(heads), :, :] = 0
        return out
    if out.dim() == 3 and out.shape[0] == batch * n_heads:
        out = out.contiguous().clone()
        out.view(batch, n_heads, -1)[:, sorted(heads)] = 0
        return out
    return None


def _repeat_kv(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention: each key/value head serves H_q / H_kv query heads."""
    if q.dim() < 3 or kv.dim() < 3 or q.shape[-3] == kv.shape[-3]:
        return kv
    return kv.repeat_interleave(q.shape[-3] // kv.shape[-3], dim=-3)


def _verify(
    w: torch.Tensor,
    masked: torch.Tensor | None,
    rebuilt: torch.Tensor | None,
    actual: torch.Tensor,
    projected: bool = False,
) -> dict[str, float]:
    """Rows sum to 1 (rows with a key left), masked entries are 0, and weights x V gives the
    output (relative to its largest value), each as the largest error seen."""
    w = w.float()
    errors: dict[str, float] = {}
    row_err = (w.sum(-1, keepdim=True) - 1).abs()
    if masked is not None and bool(masked.any()):
        full = masked.all(-1, keepdim=True)  # a row with every key masked has no right answer
        errors["masked"] = float(w.masked_fill(~(masked & ~full), 0).abs().amax())
        row_err = row_err.masked_fill(full, 0)
    elif masked is not None:
        errors["masked"] = 0.0
    errors["row_sum"] = float(row_err.amax()) if row_err.numel() else 0.0
    if rebuilt is not None:
        diff = (rebuilt - actual).abs()
        ok = torch.isfinite(diff)
        if not bool(ok.all()):
            diff, actual = diff[ok], actual[ok]
        scale = float(actual.abs().amax()) if actual.numel() else 0.0
        worst = float(diff.amax()) if diff.numel() else 0.0
        errors["output_projected" if projected else "output"] = worst / max(scale, 1e-6)
    return errors


def _mha_weights(p: Mapping[str, Any], batched: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head weights (N, H, L, S), outputs weights x V (N, H, L, d) and where the masks
    forbid a key (broadcastable to the weights) of one MHA call.

    The common layout (no bias_k/bias_v, add_zero_attn or static keys/values) is rebuilt
    from the module's own projections, once: each of q, k and v is projected a single time.
    Any of those extras goes through a second `F.multi_head_attention_forward` asking for
    per-head weights, which builds them exactly as the real call does."""
    extras = ("bias_k", "bias_v", "static_k", "static_v")
    if p.get("add_zero_attn") or any(p.get(name) is not None for name in extras):
        side = dict(p) | {"need_weights": True, "average_attn_weights": False}
        _, weights = F.multi_head_attention_forward(**side)  # (N, H, L, S) or (H, L, S)
        w = weights if batched else weights.unsqueeze(0)
        return w, _mha_heads(p, w, batched), _mha_masked(p, w)
    q, k, v = _mha_qkv(p, batched)  # (N, H, L or S, d)
    scores = (q.float() * q.shape[-1] ** -0.5) @ k.float().transpose(-2, -1)  # (N, H, L, S)
    additive = _mha_additive_mask(p, scores)  # broadcastable to (N, H, L, S)
    w = torch.softmax(scores + additive, dim=-1)
    masked = additive <= MASKED_BELOW
    masked = masked.expand(w.shape[0], masked.shape[1] if masked.dim() == 4 else 1, *w.shape[2:])  # (N, 1 or H, L, S)
    return w, w @ v.float(), masked


def _mha_qkv(p: Mapping[str, Any], batched: bool) -> tuple[torch.Tensor, ...]:
    """q, k, v (N, H, L or S, d) projected as F.multi_head_attention_forward projects them
    (one packed projection for self-attention, or the separate weights)."""
    E, H = p["embed_dim_to_check"], p["num_heads"]
    inputs = [p[name] if batched else p[name].unsqueeze(1) for name in ("query", "key", "value")]  # (L, N, E)
    bias = p.get("in_proj_bias")
    biases = [None] * 3 if bias is None else list(bias.chunk(3))
    if p.get("use_separate_proj_weight"):
        weights = [p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]]
    else:
        weights = list(p["in_proj_weight"].chunk(3))
    if not p.get("use_separate_proj_weight") and p["query"] is p["key"] is p["value"]:
        projected = F.linear(inputs[0], p["in_proj_weight"], bias).chunk(3, dim=-1)  # 3 x (L, N, E)
    else:
        projected = [F.linear(x, wt, b) for x, wt, b in zip(inputs, weights, biases)]
    N, d = inputs[0].shape[1], E // H
    return tuple(t.reshape(t.shape[0], N, H, d).permute(1, 2, 0, 3) for t in projected)


def _mha_additive_mask(p: Mapping[str, Any], scores: torch.Tensor) -> torch.Tensor:
    """MHA's attn_mask and key_padding_mask as one additive float mask broadcastable to the
    scores (N, H, L, S): boolean True (forbidden) becomes -inf, float masks add as given."""
    N, H, L, S = scores.shape
    total = scores.new_zeros(())
    mask, kpm = p.get("attn_mask"), p.get("key_padding_mask")
    if mask is not None:
        m = _as_additive(mask, scores.dtype)
        total = total + (m.reshape(N, H, L, S) if m.dim() == 3 else m.reshape(1, 1, L, S))
    if kpm is not None:
        total = total + _as_additive(kpm, scores.dtype).reshape(N, 1, 1, S)
    return total


def _as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)
    return mask.to(dtype)


def _mha_heads(p: Mapping[str, Any], w: torch.Tensor, batched: bool) -> torch.Tensor:
    """Per-head outputs weights x V (N, H, L, d), V rebuilt as F.multi_head_attention_forward
    builds it (separate or packed projection, bias_v, static_v, add_zero_attn)."""
    E, H = p["embed_dim_to_check"], p["num_heads"]
    d = E // H
    value = p["value"] if batched else p["value"].unsqueeze(1)  # (S, N, E)
    N = value.shape[1]
    bias = p.get("in_proj_bias")
    bv = bias[2 * E :] if bias is not None else None
    if p.get("static_v") is not None:
        vh = p["static_v"]  # (N * H, S, d)
    else:
        wv = p["v_proj_weight"] if p.get("use_separate_proj_weight") else p["in_proj_weight"][2 * E :]
        v = F.linear(value, wv, bv)  # (S, N, E)
        if p.get("bias_v") is not None:
            v = torch.cat([v, p["bias_v"].repeat(1, N, 1)])
        vh = v.reshape(v.shape[0], N * H, d).transpose(0, 1)  # (N * H, S, d)
    if p.get("add_zero_attn"):
        vh = torch.cat([vh, vh.new_zeros(N * H, 1, d)], dim=1)
    vh = vh.reshape(N, H, vh.shape[1], d)
    return w.float() @ vh.float()  # (N, H, L, d)


def _mha_project(p: Mapping[str, Any], heads: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """(N, H, L, d) per-head outputs -> (L, N, E) through the output projection."""
    N, H, L, d = heads.shape
    concat = heads.permute(2, 0, 1, 3).reshape(L, N, H * d)
    bias = p.get("out_proj_bias") if bias else None
    return F.linear(concat, p["out_proj_weight"].float(), None if bias is None else bias.float())


def _mha_masked(p: Mapping[str, Any], w: torch.Tensor) -> torch.Tensor:
    """(N, H, L, S) True where MHA's masks forbid a key; extra key columns (bias_k,
    add_zero_attn) are never masked."""
    N, H, L, S = w.shape
    masked = torch.zeros(N, H, L, S, dtype=torch.bool, device=w.device)
    mask, kpm = p.get("attn_mask"), p.get("key_padding_mask")
    if mask is not None:
        m = mask if mask.dtype == torch.bool else mask <= MASKED_BELOW
        m = m.reshape(N, H, L, -1) if m.dim() == 3 else m.reshape(1, 1, L, -1)
        masked[..., : m.shape[-1]] |= m
    if kpm is not None:
        k = kpm if kpm.dtype == torch.bool else kpm <= MASKED_BELOW
        k = k.reshape(N, 1, 1, -1)
        masked[..., : k.shape[-1]] |= k
    return masked
