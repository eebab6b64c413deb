"""Load a model from any source into an `nn.Module` plus the `ModelConfig` that describes it.

Sources, in the order they are recognised:

    an nn.Module instance or class      used as given (a class is built from the config)
    "example:<name>"                    an export shipped in utils/examples
    "gist:<id>[@<revision>]", gist URL  fetched through GitHub's gist API (utils.loading.gist)
    a folder                            the designer's export: model.py + config.json
    a .py file                          a config.json beside it is used when present
    "package.module:ClassName"          an importable class or factory

Loading imports the user's code, so a gist's code runs only when the user names that gist.
Everything a user can get wrong becomes a `LoadError` whose message names the file, the
line or the field, and says what to do.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from utils.errors import LoadError
from utils.loading.config import CONFIG_FIELDS, ModelConfig, as_config
from utils.loading.consistency import _check_against_model
from utils.loading.construction import _construct
from utils.loading.discovery import _factories, _find_model, _listing, _model_classes
from utils.loading.importing import _import_file
from utils.vocabulary import (
    CONFIG_SEQ_LEN_KEYS,
    CONFIG_VOCAB_KEYS,
    token_embedding,
)

log = logging.getLogger(__name__)

_MODULE_CLASS = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


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
        token = token_embedding(model, by_name=True)
        found = {
            name: (len(value) if isinstance(value, list) else value)
            for name in CONFIG_FIELDS
            if (value := getattr(config, name)) is not None
        }
        standard = set(CONFIG_FIELDS) | set(CONFIG_VOCAB_KEYS) | set(CONFIG_SEQ_LEN_KEYS)
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
            "token_embedding": ({"name": token[0], "rows": token[1].num_embeddings} if token else None),
            "forward": f"forward{inspect.signature(model.forward)}",
            "config": {
                "path": str(config.path) if config.path else None,
                "found": found,
                "found_at": dict(config.found_at),
                "missing": config.missing,
                "other_fields": [k for k in config.raw if k not in standard],
            },
        }


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
    override = as_config(config)
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
    return text.startswith("gist:") or bool(re.match(r"^(https?://)?gist\.(github|githubusercontent)\.com/", text))


def _load_gist(
    text: str,
    class_name: str | None,
    override: ModelConfig | None,
    allow_gist: bool,
    cache_dir: str | Path | None,
) -> LoadedModel:
    from utils.loading.gist import GistClient, parse_gist_source

    if not allow_gist:
        raise LoadError(
            f"{text!r} is a gist, and gist sources are turned off here (allow_gist=False, "
            "tbuilder --no-gist): a gist is code from the internet, and loading runs it. "
            "Leave the switch off (allow_gist=True) to load it."
        )
    ref, folder = GistClient(cache_dir=cache_dir).fetch(parse_gist_source(text))
    return _load_folder(folder, class_name, override, str(ref))


def _load_folder(folder: Path, class_name: str | None, override: ModelConfig | None, source: str) -> LoadedModel:
    """The designer's export: model.py (or the folder's only .py file) and config.json."""
    py_files = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    if (folder / "model.py").is_file():
        model_file = folder / "model.py"
    elif len(py_files) == 1:
        model_file = py_files[0]
    elif not py_files:
        raise LoadError(f"{folder} holds no model.py; an export folder needs model.py and config.json.")
    else:
        names = ", ".join(p.name for p in py_files)
        raise LoadError(
            f"{folder} holds several .py files ({names}) and no model.py; "
            "pass the model's file itself instead of the folder."
        )
    return _load_py(model_file, _config_beside(model_file, override), class_name, source)


def _load_file(path: Path, class_name: str | None, override: ModelConfig | None, source: str) -> LoadedModel:
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
