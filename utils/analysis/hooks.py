"""Context managers that put a hook on a model and always take it off again, so an analysis
can never leave anything behind on the user's model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from utils.analysis.locate import first_floating


class ReplaceOutput:
    """Inside `with`, the module's (tensor) output is replaced by `fn(output)`. Used on the
    token embedding to feed interpolated, noised or leaf embedding outputs to the rest of the
    model while every other module runs as written."""

    def __init__(self, module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.module = module
        self.fn = fn
        self._handle: Any = None

    def _hook(self, mod: nn.Module, inp: Any, out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the token embedding returned {type(out).__name__}, not a tensor")
        return self.fn(out)

    def __enter__(self) -> ReplaceOutput:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class Record:
    """Inside `with`, keeps the first floating input and output of each named module (the
    first call only), detached, and the order in which the modules first ran."""

    def __init__(self, model: nn.Module, names: list[str] | tuple[str, ...], inputs: bool = True, outputs: bool = True):
        self.model = model
        self.names = list(names)
        self.want_in, self.want_out = inputs, outputs
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.order: list[str] = []
        self._handles: list[Any] = []

    def _pre(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            if name in self.inputs:
                return
            t = first_floating(args)
            if t is None:
                t = first_floating(kwargs)
            if t is not None:
                self.inputs[name] = t.detach()

        return hook

    def _post(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: Any, out: Any) -> None:
            if name not in self.order:
                self.order.append(name)
            t = first_floating(out)
            if t is not None and name not in self.outputs:
                self.outputs[name] = t.detach()

        return hook

    def __enter__(self) -> Record:
        for n in self.names:
            m = self.model.get_submodule(n)
            if self.want_in:
                self._handles.append(m.register_forward_pre_hook(self._pre(n), with_kwargs=True))
            self._handles.append(m.register_forward_hook(self._post(n)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def feed_embedding(module: nn.Module, embedded: torch.Tensor, batch_first: bool = True) -> ReplaceOutput:
    """Inside `with`, the token embedding outputs `embedded` (B, T, C) instead of its own
    output (transposed to (T, B, C) for a seq-first model)."""
    value = embedded if batch_first else embedded.transpose(0, 1)
    return ReplaceOutput(module, lambda out: value)


def embedding_output(
    adapted: nn.Module,
    module: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_first: bool = True,
) -> torch.Tensor:
    """(B, T, C) what the token embedding outputs for `input_ids` inside a real forward."""
    seen: list[torch.Tensor] = []

    def keep(out: torch.Tensor) -> torch.Tensor:
        if not seen:
            seen.append(out.detach() if batch_first else out.detach().transpose(0, 1))
        return out

    with torch.no_grad(), ReplaceOutput(module, keep):
        adapted(input_ids, attention_mask)
    if not seen or seen[0].dim() != 3 or tuple(seen[0].shape[:2]) != tuple(input_ids.shape):
        got = tuple(seen[0].shape) if seen else "nothing"
        raise ValueError(
            f"the token embedding returned {got} for input ids {tuple(input_ids.shape)}; expected (B, T, C)"
        )
    return seen[0]
