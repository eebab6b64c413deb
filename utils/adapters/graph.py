"""Graph recovery: the nodes and edges of an export, from config.json or from forward's source."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from utils.adapters.signature import ModelSignatureInspector
from utils.errors import GraphError
from utils.loading import edge_pair

ATTENTION_TYPES = {"mhsa", "attention", "attn", "self_attention", "multihead_attention"}


SUBLAYER_TYPES = ATTENTION_TYPES | {"ffn", "mlp", "feedforward"}


RESIDUAL_TYPES = {"residual", "add"}


OUTPUT_TYPES = {"output", "lm_head"}


_NODE_ID = re.compile(r"^([a-z][a-z_]*?_\d+)(?:_[a-z_]+)?$")


_INTERMEDIATE = re.compile(r"^([a-z][a-z_]*?_\d+)_(output|out|x|logits|hidden)$")


@dataclass
class GraphNode:
    id: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)


def node_type(node_id: str) -> str:
    """`mhsa_0` -> `mhsa`, `layer_norm_3` -> `layer_norm`."""
    return re.sub(r"_\d+$", "", node_id)


def graph_from_config(config: Any) -> list[GraphNode]:
    """Nodes in topological order from a config's `nodes` and `edges` (source/target or
    from/to), inputs of each node in edge order."""
    nodes_raw, edges_raw = _graph_fields(config)
    nodes: dict[str, GraphNode] = {}
    for i, raw in enumerate(nodes_raw):
        if "id" not in raw:
            raise GraphError(f"config.json nodes[{i}] has no 'id': {raw}")
        nodes[raw["id"]] = GraphNode(
            raw["id"],
            str(raw.get("type") or node_type(raw["id"])).lower(),
            dict(raw.get("params") or {}),
        )
    for i, edge in enumerate(edges_raw):
        pair = edge_pair(edge) if isinstance(edge, dict) else None
        if pair is None:
            raise GraphError(f"config.json edges[{i}] = {edge} needs 'source' and 'target' (or 'from'/'to')")
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
            f"{type(model).__name__}.forward has no token input parameter (parameters: {', '.join(sig.params)})"
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
