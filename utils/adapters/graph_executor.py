"""Run the graph an export meant, over the export's own modules.

The designer's "complex signature" exports take intermediate outputs as `forward`
parameters, overwrite one and return an undefined name, so they can never be called. The
executor rebuilds the intended data flow, from `config.json`'s `nodes`/`edges` when they
are there, else from the generator's naming conventions and the statement order of
`forward`, and runs it. Nothing is guessed silently: a node or parameter it cannot resolve
is a `GraphError` that names it.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.adapters.signature import ModelSignatureInspector
from utils.loading import edge_pair

ATTENTION_TYPES = {"mhsa", "attention", "attn", "self_attention", "multihead_attention"}
SUBLAYER_TYPES = ATTENTION_TYPES | {"ffn", "mlp", "feedforward"}
RESIDUAL_TYPES = {"residual", "add"}
INPUT_TYPES = {"input", "tokens"}
OUTPUT_TYPES = {"output", "lm_head"}
_NODE_ID = re.compile(r"^([a-z][a-z_]*?_\d+)(?:_[a-z_]+)?$")
_INTERMEDIATE = re.compile(r"^([a-z][a-z_]*?_\d+)_(output|out|x|logits|hidden)$")


class GraphError(ValueError):
    """The graph cannot be built or run; the message names the node or parameter."""


@dataclass
class GraphNode:
    id: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)


def node_type(node_id: str) -> str:
    """`mhsa_0` -> `mhsa`, `layer_norm_3` -> `layer_norm`."""
    return re.sub(r"_\d+$", "", node_id)


# -- graph recovery -----------------------------------------------------------------------


def graph_from_config(config: Any) -> list[GraphNode]:
    """Nodes in topological order from a config's `nodes` and `edges` (source/target or
    from/to), inputs of each node in edge order."""
    nodes_raw, edges_raw = _graph_fields(config)
    nodes: dict[str, GraphNode] = {}
    for i, raw in enumerate(nodes_raw):
        if "id" not in raw:
            raise GraphError(f"config.json nodes[{i}] has no 'id': {raw}")
        nodes[raw["id"]] = GraphNode(
            raw["id"], str(raw.get("type") or node_type(raw["id"])).lower(),
            dict(raw.get("params") or {}),
        )
    for i, edge in enumerate(edges_raw):
        pair = edge_pair(edge) if isinstance(edge, dict) else None
        if pair is None:
            raise GraphError(
                f"config.json edges[{i}] = {edge} needs 'source' and 'target' (or 'from'/'to')"
            )
        src, dst = pair
        for end in (src, dst):
            if end not in nodes:
                raise GraphError(
                    f"config.json edges[{i}] refers to node {end!r}, which is not in 'nodes' "
                    f"(known: {', '.join(nodes)})"
                )
        nodes[dst].inputs.append(src)
    return _toposort(list(nodes.values()))


def graph_from_source(model: nn.Module) -> list[GraphNode]:
    """Recover the data flow from `forward`'s source, following the generator's conventions:
    `self.<node>_<i>[_part](...)` calls belong to node `<node>_<i>`; a variable takes the node
    that assigned it; an intermediate parameter that is read but never assigned
    (`residual_<i>_output`) is the sum of the latest sub-layer and that sub-layer's input;
    an undefined returned name (`output_0_logits`) is the output node applied to the latest
    node (tied to the token embedding when the model has no such module)."""
    fn = _forward_def(model)
    sig = ModelSignatureInspector(model).analyze()
    if sig.input_param is None:
        raise GraphError(
            f"{type(model).__name__}.forward has no token input parameter "
            f"(parameters: {', '.join(sig.params)})"
        )
    b = _SourceGraphBuilder(model, sig.input_param, set(sig.intermediate_params))
    for stmt in _flat_statements(fn.body):
        b.visit(stmt)
    if b.sink is None:
        raise GraphError(f"{type(model).__name__}.forward returns nothing the executor can follow")
    return _toposort(list(b.nodes.values()), sink=b.sink)


class _SourceGraphBuilder:
    def __init__(self, model: nn.Module, token_param: str, intermediates: set[str]):
        self.model = model
        self.modules = dict(model.named_modules())
        self.intermediates = intermediates
        self.nodes: dict[str, GraphNode] = {}
        self.env: dict[str, str] = {token_param: "input"}
        self.nodes["input"] = GraphNode("input", "input")
        self.order: list[str] = ["input"]
        self.sink: str | None = None

    def visit(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Assign):
            self._assign(stmt)
        elif isinstance(stmt, ast.Return) and stmt.value is not None:
            self.sink = self._return(stmt.value, stmt.lineno)

    def _assign(self, stmt: ast.Assign) -> None:
        targets = _target_names(stmt.targets)
        calls = [c for c in ast.walk(stmt.value) if _self_call(c)]
        if calls:
            node_id = None
            for call in calls:
                node_id = self._module_call(call, stmt.lineno)
            self._bind(targets, node_id)
            return
        names = list(dict.fromkeys(self._resolve_names(stmt.value, stmt.lineno, exclude=None)))
        m = _INTERMEDIATE.match(targets[0]) if targets else None
        if len(names) == 1:
            self._bind(targets, names[0])  # an alias, or parts of one node summed together
        elif m and isinstance(stmt.value, ast.BinOp) and names and m.group(1) not in self.nodes:
            node_id = m.group(1)  # `residual_0_output = a + b` written out
            self._add(GraphNode(node_id, node_type(node_id), inputs=names))
            self._bind(targets, node_id)

    def _module_call(self, call: ast.Call, lineno: int) -> str:
        attr = call.func.attr  # type: ignore[union-attr]
        m = _NODE_ID.match(attr)
        if m is None:
            raise GraphError(
                f"forward line {lineno}: self.{attr}(...) does not follow the '<node>_<i>' naming "
                "the executor relies on"
            )
        node_id = m.group(1)
        args = [a for a in call.args] + [k.value for k in call.keywords]
        inputs = []
        for a in args:
            inputs += self._resolve_names(a, lineno, exclude=node_id)
        if node_id not in self.nodes:
            self._add(GraphNode(node_id, node_type(node_id), inputs=list(dict.fromkeys(inputs))))
        else:
            node = self.nodes[node_id]
            node.inputs += [i for i in dict.fromkeys(inputs) if i not in node.inputs]
        return node_id

    def _resolve_names(self, expr: ast.AST, lineno: int, exclude: str | None) -> list[str]:
        out = []
        for n in ast.walk(expr):
            if not isinstance(n, ast.Name):
                continue
            if n.id in self.env:
                if self.env[n.id] != exclude:
                    out.append(self.env[n.id])
            elif n.id in self.intermediates or _INTERMEDIATE.match(n.id):
                out.append(self._implicit(n.id, lineno))
        return out

    def _implicit(self, name: str, lineno: int) -> str:
        """An intermediate read before anything assigned it: by the generator's convention
        only a residual can be implicit, summing the latest sub-layer with its input."""
        node_id = _INTERMEDIATE.match(name).group(1)  # type: ignore[union-attr]
        if node_type(node_id) not in RESIDUAL_TYPES:
            raise GraphError(
                f"forward line {lineno} reads {name!r} before anything computes it, and only "
                "residual outputs are implied by the generator's conventions; add "
                "'nodes'/'edges' to config.json to describe the graph"
            )
        sub = next((n for n in reversed(self.order) if self.nodes[n].type in SUBLAYER_TYPES), None)
        if sub is None or not self.nodes[sub].inputs:
            raise GraphError(
                f"forward line {lineno}: {name!r} is a residual with no attention or feed-forward "
                "layer before it to wrap"
            )
        if node_id not in self.nodes:
            self._add(GraphNode(node_id, node_type(node_id), inputs=[self.nodes[sub].inputs[0], sub]))
        self.env[name] = node_id
        return node_id

    def _return(self, value: ast.expr, lineno: int) -> str:
        if isinstance(value, ast.Name) and value.id in self.env:
            return self.env[value.id]
        if isinstance(value, ast.Tuple) and value.elts:
            return self._return(value.elts[0], lineno)
        name = value.id if isinstance(value, ast.Name) else ast.unparse(value)
        m = _INTERMEDIATE.match(name)
        if m is None or node_type(m.group(1)) not in OUTPUT_TYPES:
            raise GraphError(
                f"forward line {lineno} returns {name!r}, which is neither computed in forward "
                "nor an output node ('output_<i>_logits')"
            )
        node_id = m.group(1)
        self._add(GraphNode(node_id, node_type(node_id), inputs=[self.order[-1]]))
        return node_id

    def _add(self, node: GraphNode) -> None:
        self.nodes[node.id] = node
        self.order.append(node.id)

    def _bind(self, targets: list[str], node_id: str | None) -> None:
        if node_id is None:
            return
        for t in targets:
            if t != "_":
                self.env[t] = node_id


def _self_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
    )


def _target_names(targets: list[ast.expr]) -> list[str]:
    names = []
    for t in targets:
        if isinstance(t, ast.Name):
            names.append(t.id)
        elif isinstance(t, ast.Tuple):
            names += [e.id for e in t.elts[:1] if isinstance(e, ast.Name)]
    return names


def _flat_statements(body: list[ast.stmt]):
    for stmt in body:
        yield stmt
        for attr in ("body", "orelse"):
            inner = getattr(stmt, attr, None)
            if isinstance(inner, list) and not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
                yield from _flat_statements(inner)


def _forward_def(model: nn.Module) -> ast.FunctionDef:
    cls = type(model)
    try:
        src = textwrap.dedent(inspect.getsource(cls.forward))
    except (OSError, TypeError) as exc:
        raise GraphError(
            f"cannot read the source of {cls.__name__}.forward ({exc}); without 'edges' in "
            "config.json the executor needs the source to recover the graph"
        ) from exc
    fn = ast.parse(src).body[0]
    assert isinstance(fn, ast.FunctionDef)
    return fn


def _graph_fields(config: Any) -> tuple[list[dict], list[dict]]:
    if config is None:
        return [], []
    if isinstance(config, dict):
        return list(config.get("nodes") or []), list(config.get("edges") or [])
    return list(getattr(config, "nodes", None) or []), list(getattr(config, "edges", None) or [])


def has_edges(config: Any) -> bool:
    nodes, edges = _graph_fields(config)
    return bool(nodes) and bool(edges)


def _toposort(nodes: list[GraphNode], sink: str | None = None) -> list[GraphNode]:
    """Kahn's algorithm, stable in declaration order; nodes that cannot reach the sink are
    dropped only when a sink is given (the source path), never for a config graph."""
    by_id = {n.id: n for n in nodes}
    if sink is not None:
        keep, stack = set(), [sink]
        while stack:
            n = stack.pop()
            if n not in keep:
                keep.add(n)
                stack += by_id[n].inputs
        nodes = [n for n in nodes if n.id in keep]
    indeg = {n.id: len(n.inputs) for n in nodes}
    users: dict[str, list[str]] = {n.id: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users[i].append(n.id)
    ready = [n.id for n in nodes if indeg[n.id] == 0]
    order: list[str] = []
    while ready:
        cur = ready.pop(0)
        order.append(cur)
        for u in users[cur]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        stuck = [n.id for n in nodes if n.id not in order]
        raise GraphError(f"the graph has a cycle through: {', '.join(stuck)}")
    return [by_id[i] for i in order]


# -- execution ---------------------------------------------------------------------------


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

    def __init__(self, model: nn.Module, inspector: ModelSignatureInspector | None = None,
                 config: Any = None):
        if inspector is not None and not isinstance(inspector, ModelSignatureInspector):
            if config is not None:
                raise TypeError(
                    f"ComputationalGraphExecutor(model, inspector, config): the second argument "
                    f"is a {type(inspector).__name__}, not a ModelSignatureInspector; pass the "
                    "config as config=...")
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
                        f"output node {nid!r} has no module '{nid}' and there is no token "
                        "embedding to tie it to"
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
                return _Step(nid, "dropout", ins, p=float(node.params.get("dropout",
                                                                        node.params.get("p", 0.1))))
            return _Step(nid, "module", ins, (name,))
        name = self._module_name(nid, ("",), None, required=False)
        if name is None:
            raise GraphError(
                f"node {nid!r} of type {t!r}: the model has no module named '{nid}' to run it"
            )
        return _Step(nid, "module", ins, (name,))

    def _module_name(self, nid: str, suffixes: tuple[str, ...], kind: type | None,
                     required: bool) -> str | None:
        for s in suffixes:
            name = nid + s
            mod = self._get(name)
            if mod is not None and (kind is None or isinstance(mod, kind)):
                return name
        if required:
            want = " or ".join(repr(nid + s) for s in suffixes)
            raise GraphError(
                f"node {nid!r}: the model has no module {want}"
                + (f" of type {kind.__name__}" if kind else "")
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
        outs = [s for s in sinks if node_type(s) in OUTPUT_TYPES or
                next(n for n in self.nodes if n.id == s).type in OUTPUT_TYPES]
        if len(outs) == 1:
            return outs[0]
        raise GraphError(
            f"the graph ends in {len(sinks)} nodes ({', '.join(sinks)}); mark one as type 'output'"
        )

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
                    xt = x.transpose(0, 1)
                    out = mha(xt, xt, xt, attn_mask=mask, key_padding_mask=pad,
                              need_weights=False)[0].transpose(0, 1)
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


def _soft_masks(causal: torch.Tensor | None, kpm: torch.Tensor, dtype: torch.dtype
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
