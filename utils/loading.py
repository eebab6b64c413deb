"""Load a model from any source into an `nn.Module` plus the `ModelConfig` that describes it.

Sources, in the order they are recognised:

    an nn.Module instance or class      used as given (a class is built from the config)
    "example:<name>"                    an export shipped in utils/examples
    "gist:<id>[@<revision>]", gist URL  fetched through GitHub's gist API (utils.gist)
    a folder                            the designer's export: model.py + config.json
    a .py file                          a config.json beside it is used when present
    "package.module:ClassName"          an importable class or factory

Loading imports the user's code, so a gist's code runs only when the user names that gist.
Everything a user can get wrong becomes a `LoadError` whose message names the file, the
line or the field, and says what to do.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import itertools
import json
import logging
import re
import sys
import traceback
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

log = logging.getLogger(__name__)

VOCAB_KEYS = ("vocab_size", "n_vocab")
SEQ_LEN_KEYS = ("max_seq_len", "seq_length", "block_size", "n_positions", "max_position_embeddings")
CONFIG_FIELDS = ("vocab_size", "max_seq_len", "model_name", "template", "nodes", "edges")
FACTORY_NAMES = ("build_model", "create_model")

# Constructor parameters go by many names for the same size; a config field under any name
# of a group can fill a parameter under any other name of that group.
_ALIASES = (
    ("vocab_size", "n_vocab", "ntoken", "num_tokens"),
    ("max_seq_len",) + SEQ_LEN_KEYS[1:] + ("max_len", "context_length"),
    ("d_model", "n_embd", "hidden_size", "embed_dim", "dim", "emb_dim"),
    ("num_heads", "n_head", "nhead", "n_heads", "num_attention_heads"),
    ("num_layers", "n_layer", "n_layers", "num_hidden_layers", "depth"),
    ("d_ff", "dim_feedforward", "intermediate_size", "ffn_dim", "d_hidden"),
    ("dropout", "dropout_rate", "p_dropout", "hidden_dropout_prob"),
)
# A single required constructor parameter with one of these names and no annotation is a
# config object (nanoGPT's `GPT(config)`), not a size.
_CONFIG_PARAM_NAMES = ("config", "cfg", "conf", "args", "hparams", "model_config", "model_args")
_PIP_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml", "cv2": "opencv-python", "PIL": "pillow"}
_NOT_TOKEN_EMBEDDING = re.compile(r"pos|wpe|token_type|segment|type_emb", re.IGNORECASE)
_POSITION_EMBEDDING = re.compile(r"pos|wpe", re.IGNORECASE)
_MODULE_CLASS = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_MODULE_IDS = itertools.count()


class LoadError(Exception):
    """A model source that cannot be loaded; the message says where and what to do."""


# -- the config ---------------------------------------------------------------------------


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
            raise LoadError(
                f"{where}: expected a JSON object ({{...}}) at the top level, "
                f"found {type(data).__name__}."
            )
        data = dict(data)
        found_at: dict[str, str] = {}
        nodes = _read_nodes(data, where)
        edges = _read_edges(data, nodes, where)
        for name in ("nodes", "edges"):
            if name in data:
                found_at[name] = name
        return cls(
            vocab_size=_read_size(data, nodes, VOCAB_KEYS, "vocab_size", where, found_at),
            max_seq_len=_read_size(data, nodes, SEQ_LEN_KEYS, "max_seq_len", where, found_at),
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
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8 JSON or re-export it."
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
        raise LoadError(
            f"{where}: 'nodes' must be a list of objects, found {type(nodes).__name__}."
        )
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise LoadError(
                f"{where}: nodes[{i}] must be an object with a string 'id', found {node!r:.80}."
            )
        if node["id"] in seen:
            raise LoadError(
                f"{where}: nodes[{i}] repeats the id {node['id']!r}; ids must be unique."
            )
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
        raise LoadError(
            f"{where}: 'edges' must be a list of objects, found {type(edges).__name__}."
        )
    ids = {n["id"] for n in nodes} if nodes is not None else None
    for i, edge in enumerate(edges):
        pair = edge_pair(edge) if isinstance(edge, dict) else None
        if pair is None:
            raise LoadError(
                f"{where}: edges[{i}] needs string 'source' and 'target' (or 'from' and 'to'), "
                f"found {edge!r:.80}."
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
            raise LoadError(
                f"{where}: {place} is {value!r}; {name} must be a positive whole number."
            )
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


def _as_config(config: ModelConfig | Mapping | str | Path | None) -> ModelConfig | None:
    if config is None or isinstance(config, ModelConfig):
        return config
    if isinstance(config, Mapping):
        return ModelConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return ModelConfig.from_file(config)
    raise LoadError(
        f"config must be a ModelConfig, a dict or the path of a config.json, "
        f"not {type(config).__name__}."
    )


# -- the result ---------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A built model, its config, and how it was found and built (for reports and `info`)."""

    model: nn.Module
    config: ModelConfig
    source: str
    class_name: str
    construction: str
    path: Path | None = None

    def describe(self) -> dict[str, Any]:
        """Facts for `tbuilder info`: parameter counts, sizes and where they came from."""
        model, config = self.model, self.config
        params = list(model.parameters())  # shared (tied) weights are listed once
        embedding = {
            id(p): p.numel()
            for m in model.modules()
            if isinstance(m, nn.Embedding)
            for p in m.parameters(recurse=False)
        }
        token = _token_embedding(model)
        found = {
            name: (len(value) if isinstance(value, list) else value)
            for name in CONFIG_FIELDS
            if (value := getattr(config, name)) is not None
        }
        standard = set(CONFIG_FIELDS) | set(VOCAB_KEYS) | set(SEQ_LEN_KEYS)
        return {
            "source": self.source,
            "class": self.class_name,
            "file": str(self.path) if self.path else None,
            "construction": self.construction,
            "parameters": {
                "total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
                "embedding": sum(embedding.values()),
            },
            "vocab_size": config.vocab_size,
            "max_seq_len": config.max_seq_len,
            "token_embedding": (
                {"name": token[0], "rows": token[1].num_embeddings} if token else None
            ),
            "forward": f"forward{inspect.signature(model.forward)}",
            "config": {
                "path": str(config.path) if config.path else None,
                "found": found,
                "found_at": dict(config.found_at),
                "missing": config.missing,
                "other_fields": [k for k in config.raw if k not in standard],
            },
        }


