"""Finding the model class in user code: the config's model_name, else the one nn.Module
no other class uses, else a build_model() / create_model() factory."""

from __future__ import annotations

import ast
import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from utils.errors import LoadError
from utils.loading.config import ModelConfig

log = logging.getLogger(__name__)

FACTORY_NAMES = ("build_model", "create_model")


def _model_classes(module: ModuleType) -> dict[str, type]:
    """nn.Module subclasses defined in the module itself (not imported into it)."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
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
        if (isinstance(target, type) and issubclass(target, nn.Module)) or inspect.isfunction(target):
            return target, class_name
        raise LoadError(
            f"{path} has no model class or factory named {class_name!r}; it defines: {_listing(classes, factories)}."
        )
    if config.model_name:
        target = getattr(module, config.model_name, None)
        if isinstance(target, type) and issubclass(target, nn.Module):
            return target, config.model_name
        log.warning(
            "%s names model_name %r, but %s defines no such nn.Module class; looking for the model class instead",
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
