"""Building the model the way its constructor asks: no arguments, keyword arguments from
the config, a config dataclass, a config object or a dict."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from utils.errors import LoadError
from utils.loading.config import ModelConfig
from utils.loading.importing import _user_line
from utils.vocabulary import (
    SEQ_LEN_NAMES,
    VOCAB_SIZE_NAMES,
)

# Constructor parameters go by many names for the same size; a config field under any name
# of a group can fill a parameter under any other name of that group.
_ALIASES = (
    VOCAB_SIZE_NAMES,
    SEQ_LEN_NAMES,
    ("d_model", "n_embd", "hidden_size", "embed_dim", "dim", "emb_dim"),
    ("num_heads", "n_head", "nhead", "n_heads", "num_attention_heads"),
    ("num_layers", "n_layer", "n_layers", "num_hidden_layers", "depth"),
    ("d_ff", "dim_feedforward", "intermediate_size", "ffn_dim", "d_hidden"),
    ("dropout", "dropout_rate", "p_dropout", "hidden_dropout_prob"),
)


# A single required constructor parameter with one of these names and no annotation is a
# config object (nanoGPT's `GPT(config)`), not a size.
_CONFIG_PARAM_NAMES = ("config", "cfg", "conf", "args", "hparams", "model_config", "model_args")


class ConfigNamespace(dict):
    """The config as one object with both `cfg.d_model` and `cfg["d_model"]`, for models
    whose constructor takes an untyped config object."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"the config has no field {name!r}; add it to config.json (fields: {', '.join(self) or 'none'})"
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
    how = f"keyword arguments from {_config_label(config)}: {', '.join(used)}" if used else "no-argument constructor"
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
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
    ]
    named = [c for c in found if c.__name__.endswith("Config")]
    for group in (named, found):
        if len(group) == 1:
            return group[0]
    return None


def _config_object(kind: Any, values: dict[str, Any], config: ModelConfig, name: str) -> tuple[Any, str]:
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
            elif f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
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


def _call(target: Callable[..., Any], name: str, how: str, path: Path | None, *args: Any, **kwargs: Any) -> Any:
    try:
        return _checked_result(target(*args, **kwargs), name, target)
    except LoadError:
        raise
    except Exception as exc:
        line = _user_line(exc, path) if path else None
        where = f" at {path} line {line}" if line else ""
        raise LoadError(f"building {name} with {how} failed{where}: {type(exc).__name__}: {exc}") from exc


def _checked_result(obj: Any, name: str, target: Callable[..., Any]) -> Any:
    if inspect.isfunction(target) and not isinstance(obj, nn.Module):
        raise LoadError(f"{name} returned a {type(obj).__name__}, not an nn.Module; return the model.")
    return obj
