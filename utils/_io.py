"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from utils.errors import WriteError


def writable_target(path: str | os.PathLike) -> Path:
    """Check, before any work is done, that a file can be written at `path`: not a folder,
    and its nearest existing folder is a writable folder. Raises WriteError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(
            f"cannot write {path}: it is a folder; give a file name inside it, e.g. {path / 'report.json'}"
        )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise WriteError(f"cannot write {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"cannot write {path}: the folder {parent} is not writable; choose a folder you can write to")
    return path


def writable_folder(path: str | os.PathLike) -> Path:
    """Like `writable_target`, for a folder the output goes into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(
            f"cannot write into {path}: it is a file, not a folder; give a folder (it is created when missing)"
        )
    writable_target(path / ".probe")
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename over `path`.
    Raises WriteError (one line naming the path) when the file cannot be written."""
    path = Path(path)
    try:
        return _write(path, data)
    except WriteError:
        raise
    except OSError as exc:
        writable_target(path)  # the clearest reason, when it is one of the usual ones
        reason = exc.strerror or type(exc).__name__
        raise WriteError(f"cannot write {path}: {reason}; choose another path") from exc


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_cache_dir() -> Path:
    """$TBUILDER_CACHE_DIR, else ~/.cache/tbuilder: one place for every download and cache."""
    return Path(os.environ.get("TBUILDER_CACHE_DIR") or Path.home() / ".cache" / "tbuilder")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
