"""Where an exception came from, in the user's code: the line a person should open.

A traceback through torch and the toolkit is forty lines a model designer cannot use; the
one line that matters is the deepest frame outside both, usually in their `model.py`.
"""

from __future__ import annotations

import sys
import sysconfig
import traceback
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)
_LIBRARIES = tuple({sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")} | {sys.prefix})


def _is_user_file(filename: str) -> bool:
    path = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    if path.startswith("<") or path.startswith(_PACKAGE + "/") and "/examples/" not in path:
        return False
    return not path.startswith(_LIBRARIES)


def user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The deepest frame of `exc`'s traceback that is neither the toolkit nor an installed
    library, or None when there is none."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename)]
    return frames[-1] if frames else None


def file_line(frame: traceback.FrameSummary) -> str:
    """`model.py:42`: what a person types into their editor's go-to-line."""
    return f"{Path(frame.filename).name}:{frame.lineno}"


def raised_at(exc: BaseException) -> str | None:
    """`model.py:42 in forward: <source line>` for the user's frame of `exc`, or None."""
    f = user_frame(exc)
    if f is None:
        return None
    where = f"{file_line(f)} in {f.name}"
    return f"{where}: {f.line.strip()}" if f.line else where


def describe(exc: BaseException) -> str:
    """`RuntimeError: boom (model.py:42 in forward: raise ...)`: the exception's own text and
    the user's line that raised it."""
    at = raised_at(exc)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} (raised at {at})" if at else text