# -- loading ------------------------------------------------------------------------------


def load_model(
    source: str | Path | nn.Module | type,
    *,
    class_name: str | None = None,
    config: ModelConfig | Mapping | str | Path | None = None,
    allow_gist: bool = True,
    cache_dir: str | Path | None = None,
    device: str | None = None,
) -> LoadedModel:
    """Turn `source` into a built model and its config.

    Loading a file, folder, gist or module runs its code (the model's constructor and
    whatever its file does on import), as `import` would.

    `class_name` picks the model class (or factory) when a file defines several; `config`
    (a ModelConfig, dict or path) replaces the export's config.json; `allow_gist=False`
    refuses gist sources, so code from the internet never runs unasked; `cache_dir` is
    where gists are kept (default: $TBUILDER_CACHE_DIR or ~/.cache/tbuilder). `device`
    is where the model is built: `"meta"` builds it without allocating any weights (enough
    to count parameters of a model larger than memory).
    """
    if device is None:
        return _load(source, class_name, config, allow_gist, cache_dir)
    import torch

    with torch.device(device):
        return _load(source, class_name, config, allow_gist, cache_dir)


def _load(
    source: str | Path | nn.Module | type,
    class_name: str | None,
    config: ModelConfig | Mapping | str | Path | None,
    allow_gist: bool,
    cache_dir: str | Path | None,
) -> LoadedModel:
    override = _as_config(config)
    if isinstance(source, nn.Module):
        return _load_instance(source, override or ModelConfig(), class_name)
    if isinstance(source, type) and issubclass(source, nn.Module):
        return _load_callable(
            source,
            source.__name__,
            override or ModelConfig(),
            None,
            f"<class {source.__qualname__}>",
        )
    if not isinstance(source, (str, Path)):
        raise LoadError(
            f"cannot load a model from a {type(source).__name__}; pass a path, "
            "'example:<name>', 'gist:<id>', 'module.path:ClassName' or an nn.Module."
        )
    text = str(source)
    if text.startswith("example:"):
        return _load_example(text.removeprefix("example:"), class_name, override)
    if _is_gist(text):
        return _load_gist(text, class_name, override, allow_gist, cache_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, class_name, override, text)
    if path.is_file():
        return _load_file(path, class_name, override, text)
    if _MODULE_CLASS.match(text):
        return _load_import(text, override or ModelConfig())
    raise LoadError(
        f"model source {text!r} is not an existing file or folder, nor 'example:<name>', "
        "'gist:<id>', a gist URL or 'module.path:ClassName'. Check the path."
    )


