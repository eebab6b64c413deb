"""Instruments the Tier 1 checks put on a model: taps, recorders, a device tracer and figures.

Every probe is a context manager that removes its hooks (or leaves its dispatch mode) on exit,
whatever happens inside, so a check can never leave a hook behind on the user's model.
"""

from __future__ import annotations

import copy
import math
import os
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

from utils.adapters.tracing import tensors_in
from utils.checks.report import figure_to_png

# Outputs whose largest element moves by less than this, relative to max(1, |output|), count
# as unchanged. Real leaks at initialisation move outputs by 1e-3 or more; float32 reordering
# noise in a correct model stays near 1e-7.
DIFF_RTOL = 1e-5

# -- tensors inside module outputs ----------------------------------------------------------


def first_tensor(out: Any) -> torch.Tensor | None:
    return next((t for t in tensors_in(out) if t.is_floating_point()), None)


def as_bt(t: torch.Tensor, B: int, T: int) -> torch.Tensor | None:
    """View `t` as (B, T, ...) whether it is batch-first (B, T, ...) or seq-first (T, B, ...);
    None when its leading dims are neither (B != T makes the layout unambiguous)."""
    if t.dim() >= 2 and tuple(t.shape[:2]) == (B, T):
        return t
    if t.dim() >= 2 and tuple(t.shape[:2]) == (T, B):
        return t.transpose(0, 1)  # (T, B, ...) -> (B, T, ...)
    return None


def max_abs(t: torch.Tensor) -> float:
    return float(t.detach().float().abs().max()) if t.numel() else 0.0


