"""Attention capture for any model the adapter accepts, verified, never guessed.

    maps = capture_attention(adapted, input_ids)      # [AttentionMap], one per attention call
    maps[0].weights                                    # (B, H, T, S) float32 on CPU

One forward runs under a `TorchFunctionMode` that sees every torch call the model makes:

- `nn.MultiheadAttention` (alone, inside `nn.TransformerEncoderLayer`, seq-first or not)
  reaches `F.multi_head_attention_forward`; the real call runs as the model asked, and the
  per-head weights are rebuilt once from the module's own q/k/v projections (a layout with
  bias_k, add_zero_attn or static keys takes a second call asking for per-head weights).
  The fused fast path is off for the capture (an active mode already disables it; the global
  switch is turned off too and put back).
- `F.scaled_dot_product_attention` (nanoGPT, Hugging Face SDPA, the designer's exports) runs
  as asked; the weights are recomputed from q, k, the mask, `is_causal`, `scale` and grouped
  query heads.
- hand-written `softmax(q @ k^T / sqrt(d)) @ v` (and Hugging Face eager attention, which is
  the same thing): a contraction of two activations is tagged as scores, the tag follows
  every op that keeps the tensor's shape (scaling, masking, softmax, dropout, casts), and a
  tagged tensor that was normalised (a softmax, or rows that sum to 1) and is then contracted
  with another tensor is the attention: its weights are exactly what the model used.

Each map is verified: rows sum to 1, masked entries are 0, and weights x V reproduce the
attention's output. An attention module inside which nothing could be seen (an external
fused kernel, a compiled graph) gets a map with `method="unavailable"` and no weights.
The model's outputs, weights, train/eval flags, hooks and RNG state are left as they were.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from utils.adapters import AdaptedModel, adapt
from utils.analysis.attention_map import AttentionMap
from utils.analysis.attention_mode import AttentionMode
from utils.errors import ToolkitError
from utils.loading import LoadedModel

__all__ = ["AttentionMap", "CaptureError", "capture_attention", "run_with_capture", "run_with_heads_ablated"]

UNAVAILABLE_NOTE = (
    "no attention weights were seen inside this module: it computes attention with a kernel "
    "capture cannot read (an external fused kernel or a compiled graph), so none are reported"
)


class CaptureError(ToolkitError, ValueError):
    """Capture was asked for something this model's attention does not allow."""


def capture_attention(
    adapted: AdaptedModel | nn.Module | LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> list[AttentionMap]:
    """Every attention map of one eval-mode forward on `input_ids` (B, T) (`attention_mask`
    (B, T), 1 = keep), in execution order, followed by an unavailable map for each attention
    module nothing was seen in. A plain module or a loaded model is adapted first."""
    maps, _ = run_with_capture(adapted, input_ids, attention_mask)
    return maps


def run_with_capture(
    adapted: AdaptedModel | nn.Module | LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    ablate: Mapping[int, Sequence[int]] | None = None,
    measure: bool = True,
) -> tuple[list[AttentionMap], torch.Tensor]:
    """The maps and the logits of one forward; `ablate` ({layer: [heads]}) zeroes those
    heads' outputs (before the output projection) in the calls numbered `layer`;
    `measure=False` skips recomputing and verifying the maps (then none are returned)."""
    adapted = _adapted(adapted)
    ids, mask = _checked_inputs(adapted, input_ids, attention_mask)
    ablate = {int(k): set(v) for k, v in (ablate or {}).items()}
    mode = AttentionMode(int(ids.shape[0]), ablate, measure)
    with _untouched(adapted.model), _module_stack(adapted.model, mode.stack), mode:
        logits = adapted(ids, mask)
    missed = sorted(set(mode.ablate) - mode.ablated)
    if missed:
        raise CaptureError(
            f"could not zero the heads of attention call(s) {missed} (of {mode.calls} "
            f"seen): {', '.join(mode.unablated) or 'no such call'} keeps heads in an output "
            "layout capture cannot split; ablation needs (B, H, T, d)-shaped head outputs"
        )
    if not measure:
        return [], logits
    return mode.maps + _unavailable(adapted, mode.maps), logits


def run_with_heads_ablated(
    adapted: AdaptedModel | nn.Module | LoadedModel,
    input_ids: torch.Tensor,
    heads: Mapping[int, Sequence[int]],
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (eval mode) with the given heads' outputs zeroed: {layer: [head, ...]}, layers
    numbered as `capture_attention` numbers them."""
    return run_with_capture(adapted, input_ids, attention_mask, ablate=heads, measure=False)[1]


def _adapted(obj: Any) -> AdaptedModel:
    """An AdaptedModel as it is; an nn.Module or a loaded model (`.model`, `.config`) adapted."""
    if isinstance(obj, AdaptedModel):
        return obj
    if not isinstance(obj, nn.Module) and isinstance(getattr(obj, "model", None), nn.Module):
        return adapt(obj.model, getattr(obj, "config", None))
    return adapt(obj)


# -- keeping the model as it was --------------------------------------------------------------


def _checked_inputs(
    adapted: AdaptedModel, input_ids: Any, attention_mask: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise CaptureError(f"capture_attention(input_ids=...): give a (B, T) tensor of token ids; got {got}")
    if attention_mask is not None and (
        not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape
    ):
        got = getattr(attention_mask, "shape", type(attention_mask))
        raise CaptureError(
            f"capture_attention(attention_mask=...): give a (B, T) tensor shaped "
            f"like input_ids {tuple(input_ids.shape)} (1 = keep); got {got}"
        )
    device = next((t.device for t in adapted.model.parameters()), input_ids.device)
    mask = None if attention_mask is None else attention_mask.to(device)
    return input_ids.to(device), mask


@contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Eval mode, no autograd, no fused MHA fast path and a forked RNG for the capture; every
    module's train/eval flag and the fast-path switch are put back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    devices = [d.index or 0 for d in {p.device for p in model.parameters()} if d.type == "cuda"]
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m, mode in modes:
            m.training = mode


@contextmanager
def _module_stack(model: nn.Module, stack: list[str]) -> Iterator[None]:
    """Keep `stack` holding the qualified names of the model's modules running right now, so
    each attention call is attributed to the innermost one. Two global hooks (removed
    afterwards) instead of two per module: registering hundreds costs more than the forward."""
    root = type(model).__name__
    names = {id(module): name or root for name, module in model.named_modules()}

    def push(module: nn.Module, _args: Any) -> None:
        label = names.get(id(module))
        if label is not None:
            stack.append(label)

    def pop(module: nn.Module, _args: Any, _out: Any) -> None:
        if id(module) in names:
            stack.pop()

    handles = [
        nn.modules.module.register_module_forward_pre_hook(push),
        nn.modules.module.register_module_forward_hook(pop, always_call=True),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _unavailable(adapted: AdaptedModel, maps: list[AttentionMap]) -> list[AttentionMap]:
    """The adapter's attention modules with no map inside them."""
    seen = [m.module for m in maps]
    return [
        AttentionMap(name, -1, None, "unavailable", None, note=UNAVAILABLE_NOTE)
        for name in adapted.profile.attention_modules
        if not any(s == name or s.startswith(name + ".") for s in seen)
    ]