def _load_instance(model: nn.Module, config: ModelConfig, class_name: str | None) -> LoadedModel:
    if class_name:
        raise LoadError(
            f"class_name={class_name!r} picks a class in a file; the source is already a "
            f"built {type(model).__name__}, so leave class_name out."
        )
    _check_against_model(model, config, None)
    name = type(model).__name__
    return LoadedModel(model, config, f"<{name} instance>", name, "given as a built instance")


def _load_example(name: str, class_name: str | None, override: ModelConfig | None) -> LoadedModel:
    from utils.examples import example_path, list_examples

    if name not in list_examples():
        raise LoadError(f"unknown example {name!r}; examples: {', '.join(list_examples())}.")
    return _load_folder(example_path(name), class_name, override, f"example:{name}")


def _is_gist(text: str) -> bool:
    return text.startswith("gist:") or bool(
        re.match(r"^(https?://)?gist\.(github|githubusercontent)\.com/", text)
    )


def _load_gist(
    text: str,
    class_name: str | None,
    override: ModelConfig | None,
    allow_gist: bool,
    cache_dir: str | Path | None,
) -> LoadedModel:
    from utils.gist import GistClient, parse_gist_source

    if not allow_gist:
        raise LoadError(
            f"{text!r} is a gist, and gist sources are turned off here (allow_gist=False, "
            "tbuilder --no-gist): a gist is code from the internet, and loading runs it. "
            "Leave the switch off (allow_gist=True) to load it."
        )
    ref, folder = GistClient(cache_dir=cache_dir).fetch(parse_gist_source(text))
    return _load_folder(folder, class_name, override, str(ref))


def _load_folder(
    folder: Path, class_name: str | None, override: ModelConfig | None, source: str
) -> LoadedModel:
    """The designer's export: model.py (or the folder's only .py file) and config.json."""
    py_files = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    if (folder / "model.py").is_file():
        model_file = folder / "model.py"
    elif len(py_files) == 1:
        model_file = py_files[0]
    elif not py_files:
        raise LoadError(
            f"{folder} holds no model.py; an export folder needs model.py and config.json."
        )
    else:
        names = ", ".join(p.name for p in py_files)
        raise LoadError(
            f"{folder} holds several .py files ({names}) and no model.py; "
            "pass the model's file itself instead of the folder."
        )
    return _load_py(model_file, _config_beside(model_file, override), class_name, source)


def _load_file(
    path: Path, class_name: str | None, override: ModelConfig | None, source: str
) -> LoadedModel:
    if path.suffix != ".py":
        raise LoadError(
            f"{path} is not a .py file; pass the model's .py file or the export folder "
            "that holds model.py and config.json."
        )
    return _load_py(path, _config_beside(path, override), class_name, source)