def changed(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest change from `a` to `b` relative to max(1, |a|); inf when either is not finite."""
    a, b = a.detach().float(), b.detach().float()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    return float((a - b).abs().max()) / max(1.0, max_abs(a)) if a.numel() else 0.0


# -- finding modules ----------------------------------------------------------------------


def block_candidates(model: nn.Module, attention: Sequence[str]) -> list[str]:
    """Modules worth naming when something goes wrong: the attention modules, the model's
    direct children, and every element of a ModuleList/Sequential (the blocks)."""
    out = list(attention)
    for name, m in model.named_modules():
        if not name:
            continue
        parent = name.rpartition(".")[0]
        is_child = "." not in name
        in_list = isinstance(model.get_submodule(parent) if parent else model, (nn.ModuleList, nn.Sequential))
        if (is_child or in_list) and not isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            out.append(name)
    return list(dict.fromkeys(out))


def owner_of(model: nn.Module, param_name: str) -> nn.Module:
    parent = param_name.rpartition(".")[0]
    return model.get_submodule(parent) if parent else model


# -- taps and recorders -------------------------------------------------------------------


class EmbeddingTap:
    """Replaces the first output of the token embedding in each forward by a leaf tensor that
    requires grad, so `autograd.grad(out, tap.leaf)` says exactly which input positions and
    rows an output depends on (call `reset()` before each forward)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.leaf: torch.Tensor | None = None
        self._handle = None

    def reset(self) -> None:
        self.leaf = None

    def _hook(self, mod: nn.Module, inp: Any, out: Any) -> Any:
        if self.leaf is not None or not isinstance(out, torch.Tensor):
            return None
        self.leaf = out.detach().requires_grad_(True)
        return self.leaf

    def __enter__(self):
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
        self.leaf = None


class _Hooked:
    """Base of the recorders: inside `with`, the hook `self._make(name)` sits on each named
    submodule; on exit every hook is removed, whatever happened."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.model = model
        self.names = list(names)
        self._handles: list[Any] = []

    def __enter__(self):
        for n in self.names:
            self._handles.append(self.model.get_submodule(n).register_forward_hook(self._make(n)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class OutputRecorder(_Hooked):
    """Keeps the first floating tensor each named module returns (detached), in the order the
    modules ran (a module called twice keeps its first output)."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__(model, names)
        self.outputs: dict[str, torch.Tensor] = {}

    def _make(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            t = first_tensor(out)
            if t is not None and name not in self.outputs:
                self.outputs[name] = t.detach()

        return hook


def first_divergent(
    model: nn.Module,
    call_a: Callable[[], Any],
    call_b: Callable[[], Any],
    names: Sequence[str],
    region: Callable[[torch.Tensor], torch.Tensor | None],
) -> str | None:
    """Run two forwards and return the first module (in execution order) whose output, cut
    by `region` (None when the output has no such part), differs between them."""
    with OutputRecorder(model, names) as rec_a:
        call_a()
    with OutputRecorder(model, names) as rec_b:
        call_b()
    for name, a in rec_a.outputs.items():
        b = rec_b.outputs.get(name)
        if b is None or a.shape != b.shape:
            continue
        ra, rb = region(a), region(b)
        if ra is not None and rb is not None and changed(ra, rb) > DIFF_RTOL:
            return name
    return None


class SavedTensorBytes:
    """Counts the bytes autograd keeps for the backward pass (the activations), each storage
    once, leaving out the storages in `exclude` (the parameters, counted on their own)."""

    def __init__(self, exclude: Sequence[torch.Tensor] = ()):
        self.skip = {t.untyped_storage().data_ptr() for t in exclude}
        self.seen: dict[int, int] = {}
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in self.skip:
            self.seen[ptr] = max(self.seen.get(ptr, 0), s.nbytes())
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())

    def __enter__(self):
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


class OpCounter(TorchDispatchMode):
    """Counts the aten operations a forward runs, and the host syncs among them (`.item()`,
    `bool(tensor)`, `if tensor:` all end in `_local_scalar_dense`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func.overloadpacket is torch.ops.aten._local_scalar_dense:
            self.syncs += 1
        return func(*args, **(kwargs or {}))


# -- device tracing on the meta device ----------------------------------------------------

_SKIP_DIRS = tuple(
    os.path.realpath(p)
    for p in (
        os.path.dirname(torch.__file__),
        sysconfig.get_paths()["stdlib"],
    )
) + (os.path.realpath(__file__),)


def user_site() -> str:
    """`file.py:LINE in func: code` of the innermost frame outside torch, the standard library
    and this file: the line of the user's code that issued the current operation."""
    for fr in reversed(traceback.extract_stack()):
        path = os.path.realpath(fr.filename)
        if not path.startswith(_SKIP_DIRS):
            code = f": {fr.line.strip()}" if fr.line else ""
            return f"{os.path.basename(fr.filename)}:{fr.lineno} in {fr.name}{code}"
    return "(unknown location)"


# Operations that move a tensor to another device: `torch.arange(T).to(idx.device)` and
# `buf.copy_(host_tensor)` are portable, so a host tensor going into them is no finding.
_TRANSFERS = (torch.ops.aten._to_copy, torch.ops.aten.copy_, torch.ops.aten.copy)


def _index_tensors(index: Any) -> Any:
    """`index` with each list in it (`qkv[..., [-2], :]`) made a CPU tensor moved to meta."""
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for part in parts:
        if isinstance(part, list):
            try:
                part = torch.tensor(part).to("meta")
            except (TypeError, ValueError, RuntimeError):  # a list of slices: left as it is
                pass
        out.append(part)
    return tuple(out) if isinstance(index, tuple) else out[0]


class _MetaFactories(TorchFunctionMode):
    """`torch.tensor(data, device=x.device)`, `x.new_tensor(data)` and indexing a meta tensor
    with a list (`x[..., [-2], :]`) make a meta tensor without running any operation
    DeviceTrace sees, so it would have no real value. Build such tensors on the CPU and move
    them to meta: DeviceTrace sees the move and keeps the real value."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and args[0].is_meta:
            args = (args[0], _index_tensors(args[1]), *args[2:])
        if func in (torch.tensor, torch.as_tensor) and str(kwargs.get("device")) == "meta":
            return func(*args, **{**kwargs, "device": "cpu"}).to("meta")
        if func is torch.Tensor.new_tensor and args[0].is_meta and str(kwargs.get("device", "meta")) == "meta":
            return func(*args, **{**kwargs, "device": "cpu"}).to("meta")
        return func(*args, **kwargs)


class DeviceTrace(TorchDispatchMode):
    """Runs a model whose parameters live on `meta` and flags every operation that mixes a
    meta tensor with a tensor on a real device (e.g. `torch.arange(T)` without `device=`).

    A meta tensor has no values, so data-dependent code (`if mask.all():`) would stop the
    run; every meta tensor therefore has a shadow holding its real value on `real_device`,
    computed by running each operation a second time on the shadows. Findings never stop
    the run: a host tensor in a mixed operation is moved to meta and the trace goes on."""

    def __init__(self, shadows: WeakTensorKeyDictionary, real_device: torch.device):
        super().__init__()
        self.shadows = shadows
        self.real_device = real_device
        self.origins = WeakTensorKeyDictionary()  # host tensor -> where it was made
        self.findings: list[dict[str, str]] = []

    def __enter__(self):
        self._factories = _MetaFactories()
        self._factories.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._factories.__exit__(*exc)

    def _real(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        if x.is_meta:
            if x not in self.shadows:
                raise RuntimeError("a meta tensor has no real value to shadow it; the trace cannot follow this model")
            return self.shadows[x]
        return x.to(self.real_device)

    def _record(self, func: Any, host: list[torch.Tensor]) -> None:
        made = sorted({self.origins.get(t, "(made outside the traced forward)") for t in host})
        self.findings.append(
            {
                "op": str(func.overloadpacket).replace("aten.", "torch."),
                "where": user_site(),
                "host_tensor_made_at": "; ".join(made),
                "host_devices": ", ".join(sorted({str(t.device) for t in host})),
            }
        )

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        meta_in = any(x.is_meta for x in tensors)
        to_meta = str(kwargs.get("device", "")) == "meta"
        if not (meta_in or to_meta):
            out = func(*args, **kwargs)
            self._note_origin(out, tensors)
            return out
        host = [x for x in tensors if not x.is_meta and x.dim() > 0]
        if host and func.overloadpacket not in _TRANSFERS:
            self._record(func, host)
        real_args, real_kwargs = pytree.tree_map(self._real, (args, kwargs))
        if to_meta:
            real_kwargs["device"] = self.real_device
        real_out = func(*real_args, **real_kwargs)
        if not any(isinstance(x, torch.Tensor) for x in pytree.tree_leaves(real_out)):
            return real_out  # a Python value (.item(), bool(tensor)): the real one
        meta_args, meta_kwargs = pytree.tree_map(
            lambda x: x.to("meta") if isinstance(x, torch.Tensor) and not x.is_meta else x, (args, kwargs)
        )
        try:
            meta_out = func(*meta_args, **meta_kwargs)
        except Exception:  # noqa: BLE001 - no meta kernel, or a data-dependent shape
            meta_out = pytree.tree_map(lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x, real_out)
        for m, r in zip(pytree.tree_leaves(meta_out), pytree.tree_leaves(real_out)):
            if isinstance(m, torch.Tensor) and m.is_meta and isinstance(r, torch.Tensor):
                self.shadows[m] = r
        return meta_out

    def _note_origin(self, out: Any, inputs: list[torch.Tensor]) -> None:
        made = next((self.origins[t] for t in inputs if t in self.origins), None)
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t not in self.origins:
                self.origins[t] = made or user_site()


def plain_tensor_attributes(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Tensors a module keeps as ordinary attributes (not parameters or buffers): `.to()`
    does not move them and `state_dict()` does not save them. Aliases of a parameter are
    left out (a parameter keeps its identity when moved)."""
    params = {id(p) for p in model.parameters()}
    found = []
    for mname, m in model.named_modules():
        for k, v in vars(m).items():
            items = (
                [(k, v)]
                if isinstance(v, torch.Tensor)
                else ([(f"{k}[{i}]", x) for i, x in enumerate(v)] if isinstance(v, (list, tuple)) else [])
            )
            for label, x in items:
                if isinstance(x, torch.Tensor) and id(x) not in params:
                    found.append((f"{mname}.{label}" if mname else label, x))
    return found


def meta_copy(model: nn.Module) -> tuple[nn.Module, WeakTensorKeyDictionary]:
    """A copy of `model` with every parameter and buffer on `meta` (no data copied) and the
    map from each meta tensor to the original it stands for. Plain tensor attributes are
    copied as they are, on their real device, so the trace sees them."""
    memo: dict[int, Any] = {}
    shadows = WeakTensorKeyDictionary()
    for p in model.parameters():
        mp = nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)
        memo[id(p)] = mp
        shadows[mp] = p.detach()
    for b in model.buffers():
        mb = b.detach().to("meta")
        memo[id(b)] = mb
        shadows[mb] = b.detach()
    return copy.deepcopy(model, memo), shadows


