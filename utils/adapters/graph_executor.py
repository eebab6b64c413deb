"""Run the graph an export meant, over the export's own modules.

The designer's "complex signature" exports take intermediate outputs as `forward`
parameters, overwrite one and return an undefined name, so they can never be called. The
executor rebuilds the intended data flow, from `config.json`'s `nodes`/`edges` when they
are there, else from the generator's naming conventions and the statement order of
`forward`, and runs it. Nothing is guessed silently: a node or parameter it cannot resolve
is a `GraphError` that names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.adapters.graph import (
    ATTENTION_TYPES,
    OUTPUT_TYPES,
    RESIDUAL_TYPES,
    GraphNode,
    graph_from_config,
    graph_from_source,
    has_edges,
    node_type,
)
from utils.adapters.signature import ModelSignatureInspector
from utils.errors import GraphError

INPUT_TYPES = {"input", "tokens"}


@dataclass
class _Step:
    node: str
    op: str
    inputs: tuple[str, ...]
    modules: tuple[str, ...] = ()
    causal: bool = False
    p: float = 0.0


class ComputationalGraphExecutor:
    """Executes an export's intended graph over its own modules.

    executor = ComputationalGraphExecutor(model, ModelSignatureInspector(model), config)
    logits = executor.forward(input_ids, attention_mask)   # (B, T) -> (B, T, V)
    """

    def __init__(self, model: nn.Module, inspector: ModelSignatureInspector | None = None, config: Any = None):
        if inspector is not None and not isinstance(inspector, ModelSignatureInspector):
            if config is not None:
                raise TypeError(
                    f"ComputationalGraphExecutor(model, inspector, config): the second argument "
                    f"is a {type(inspector).__name__}, not a ModelSignatureInspector; pass the "
                    "config as config=..."
                )
            inspector, config = None, inspector  # ComputationalGraphExecutor(model, config)
        self.model = model
        self.signature = (inspector or ModelSignatureInspector(model)).analyze()
        self.source = "config edges" if has_edges(config) else "forward source"
        self.nodes = graph_from_config(config) if has_edges(config) else graph_from_source(model)
        self.tied_output = False
        self.token_embedding: str | None = None
        self.steps = [self._compile(n) for n in self.nodes]
        self.sink = self._find_sink()
        self._causal_cache: dict[tuple[int, str], torch.Tensor] = {}

    # compile once: resolve every module name so the forward loop only looks them up
    def _compile(self, node: GraphNode) -> _Step:
        t, nid, ins = node.type, node.id, tuple(node.inputs)
        if t in INPUT_TYPES:
            return _Step(nid, "input", ())
        if len(ins) == 0:
            raise GraphError(f"node {nid!r} ({t}) has no input edge")
        if t in RESIDUAL_TYPES:
            return _Step(nid, "sum", ins)
        if len(ins) > 1:
            raise GraphError(
                f"node {nid!r} ({t}) has {len(ins)} inputs ({', '.join(ins)}); only residual/add "
                "nodes combine several inputs"
            )
        if t == "embedding":
            tok = self._module_name(nid, ("_token", "_tok", ""), nn.Embedding, required=True)
            pos = self._module_name(nid, ("_pos", "_position"), nn.Embedding, required=False)
            drop = self._module_name(nid, ("_dropout", "_drop"), None, required=False)
            self.token_embedding = self.token_embedding or tok
            mods = (tok, pos or "", drop or "")
            return _Step(nid, "embedding", ins, mods, p=float(node.params.get("dropout", 0.0)))
        if t in OUTPUT_TYPES:
            head = self._module_name(nid, ("", "_linear", "_head"), None, required=False)
            if head is None:
                if self.token_embedding is None:
                    raise GraphError(
                        f"output node {nid!r} has no module '{nid}' and there is no token embedding to tie it to"
                    )
                self.tied_output = True
                return _Step(nid, "tied_output", ins, (self.token_embedding,))
            return _Step(nid, "module", ins, (head,))
        if t in ATTENTION_TYPES:
            name = self._module_name(nid, ("",), None, required=True)
            causal = bool(node.params.get("causal", False))
            if isinstance(self._get(name), nn.MultiheadAttention):
                return _Step(nid, "mha", ins, (name,), causal=causal)
            if causal:
                raise GraphError(
                    f"node {nid!r} asks for causal attention, but its module is a "
                    f"{type(self._get(name)).__name__}; the executor applies masks only to "
                    "nn.MultiheadAttention. Put the mask inside the module."
                )
            return _Step(nid, "module", ins, (name,))
        if t == "dropout":
            name = self._module_name(nid, ("",), None, required=False)
            if name is None:
                return _Step(nid, "dropout", ins, p=float(node.params.get("dropout", node.params.get("p", 0.1))))
            return _Step(nid, "module", ins, (name,))
        name = self._module_name(nid, ("",), None, required=False)
        if name is None:
            raise GraphError(f"node {nid!r} of type {t!r}: the model has no module named '{nid}' to run it")
        return _Step(nid, "module", ins, (name,))

    def _module_name(self, nid: str, suffixes: tuple[str, ...], kind: type | None, required: bool) -> str | None:
        for s in suffixes:
            name = nid + s
            mod = self._get(name)
            if mod is not None and (kind is None or isinstance(mod, kind)):
                return name
        if required:
            want = " or ".join(repr(nid + s) for s in suffixes)
            raise GraphError(
                f"node {nid!r}: the model has no module {want}" + (f" of type {kind.__name__}" if kind else "")
            )
        return None

    def _get(self, name: str) -> nn.Module | None:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            return None

    def _find_sink(self) -> str:
        used = {i for s in self.steps for i in s.inputs}
        sinks = [s.node for s in self.steps if s.node not in used]
        if len(sinks) == 1:
            return sinks[0]
        outs = [
            s
            for s in sinks
            if node_type(s) in OUTPUT_TYPES or next(n for n in self.nodes if n.id == s).type in OUTPUT_TYPES
        ]
        if len(outs) == 1:
            return outs[0]
        raise GraphError(f"the graph ends in {len(sinks)} nodes ({', '.join(sinks)}); mark one as type 'output'")

    def _causal_mask(self, T: int, device: torch.device) -> torch.Tensor:
        key = (T, str(device))
        mask = self._causal_cache.get(key)
        if mask is None:
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), 1)
            self._causal_cache[key] = mask
        return mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids, optional (B, T) mask with 1 = keep -> (B, T, V) logits."""
        kpm = None if attention_mask is None else attention_mask == 0  # (B, T), True = pad
        mods = self.model._modules
        vals: dict[str, torch.Tensor] = {}
        for s in self.steps:
            op = s.op
            if op == "input":
                out = input_ids
            elif op == "module":
                out = _first(self._mod(mods, s.modules[0])(vals[s.inputs[0]]))
            elif op == "sum":
                out = vals[s.inputs[0]]
                for i in s.inputs[1:]:
                    out = out + vals[i]
            elif op == "mha":
                x = vals[s.inputs[0]]
                mha = self._mod(mods, s.modules[0])
                mask = self._causal_mask(x.shape[1], x.device) if s.causal else None
                if kpm is not None:
                    mask, pad = _soft_masks(mask, kpm, x.dtype)
                else:
                    pad = None
                if mha.batch_first:
                    out = mha(x, x, x, attn_mask=mask, key_padding_mask=pad, need_weights=False)[0]
                else:
                    xt = x.transpose(0, 1)  # (B, T, D) -> (T, B, D): a seq-first attention
                    out = mha(xt, xt, xt, attn_mask=mask, key_padding_mask=pad, need_weights=False)[0].transpose(
                        0, 1
                    )  # back to (B, T, D)
            elif op == "embedding":
                ids = vals[s.inputs[0]]
                tok, pos, drop = s.modules
                x = self._mod(mods, tok)(ids)
                if pos:
                    table = self._mod(mods, pos)
                    if ids.shape[1] > table.num_embeddings:
                        raise ValueError(
                            f"input has {ids.shape[1]} tokens but node {s.node!r} has positions "
                            f"for {table.num_embeddings} ({pos}); pass at most "
                            f"{table.num_embeddings} tokens or enlarge max_seq_len on the canvas"
                        )
                    x = x + table(torch.arange(ids.shape[1], device=ids.device))
                if drop:
                    x = self._mod(mods, drop)(x)
                elif s.p:
                    x = F.dropout(x, s.p, self.model.training)
                out = x
            elif op == "tied_output":
                out = F.linear(vals[s.inputs[0]], self._mod(mods, s.modules[0]).weight)
            elif op == "dropout":
                out = F.dropout(vals[s.inputs[0]], s.p, self.model.training)
            else:
                raise GraphError(f"node {s.node!r}: unknown operation {op!r}")
            vals[s.node] = out
        return vals[self.sink]

    __call__ = forward

    def _mod(self, mods: dict, name: str) -> nn.Module:
        m = mods.get(name)
        return m if m is not None else self.model.get_submodule(name)

    def describe(self) -> list[str]:
        """One line a node: `residual_0 (residual) <- embedding_0, mhsa_0`."""
        return [f"{n.id} ({n.type}) <- {', '.join(n.inputs) or 'tokens'}" for n in self.nodes]


def _soft_masks(
    causal: torch.Tensor | None, kpm: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Boolean masks as large finite negatives. A left-padded pad query under a causal mask
    sees no key at all; with -inf its softmax row is NaN, and 0 * NaN then poisons the real
    positions of the next layer. A finite bias gives that row harmless uniform weights and
    leaves every real position exactly as it was."""
    neg = torch.finfo(dtype).min / 2
    pad = torch.zeros(kpm.shape, dtype=dtype, device=kpm.device).masked_fill(kpm, neg)
    if causal is None:
        return None, pad
    soft = torch.zeros(causal.shape, dtype=dtype, device=causal.device).masked_fill(causal, neg)
    return soft, pad


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out