def _config_beside(model_file: Path, override: ModelConfig | None) -> ModelConfig:
    beside = model_file.parent / "config.json"
    if override is not None:
        if beside.is_file():
            log.info("Using the config given instead of %s", beside)
        return override
    if beside.is_file():
        return ModelConfig.from_file(beside)
    log.info("No config.json next to %s: sizes will come from the model itself", model_file)
    return ModelConfig()


def _load_py(path: Path, config: ModelConfig, class_name: str | None, source: str) -> LoadedModel:
    module = _import_file(path)
    target, name = _find_model(module, path, config, class_name)
    return _load_callable(target, name, config, path, source)


def _load_import(text: str, config: ModelConfig) -> LoadedModel:
    """`package.module:ClassName`: an importable class, factory or module-level instance."""
    module_name, _, attr = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise LoadError(
            f"cannot import {module_name!r} for {text!r}: module {exc.name!r} is not installed "
            "or not on the Python path (run from the folder that holds it, or pip install it)."
        ) from exc
    target = getattr(module, attr, None)
    if isinstance(target, nn.Module):
        return _load_instance(target, config, None)
    if target is None or not callable(target):
        raise LoadError(
            f"{module_name} has no class or factory named {attr!r}; "
            f"it defines: {_listing(_model_classes(module), _factories(module))}."
        )
    file = getattr(module, "__file__", None)
    return _load_callable(target, attr, config, Path(file) if file else None, text)


def _load_callable(
    target: Callable[..., Any], name: str, config: ModelConfig, path: Path | None, source: str
) -> LoadedModel:
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    model, how = _construct(target, name, config, module, path)
    _check_against_model(model, config, path)
    log.info("Built %s with %s", type(model).__name__, how)
    return LoadedModel(model, config, source, type(model).__name__, how, path)


# -- importing user code ------------------------------------------------------------------


def _import_file(path: Path) -> ModuleType:
    """Import `path` under a fresh module name, so loading an edited file again sees the
    edit, and sibling files it imports are re-read too."""
    name = f"tbuilder_model_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{next(_MODULE_IDS)}"
    _refuse_binary(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path} cannot be imported as Python; pass a .py file.")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent.resolve())
    shadowed = _shadowed_modules(path.parent.resolve())
    before = set(sys.modules)
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in the user's export folder
    sys.modules[name] = module  # dataclasses in the file look their module up here
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise _import_error(path, exc) from exc
    finally:
        sys.dont_write_bytecode = writes_bytecode
        sys.path.remove(folder)
        _forget_siblings(set(sys.modules) - before - {name}, folder)
        sys.modules.update(shadowed)
    return module


def _shadowed_modules(folder: Path) -> dict[str, ModuleType]:
    """Take out of sys.modules, for the import, the modules a file or package in `folder`
    shadows (an export's own `utils.py` beside `model.py`, where `utils` is this toolkit):
    the user's file must see its own. The caller puts them back afterwards."""
    own = {p.stem for p in folder.glob("*.py")} | {
        p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    }
    taken: dict[str, ModuleType] = {}
    for name in list(sys.modules):
        top = name.split(".")[0]
        module = sys.modules[name]
        file = getattr(module, "__file__", None)
        if top in own and not (file and Path(file).resolve().is_relative_to(folder)):
            taken[name] = sys.modules.pop(name)
    return taken


def _refuse_binary(path: Path) -> None:
    """A binary file (a checkpoint saved as model.py, a zip) is not a syntax error at line
    None: say what it is."""
    data = path.read_bytes()[:1 << 16]
    nul = data.find(b"\x00")
    if nul >= 0:
        raise LoadError(
            f"{path} is not Python source: it holds binary data (a NUL byte at offset {nul}). "
            "Export the model's code again, or point to the .py file."
        )


def _forget_siblings(names: set[str], folder: str) -> None:
    for name in names:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file and Path(file).resolve().is_relative_to(folder):
            del sys.modules[name]


