"""The config: `ModelConfig` read from config.json (sizes, template, graph) and checked field by field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import LoadError
from utils.vocabulary import (
    CONFIG_SEQ_LEN_KEYS,
    CONFIG_VOCAB_KEYS,
)

CONFIG_FIELDS = ("vocab_size", "max_seq_len", "model_name", "template", "nodes", "edges")


@dataclass
class ModelConfig:
    """What `config.json` says about a model. Fields it does not state are `None`, never a
    guessed default: a wrong vocabulary size would silently train the wrong model."""

    vocab_size: int | None = None
    max_seq_len: int | None = None
    model_name: str | None = None
    template: str | None = None
    nodes: list[dict] | None = None
    edges: list[dict] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    found_at: dict[str, str] = field(default_factory=dict)  # field -> where in the file

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | Path | None = None) -> ModelConfig:
        where = str(path) if path else "the config"
        if not isinstance(data, Mapping):
            raise LoadError(f"{where}: expected a JSON object ({{...}}) at the top level, found {type(data).__name__}.")
        data = dict(data)
        found_at: dict[str, str] = {}
        nodes = _read_nodes(data, where)
        edges = _read_edges(data, nodes, where)
        for name in ("nodes", "edges"):
            if name in data:
                found_at[name] = name
        return cls(
            vocab_size=_read_size(data, nodes, CONFIG_VOCAB_KEYS, "vocab_size", where, found_at),
            max_seq_len=_read_size(data, nodes, CONFIG_SEQ_LEN_KEYS, "max_seq_len", where, found_at),
            model_name=_read_text(data, "model_name", where, found_at),
            template=_read_text(data, "template", where, found_at),
            nodes=nodes,
            edges=edges,
            raw=data,
            path=Path(path) if path else None,
            found_at=found_at,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise LoadError(f"{path}: no such file; pass the path of the model's config.json.") from exc
        except UnicodeDecodeError as exc:
            raise LoadError(
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 JSON or re-export it."
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            lines = text.splitlines()
            line = lines[exc.lineno - 1].strip() if 0 < exc.lineno <= len(lines) else ""
            raise LoadError(
                f"{path} line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg}) "
                f"near {line!r}. Fix the JSON there (a trailing comma or a missing quote is "
                "the usual cause) or re-export the model."
            ) from exc
        return cls.from_dict(data, path)

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "the config"

    @property
    def missing(self) -> list[str]:
        """The standard fields the config does not state."""
        return [name for name in CONFIG_FIELDS if getattr(self, name) is None]

    @property
    def is_graph(self) -> bool:
        return bool(self.nodes)

    def node(self, node_id: str) -> dict:
        for node in self.nodes or []:
            if node["id"] == node_id:
                return node
        known = ", ".join(n["id"] for n in self.nodes or []) or "none"
        raise KeyError(f"no node {node_id!r} in {self.where}; nodes: {known}")

    def nodes_of_type(self, node_type: str) -> list[dict]:
        return [n for n in self.nodes or [] if n.get("type") == node_type]

    def edge_pairs(self) -> list[tuple[str, str]]:
        """Edges as (source, target), whichever spelling (`source`/`target`, `from`/`to`)."""
        return [edge_pair(e) for e in self.edges or []]  # type: ignore[misc]

    def flat(self) -> dict[str, Any]:
        """Every value a constructor may ask for by name: the top-level fields, then node
        params that all nodes carrying them agree on, plus the canonical sizes."""
        values = {k: v for k, v in self.raw.items() if k not in ("nodes", "edges")}
        from_nodes: dict[str, list[Any]] = {}
        for node in self.nodes or []:
            for key, value in (node.get("params") or {}).items():
                from_nodes.setdefault(key, []).append(value)
        for key, seen in from_nodes.items():
            if key not in values and all(v == seen[0] for v in seen):
                values[key] = seen[0]
        for name in ("vocab_size", "max_seq_len"):
            if getattr(self, name) is not None:
                values.setdefault(name, getattr(self, name))
        return values


def _read_nodes(data: dict, where: str) -> list[dict] | None:
    if "nodes" not in data:
        return None
    nodes = data["nodes"]
    if not isinstance(nodes, list):
        raise LoadError(f"{where}: 'nodes' must be a list of objects, found {type(nodes).__name__}.")
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise LoadError(f"{where}: nodes[{i}] must be an object with a string 'id', found {node!r:.80}.")
        if node["id"] in seen:
            raise LoadError(f"{where}: nodes[{i}] repeats the id {node['id']!r}; ids must be unique.")
        if not isinstance(node.get("params", {}), dict):
            raise LoadError(f"{where}: nodes[{i}] ({node['id']}) 'params' must be an object.")
        seen.add(node["id"])
    return nodes


def edge_pair(edge: dict) -> tuple[str, str] | None:
    """(source, target) of an edge written as source/target or from/to; None if neither."""
    source = edge.get("source", edge.get("from"))
    target = edge.get("target", edge.get("to"))
    if isinstance(source, str) and isinstance(target, str):
        return source, target
    return None


def _read_edges(data: dict, nodes: list[dict] | None, where: str) -> list[dict] | None:
    if "edges" not in data:
        return None
    edges = data["edges"]
    if not isinstance(edges, list):
        raise LoadError(f"{where}: 'edges' must be a list of objects, found {type(edges).__name__}.")
    ids = {n["id"] for n in nodes} if nodes is not None else None
    for i, edge in enumerate(edges):
        pair = edge_pair(edge) if isinstance(edge, dict) else None
        if pair is None:
            raise LoadError(
                f"{where}: edges[{i}] needs string 'source' and 'target' (or 'from' and 'to'), found {edge!r:.80}."
            )
        for end in pair:
            if ids is not None and end not in ids:
                raise LoadError(
                    f"{where}: edges[{i}] refers to node {end!r}, which is not in 'nodes' "
                    f"(ids: {', '.join(sorted(ids))}). Fix the edge or re-export the model."
                )
    return edges


def _read_size(
    data: dict,
    nodes: list[dict] | None,
    keys: tuple[str, ...],
    name: str,
    where: str,
    found_at: dict[str, str],
) -> int | None:
    """One size stated anywhere (top level under any of `keys`, or any node's params); the
    places that state it must agree."""
    seen = [(key, data[key]) for key in keys if key in data]
    for i, node in enumerate(nodes or []):
        params = node.get("params") or {}
        seen += [(f"nodes[{i}].params.{k} ({node['id']})", params[k]) for k in keys if k in params]
    for place, value in seen:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise LoadError(f"{where}: {place} is {value!r}; {name} must be a positive whole number.")
    if len({value for _, value in seen}) > 1:
        listing = ", ".join(f"{place} = {value}" for place, value in seen)
        raise LoadError(
            f"{where} disagrees with itself about {name}: {listing}. "
            "Make them equal (re-export from the canvas, or edit the file)."
        )
    if not seen:
        return None
    found_at[name] = seen[0][0]
    return seen[0][1]


def _read_text(data: dict, key: str, where: str, found_at: dict[str, str]) -> str | None:
    if key not in data:
        return None
    if not isinstance(data[key], str):
        raise LoadError(f"{where}: {key} is {data[key]!r}; it must be a string.")
    found_at[key] = key
    return data[key]


def as_config(config: ModelConfig | Mapping | str | Path | None) -> ModelConfig | None:
    """Any way a caller may give a config (None, a ModelConfig, a dict or the path of a
    config.json) as a ModelConfig, so that code past the door reads one type."""
    if config is None or isinstance(config, ModelConfig):
        return config
    if isinstance(config, Mapping):
        return ModelConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return ModelConfig.from_file(config)
    raise LoadError(f"config must be a ModelConfig, a dict or the path of a config.json, not {type(config).__name__}.")
