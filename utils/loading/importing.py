"""Importing user code: a model file runs as its own module, and its import errors name the user's line."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType

from utils.errors import LoadError

_PIP_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml", "cv2": "opencv-python", "PIL": "pillow"}


_MODULE_IDS = itertools.count()


def _import_file(path: Path) -> ModuleType:
    """Import `path` under a fresh module name, so loading an edited file again sees the
    edit, and sibling files it imports are re-read too."""
    name = f"tbuilder_model_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{next(_MODULE_IDS)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path} cannot be imported as Python; pass a .py file.")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent.resolve())
    before = set(sys.modules)
    sys.modules[name] = module  # dataclasses in the file look their module up here
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _import_error(path, exc) from exc
    finally:
        sys.path.remove(folder)
        _forget_siblings(set(sys.modules) - before - {name}, folder)
    return module


def _forget_siblings(names: set[str], folder: str) -> None:
    for name in names:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file and Path(file).resolve().is_relative_to(folder):
            del sys.modules[name]


def _import_error(path: Path, exc: Exception) -> LoadError:
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or path}:{exc.lineno}"
        code = (exc.text or "").strip()
        return LoadError(
            f"{where}: syntax error ({exc.msg}) in {code!r}. "
            "Fix that line (or re-export the model) and load it again."
        )
    line = _user_line(exc, path)
    where = f"{path} line {line}" if line else str(path)
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