def _import_error(path: Path, exc: BaseException) -> LoadError:
    if isinstance(exc, SystemExit):
        line = _user_line(exc, path)
        where = f"{path} line {line}" if line else str(path)
        return LoadError(
            f"{where} called sys.exit({exc.code!r}) while being imported, so nothing could be "
            "loaded. Put script code under `if __name__ == \"__main__\":`."
        )
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or path}:{exc.lineno}"
        code = (exc.text or "").strip()
        return LoadError(
            f"{where}: syntax error ({exc.msg}) in {code!r}. "
            "Fix that line (or re-export the model) and load it again."
        )
    line = _user_line(exc, path)
    where = f"{path} line {line}" if line else str(path)
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == __package__:
        return LoadError(
            f"{where} imports from {exc.name!r}, which here is the Transformer Builder toolkit's "
            f"own package ({exc}). If the file means a {exc.name}.py of its own, put it next to "
            f"{path.name}: files beside the model win while it is imported."
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        missing = exc.name.split(".")[0]
        return LoadError(
            f"{where} imports {missing} which is not installed: "
            f"pip install {_PIP_NAMES.get(missing, missing)} "
            f"(if {missing} is a file of your own, put {missing}.py next to {path.name})"
        )
    return LoadError(
        f"{where} raised {type(exc).__name__} while being imported: {exc}. "
        "Fix the module-level code there."
    )


def _user_line(exc: BaseException, path: Path) -> int | None:
    """The last line of `path` that the exception passed through (the user's own line)."""
    target = str(path.resolve())
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if str(Path(frame.filename).resolve()) == target
    ]
    return lines[-1] if lines else None


# -- finding the model class --------------------------------------------------------------


def _model_classes(module: ModuleType) -> dict[str, type]:
    """nn.Module subclasses defined in the module itself (not imported into it)."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, nn.Module)
        and obj.__module__ == module.__name__
    }


def _factories(module: ModuleType) -> list[str]:
    return [n for n in FACTORY_NAMES if inspect.isfunction(getattr(module, n, None))]


def _listing(classes: Mapping[str, type], factories: list[str]) -> str:
    names = list(classes) + [f"{f}()" for f in factories]
    return ", ".join(names) if names else "no nn.Module class and no factory"


def _find_model(
    module: ModuleType, path: Path, config: ModelConfig, class_name: str | None
) -> tuple[Callable[..., Any], str]:
    """The class named by the user, else by config.json, else the one class no other class
    uses (the top of the hierarchy), else a build_model()/create_model() factory."""
    classes, factories = _model_classes(module), _factories(module)
    if class_name:
        target = getattr(module, class_name, None)
        if (isinstance(target, type) and issubclass(target, nn.Module)) or inspect.isfunction(
            target
        ):
            return target, class_name
        raise LoadError(
            f"{path} has no model class or factory named {class_name!r}; "
            f"it defines: {_listing(classes, factories)}."
        )
    if config.model_name:
        target = getattr(module, config.model_name, None)
        if isinstance(target, type) and issubclass(target, nn.Module):
            return target, config.model_name
        log.warning(
            "%s names model_name %r, but %s defines no such nn.Module class; "
            "looking for the model class instead",
            config.where,
            config.model_name,
            path.name,
        )
    roots = _unused_classes(module, classes)
    if len(roots) == 1:
        return classes[roots[0]], roots[0]
    if factories:
        return getattr(module, factories[0]), f"{factories[0]}()"
    if not classes:
        raise LoadError(
            f"{path} defines no model: no nn.Module subclass and no build_model() or "
            "create_model() function. Define the model there (class MyModel(nn.Module)) "
            "or add build_model() returning it."
        )
    candidates = roots or list(classes)
    raise LoadError(
        f"{path} defines several model classes that no other class uses: "
        f"{', '.join(candidates)}. Choose one: tbuilder --class {candidates[0]} ..., "
        f'load_model(..., class_name={candidates[0]!r}), or "model_name" in config.json.'
    )


def _unused_classes(module: ModuleType, classes: Mapping[str, type]) -> list[str]:
    """Classes that no other class in the module's source mentions (as a base or inside)."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return list(classes)
    used: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in classes:
            mentioned = {
                sub.id if isinstance(sub, ast.Name) else sub.attr
                for sub in ast.walk(node)
                if isinstance(sub, (ast.Name, ast.Attribute))
            }
            used |= mentioned - {node.name}
    return [name for name in classes if name not in used]


