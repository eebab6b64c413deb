"""Finding the parts of any model that Tier 2 looks at: the token embedding (whose output the
attributions are taken over) and the blocks (whose outputs are the residual stream).

Nothing here depends on a class name the toolkit knows: Hugging Face, nanoGPT,
`nn.TransformerEncoder` and the designer's flat exports are all found by their structure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Class names of normalisation layers whose *input* is the residual stream in a flat export
# (pre-LN and post-LN alike: the sum of a sublayer and its skip connection goes into a norm).
_NORM_HINTS = ("norm",)


def floating_tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Every floating tensor in a module's inputs or outputs (tensor, tuple, list, dict)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif depth < 3 and isinstance(value, Mapping):
        for v in value.values():
            yield from floating_tensors(v, depth + 1)
    elif depth < 3 and isinstance(value, (tuple, list)):
        for v in value:
            yield from floating_tensors(v, depth + 1)


def first_floating(value: Any) -> torch.Tensor | None:
    return next(floating_tensors(value), None)


def batch_major(t: torch.Tensor, B: int, T: int) -> torch.Tensor | None:
    """`t` as (B, T, ...) whether it is batch-first or seq-first (T, B, ...); None when its
    leading dims are neither. Callers pick B != T so the layout is never ambiguous."""
    if t.dim() >= 3 and tuple(t.shape[:2]) == (B, T):
        return t
    if t.dim() >= 3 and tuple(t.shape[:2]) == (T, B):
        return t.transpose(0, 1)
    return None


def embedding_table(module: nn.Module, vocab_size: int) -> torch.Tensor:
    """(V, C) the vector the embedding module outputs for each token id."""
    if isinstance(module, nn.Embedding):
        return module.weight.detach()
    weight = next(module.parameters()).device
    with torch.no_grad():
        return module(torch.arange(vocab_size, device=weight)).detach()


@dataclass(frozen=True)
class BlockLayout:
    """Where the residual stream can be read. `kind` is "blocks" (each name is one block:
    input and output are the stream before and after it) or "norm_inputs" (a flat export:
    each name is a normalisation layer whose input is the stream after a sublayer)."""

    names: tuple[str, ...]
    kind: str
    container: str | None = None


def find_blocks(model: nn.Module) -> BlockLayout | None:
    """The repeated blocks of a transformer, found by structure: the ModuleList/Sequential
    holding the most parameters among those whose children are two or more modules of one
    class with submodules of their own (GPT-2's `h`, nanoGPT's `transformer.h`, BERT's
    `encoder.layer`, `nn.TransformerEncoder.layers`). A flat model (the designer's exports)
    has no such list; its stream is read at the inputs of its top-level norm layers."""
    best: tuple[int, str, nn.Module] | None = None
    for name, m in model.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) < 2:
            continue
        kids = list(m.children())
        if len({type(k) for k in kids}) != 1 or not any(True for _ in kids[0].children()):
            continue
        size = sum(p.numel() for p in m.parameters())
        if best is None or size > best[0]:
            best = (size, name, m)
    if best is not None:
        _, name, m = best
        prefix = f"{name}." if name else ""
        return BlockLayout(tuple(f"{prefix}{k}" for k, _ in m.named_children()), "blocks", name)
    norms = [n for n, m in model.named_children() if any(h in type(m).__name__.lower() for h in _NORM_HINTS)]
    if len(norms) >= 2:
        return BlockLayout(tuple(norms), "norm_inputs")
    return None


def is_activation(module: nn.Module) -> bool:
    """A ReLU-family activation module (ReLU, GELU, SiLU, ...), whose outputs say whether a
    feed-forward neuron fires."""
    name = type(module).__name__.lower()
    return any(k in name for k in ("relu", "gelu", "silu", "swish", "mish", "elu"))


def up_projection(block: nn.Module) -> str | None:
    """The feed-forward up-projection inside a block: the widest nn.Linear that widens its
    input and is not part of attention (whose fused qkv projection also widens)."""
    found = []
    for name, m in block.named_modules():
        low = name.lower()
        if (
            isinstance(m, nn.Linear)
            and m.out_features > m.in_features
            and not any(k in low for k in ("attn", "attention", "qkv", "self_attn"))
        ):
            found.append((m.out_features, name))
    return max(found)[1] if found else None
