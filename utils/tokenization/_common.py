"""Pieces every tokenizer strategy shares: default special tokens, the cache folder, atomic
saving of a Hugging Face tokenizer folder, content fingerprints for caching, and a quick
answer to "can the Hugging Face Hub be used?" (so nothing hangs offline)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import socket
import tempfile
import threading
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from utils._io import atomic_write_bytes

DEFAULT_SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "mask_token": "<mask>",
}
SPECIAL_ROLES = tuple(DEFAULT_SPECIAL_TOKENS)
HUB_PROBE_TIMEOUT_S = 3.0


def save_tokenizer(tokenizer: Any, directory: str | os.PathLike) -> Path:
    """`save_pretrained` with every file written atomically: the library writes into a
    scratch folder beside `directory`, then each file is renamed into place."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tokenizer.save_pretrained(str(scratch))
        for path in sorted(scratch.rglob("*")):
            if path.is_file():
                atomic_write_bytes(directory / path.relative_to(scratch), path.read_bytes())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


def hash_texts(texts: Iterable[str], batch: int = 4096) -> str:
    """sha256 over the texts and their lengths, so ["ab", "c"] and ["a", "bc"] differ;
    batched (one join and one encode per 4096 texts) to cost little beside tokenising."""
    h = hashlib.sha256()
    iterator = iter(texts)
    while group := list(itertools.islice(iterator, batch)):
        h.update(array("q", map(len, group)).tobytes())
        h.update("".join(group).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def hash_files(paths: Iterable[str | os.PathLike], chunk: int = 1 << 22) -> str:
    """sha256 over the files' contents in order, read in 4 MB chunks (any file size)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            h.update(os.fstat(f.fileno()).st_size.to_bytes(8, "little"))
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


def hash_settings(**settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest that changes whenever the tokenizer would produce different ids: the Rust
    tokenizer's full JSON for fast tokenizers, else the vocabulary and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:
        body = json.dumps(
            [
                type(tokenizer).__name__,
                sorted(tokenizer.get_vocab().items()),
                tokenizer.special_tokens_map,
                getattr(tokenizer, "byte_fallback", None),
            ],
            ensure_ascii=False,
            default=str,
        )
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def hub_offline_reason() -> str:
    """'' when the Hugging Face Hub can be reached, else one line saying why not.

    Checked before any download: an unreachable hub otherwise costs a minute of retries.
    """
    import huggingface_hub.constants as hub

    if offline_mode():
        return "offline mode is on (HF_HUB_OFFLINE)"
    url = urlparse(hub.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    error = _probe(host, port, HUB_PROBE_TIMEOUT_S)
    return f"{host}:{port} cannot be reached ({error})" if error else ""


def offline_mode() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline (their local
    caches still work then)."""
    import huggingface_hub.constants as hub

    return bool(hub.HF_HUB_OFFLINE) or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _probe(host: str, port: int, timeout: float) -> str:
    """Resolve and connect within `timeout` seconds in all (DNS lookups ignore socket
    timeouts, so the attempt runs in a daemon thread); '' on success, else the error."""
    outcome: list[str] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append("")
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:.0f} s"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
