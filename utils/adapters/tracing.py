"""Finding where a non-finite value first appears: forward hooks on every submodule.

Shared by Tier 1's numerical check and by training, which stops at a NaN loss and names the
module that produced it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn


def tensors_in(out: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Every tensor in a module's output (tensor, tuple, list, dict or ModelOutput)."""
    if isinstance(out, torch.Tensor):
        yield out
    elif depth < 3 and isinstance(out, Mapping):
        for v in out.values():
            yield from tensors_in(v, depth + 1)
    elif depth < 3 and isinstance(out, (tuple, list)):
        for v in out:
            yield from tensors_in(v, depth + 1)


def sound(t: torch.Tensor) -> bool:
    """No NaN and no +inf. -inf is allowed: it is how a mask says 'never attend' (and log(0))."""
    return not bool((torch.isnan(t) | torch.isposinf(t)).any())


def finite_max_abs(t: torch.Tensor) -> float:
    """Largest |value| among the finite elements (a -inf mask is not an activation)."""
    x = t.detach().float().abs()
    x = x[torch.isfinite(x)]
    return float(x.max()) if x.numel() else 0.0


class ActivationStats:
    """Per-module largest finite |output|, whether its outputs were sound (no NaN, no +inf;
    see `sound`) and whether its inputs were finite, recorded by forward hooks on every
    submodule, in the order modules first ran. Inside `with` only: the hooks are removed on
    exit, whatever happened."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.stats: dict[str, dict[str, Any]] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> ActivationStats:
        for name, module in self.model.named_modules():
            if name:
                self._handles.append(module.register_forward_hook(self._make(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            outs = [t for t in tensors_in(out) if t.is_floating_point()]
            ins = [t for t in tensors_in(inp) if t.is_floating_point()]
            if not outs:
                return
            with torch.no_grad():
                peak = max(finite_max_abs(t) for t in outs)
                fin_out = all(sound(t) for t in outs)
                fin_in = all(bool(torch.isfinite(t).all()) for t in ins)
            s = self.stats.setdefault(
                name, {"max_abs": 0.0, "finite_out": True, "finite_in": True, "type": type(mod).__name__}
            )
            s["max_abs"] = max(s["max_abs"], peak)
            s["finite_out"] &= fin_out
            s["finite_in"] &= fin_in

        return hook


def first_nonfinite(stats: dict[str, dict]) -> tuple[str | None, str | None]:
    """(first module with a non-finite output, the module that ran before it)."""
    prev = None
    for name, s in stats.items():
        if not s["finite_out"]:
            return name, prev
        prev = name
    return None, prev


def trace_nonfinite(model: nn.Module, call: Callable[[], Any]) -> tuple[str | None, str | None]:
    """Run `call` (a forward of `model`) under hooks, without gradients, and return
    (first module whose output held NaN/+inf, its type); (None, None) when every module's
    output was finite, so the value came from code outside any submodule (or the loss)."""
    with ActivationStats(model) as rec, torch.no_grad():
        call()
    name, _ = first_nonfinite(rec.stats)
    return name, (rec.stats[name]["type"] if name else None)