# -- building it --------------------------------------------------------------------------


class ConfigNamespace(dict):
    """The config as one object with both `cfg.d_model` and `cfg["d_model"]`, for models
    whose constructor takes an untyped config object."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"the config has no field {name!r}; add it to config.json "
                f"(fields: {', '.join(self) or 'none'})"
            ) from None


def _lookup(values: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """The config value for constructor parameter `name`, under its name or an alias."""
    if name in values:
        return name, values[name]
    for group in _ALIASES:
        if name in group:
            for alias in group:
                if alias in values:
                    return alias, values[alias]
    return None


def _signature(target: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(target, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        return inspect.signature(target)


def _construct(
    target: Callable[..., Any],
    name: str,
    config: ModelConfig,
    module: ModuleType | None,
    path: Path | None,
) -> tuple[nn.Module, str]:
    """Build the model the way its constructor asks: a config object, keyword arguments
    from the config, or nothing at all (the designer hard-codes sizes)."""
    try:
        sig = _signature(target)
    except ValueError:
        return _call(target, name, "no arguments", path), "no-argument constructor"
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    values = config.flat()
    required = [p for p in params if p.default is p.empty]
    if len(required) == 1 and _lookup(values, required[0].name) is None:
        kind = _config_object_kind(required[0], module)
        if kind is not None:
            obj, how = _config_object(kind, values, config, name)
            return _call(target, name, how, path, obj), how
    args, kwargs, used = [], {}, []
    for p in params:
        hit = _lookup(values, p.name)
        if hit is None:
            if p.default is p.empty:
                raise _missing_argument(name, p.name, config)
            continue
        key, value = hit
        used.append(p.name if key == p.name else f"{p.name} (from {key})")
        if p.kind == p.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[p.name] = value
    how = (
        f"keyword arguments from {_config_label(config)}: {', '.join(used)}"
        if used
        else "no-argument constructor"
    )
    return _call(target, name, how, path, *args, **kwargs), how


def _config_label(config: ModelConfig) -> str:
    return config.path.name if config.path else "the config"


def _missing_argument(name: str, param: str, config: ModelConfig) -> LoadError:
    fields = ", ".join(sorted(config.flat())) or "none"
    return LoadError(
        f"{name} needs the constructor argument {param!r}, which {config.where} does not "
        f'provide (its fields: {fields}). Add "{param}": <value> to config.json, or pass '
        f"config={{'{param}': ...}} (tbuilder: --config FILE)."
    )


def _config_object_kind(param: inspect.Parameter, module: ModuleType | None) -> Any:
    """What to pass for a single config parameter: a dataclass or class to fill, `dict`,
    or ConfigNamespace; None when the parameter is not a config object."""
    annotation = param.annotation
    if isinstance(annotation, str) and module is not None:
        annotation = getattr(module, annotation, annotation)
    if annotation is inspect.Parameter.empty:
        if param.name in _CONFIG_PARAM_NAMES:
            return _config_class_in(module) or ConfigNamespace
        return None
    if annotation in (dict, Mapping) or typing.get_origin(annotation) in (dict, Mapping):
        return dict
    if isinstance(annotation, type) and annotation not in (int, float, str, bool, list, tuple):
        return annotation
    return None


def _config_class_in(module: ModuleType | None) -> type | None:
    """nanoGPT style: an untyped `config` parameter and one config dataclass in the file."""
    if module is None:
        return None
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == module.__name__
    ]
    named = [c for c in found if c.__name__.endswith("Config")]
    for group in (named, found):
        if len(group) == 1:
            return group[0]
    return None


def _config_object(
    kind: Any, values: dict[str, Any], config: ModelConfig, name: str
) -> tuple[Any, str]:
    if kind is dict:
        return {**config.raw, **values}, "a dict of the config's fields"
    if kind is ConfigNamespace:
        return (
            ConfigNamespace({**config.raw, **values}),
            "a config object holding the config's fields (attribute and key access)",
        )
    if dataclasses.is_dataclass(kind):
        kwargs = {}
        for f in dataclasses.fields(kind):
            hit = _lookup(values, f.name)
            if hit is not None and f.init:
                kwargs[f.name] = hit[1]
            elif (
                f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                raise _missing_argument(f"{name}'s {kind.__name__}", f.name, config)
    else:
        kwargs = {}
        for p in _signature(kind).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            hit = _lookup(values, p.name)
            if hit is not None:
                kwargs[p.name] = hit[1]
            elif p.default is p.empty:
                raise _missing_argument(f"{name}'s {kind.__name__}", p.name, config)
    obj = _call(kind, kind.__name__, "the config's fields", None, **kwargs)
    fields = ", ".join(kwargs) or "its defaults"
    return obj, f"a {kind.__name__} built from {_config_label(config)} ({fields})"


def _call(
    target: Callable[..., Any], name: str, how: str, path: Path | None, *args: Any, **kwargs: Any
) -> Any:
    try:
        return _checked_result(target(*args, **kwargs), name, target)
    except LoadError:
        raise
    except Exception as exc:
        line = _user_line(exc, path) if path else None
        where = f" at {path} line {line}" if line else ""
        raise LoadError(
            f"building {name} with {how} failed{where}: {type(exc).__name__}: {exc}"
        ) from exc


def _checked_result(obj: Any, name: str, target: Callable[..., Any]) -> Any:
    if inspect.isfunction(target) and not isinstance(obj, nn.Module):
        raise LoadError(
            f"{name} returned a {type(obj).__name__}, not an nn.Module; return the model."
        )
    return obj


# -- checking the config against the model ------------------------------------------------


def _token_embedding(model: nn.Module) -> tuple[str, nn.Embedding] | None:
    """The first nn.Embedding that is not a position or segment table."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and not _NOT_TOKEN_EMBEDDING.search(name):
            return name, module
    return None


