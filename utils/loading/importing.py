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


_TOOLKIT = __name__.split(".")[0]  # "utils": the name an export's own helper file often has


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
    data = path.read_bytes()[: 1 << 16]
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
            'loaded. Put script code under `if __name__ == "__main__":`.'
        )
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or path}:{exc.lineno}"
        code = (exc.text or "").strip()
        return LoadError(
            f"{where}: syntax error ({exc.msg}) in {code!r}. Fix that line (or re-export the model) and load it again."
        )
    line = _user_line(exc, path)
    where = f"{path} line {line}" if line else str(path)
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == _TOOLKIT:
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
        f"{where} raised {type(exc).__name__} while being imported: {exc}. Fix the module-level code there."
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