# -- figures ------------------------------------------------------------------------------


def bar_figure(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    xlabel: str,
    marker: float | None = None,
    marker_label: str = "",
    bad: Sequence[bool] | None = None,
) -> bytes:
    """A horizontal bar chart on a log axis, one bar a label, as PNG bytes. Bars in `bad` (or
    not finite) are red and run to the end of the axis; zeros are a thin stub at the axis
    floor (red when in `bad`, else grey)."""
    from matplotlib.figure import Figure

    finite = [v for v in values if 0 < v < math.inf]
    floor = min(finite) / 10 if finite else 1e-12
    top = max(finite) * 10 if finite else 1.0
    shown, colours = [], []
    for i, v in enumerate(values):
        broken = (bad is not None and bad[i]) or not math.isfinite(v)
        shown.append(floor if v <= 0 else (top if broken else v))
        colours.append("#cf222e" if broken else ("#8c959f" if v <= 0 else "#0969da"))
    fig = Figure(figsize=(7.5, max(2.5, 0.2 * len(labels) + 1.2)))
    ax = fig.add_subplot()
    ys = list(range(len(labels)))
    ax.barh(ys, shown, color=colours, left=floor)
    ax.set_xscale("log")
    ax.set_yticks(ys, [str(lab) for lab in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    if marker is not None:
        ax.axvline(marker, color="#cf222e", linestyle="--", linewidth=1, label=marker_label)
        ax.legend(fontsize=7, loc="lower right")
    return figure_to_png(fig)


def thin_out(items: list[Any], limit: int, keep: Callable[[Any], bool] = lambda x: False) -> list[Any]:
    """At most `limit` items spread evenly over `items`, always keeping those `keep` marks."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    chosen = {int(i * step) for i in range(limit)}
    return [x for i, x in enumerate(items) if i in chosen or keep(x)]