def position_embedding(model: nn.Module) -> tuple[str, nn.Embedding] | None:
    """The first nn.Embedding named like a position table (`pos`, `wpe`)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and _POSITION_EMBEDDING.search(name):
            return name, module
    return None


def _check_against_model(model: nn.Module, config: ModelConfig, path: Path | None) -> None:
    """A config that disagrees with the built model would train the wrong thing quietly
    (a tokenizer sized from the config, ids past the embedding): refuse it now."""
    code = str(path) if path else "the model's code"
    token = _token_embedding(model)
    if config.vocab_size is not None and token is not None:
        name, emb = token
        if emb.num_embeddings != config.vocab_size:
            raise LoadError(
                f"{config.where} says vocab_size {config.vocab_size} "
                f"({config.found_at.get('vocab_size', 'vocab_size')}) but the model's token "
                f"embedding '{name}' (nn.Embedding) has {emb.num_embeddings} rows. Make them "
                f"agree: set vocab_size to {emb.num_embeddings} in the config, or build that "
                f"embedding with {config.vocab_size} rows in {code}."
            )
    position = position_embedding(model)
    if config.max_seq_len is not None and position is not None:
        name, emb = position
        if emb.num_embeddings < config.max_seq_len:
            raise LoadError(
                f"{config.where} says max_seq_len {config.max_seq_len} "
                f"({config.found_at.get('max_seq_len', 'max_seq_len')}) but the model's position "
                f"embedding '{name}' has only {emb.num_embeddings} rows, so longer inputs would "
                f"fail. Set max_seq_len to {emb.num_embeddings} in the config, or give that "
                f"embedding {config.max_seq_len} rows in {code}."
            )
