"""Fetch a model export from a GitHub gist: GitHub's gist API, checked, cached by revision.

A gist is someone else's code, so nothing here runs it: `GistClient.fetch` only writes the
gist's files into a cache folder; `load_model` imports them because the user named the gist.

The API base comes from $TBUILDER_GIST_API (default https://api.github.com), so a local
server can stand in for GitHub; $GITHUB_TOKEN, when set, lifts the anonymous rate limit.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from utils._io import atomic_write_text, default_cache_dir
from utils.errors import GistError

log = logging.getLogger(__name__)

DEFAULT_API = "https://api.github.com"
API_ENV = "TBUILDER_GIST_API"
TOKEN_ENV = "GITHUB_TOKEN"

_GIST_ID = re.compile(r"^(?:[0-9a-f]{20,32}|[0-9]{1,12})$")
_REVISION = re.compile(r"^[0-9a-f]{40}$")
_FORBIDDEN_IN_NAME = re.compile(r"[/\\:\x00]")


@dataclass(frozen=True)
class GistRef:
    """A gist id and, when pinned, the revision (a 40-hex commit of the gist)."""

    id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"gist:{self.id}@{self.revision}" if self.revision else f"gist:{self.id}"


def parse_gist_source(text: str) -> GistRef:
    """`gist:<id>`, `gist:<id>@<revision>` or a gist URL (gist.github.com/<user>/<id>[/<rev>],
    gist.githubusercontent.com/<user>/<id>/raw/<rev>/<file>) -> GistRef, validated."""
    if text.startswith("gist:"):
        ident, _, revision = text.removeprefix("gist:").partition("@")
        return _checked_ref(ident, revision or None, text)
    url = text if "://" in text else f"https://{text}"
    parts = [p.removesuffix(".git") for p in urllib.parse.urlsplit(url).path.split("/") if p]
    parts = [p for p in parts if p != "raw"]  # <user>/<id>[/raw][/<revision>][/<file>]
    owner_given = not (
        parts and _GIST_ID.match(parts[0].lower()) and (len(parts) == 1 or _REVISION.match(parts[1].lower()))
    )
    start = 1 if owner_given else 0
    if len(parts) <= start:
        raise GistError(
            f"{text!r} holds no gist id. Use the gist's URL (https://gist.github.com/<user>/<id>), "
            "gist:<id> or gist:<id>@<revision>."
        )
    after = parts[start + 1] if len(parts) > start + 1 else ""
    revision = after if _REVISION.match(after.lower()) else None
    return _checked_ref(parts[start], revision, text)


def _checked_ref(ident: str, revision: str | None, text: str) -> GistRef:
    ident = ident.strip().lower()
    if not _GIST_ID.match(ident):
        raise GistError(
            f"{ident!r} (from {text!r}) is not a gist id: a gist id is 20 to 32 hexadecimal "
            "characters, the last part of the gist's URL. Use gist:<id> or gist:<id>@<revision>."
        )
    if revision is not None:
        revision = revision.strip().lower()
        if not _REVISION.match(revision):
            raise GistError(
                f"{revision!r} (from {text!r}) is not a gist revision: a revision is the "
                "40-hexadecimal commit shown in the gist's Revisions tab."
            )
    return GistRef(ident, revision)


@dataclass
class GistClient:
    """Downloads gists through the API with a timeout, retries rate limits and server
    errors with backoff, and keeps each revision on disk so a pinned one is fetched once."""

    api_base: str | None = None
    cache_dir: str | Path | None = None
    timeout: float = 20.0
    max_retries: int = 3
    backoff: float = 1.0  # seconds before the first retry when the server names no wait
    max_wait: float = 60.0  # a rate limit asking for longer than this is reported, not waited
    max_file_bytes: int = 1_000_000
    max_response_bytes: int = 10_000_000

    @property
    def api(self) -> str:
        return (self.api_base or os.environ.get(API_ENV) or DEFAULT_API).rstrip("/")

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir or default_cache_dir()) / "gists"

    def fetch(self, ref: GistRef) -> tuple[GistRef, Path]:
        """The gist's files in a local folder, and the ref pinned to the revision fetched."""
        folder = self.cache_root / ref.id
        if ref.revision and (folder / ref.revision).is_dir():
            log.info("Using %s from the cache at %s", ref, folder / ref.revision)
            return ref, folder / ref.revision
        url = f"{self.api}/gists/{ref.id}" + (f"/{ref.revision}" if ref.revision else "")
        data = self._get_json(url, ref)
        pinned = GistRef(ref.id, ref.revision or _latest_revision(data, ref))
        target = folder / str(pinned.revision)
        if target.is_dir():
            log.info("Using %s from the cache at %s", pinned, target)
            return pinned, target
        files = _checked_files(data, ref, self.max_file_bytes)
        log.info("Fetched %s (%s)", pinned, ", ".join(files))
        return pinned, _store(files, target)

    def cached_revisions(self, gist_id: str) -> list[str]:
        folder = self.cache_root / gist_id
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and _REVISION.match(p.name))

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "tbuilder",
        }
        if os.environ.get(TOKEN_ENV):
            headers["Authorization"] = f"Bearer {os.environ[TOKEN_ENV]}"
        return headers

    def _get_json(self, url: str, ref: GistRef) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                request = urllib.request.Request(url, headers=self._headers())
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read(self.max_response_bytes + 1)
            except urllib.error.HTTPError as exc:
                wait = self._retry_wait(exc, attempt)
                if wait is None or attempt == self.max_retries or wait > self.max_wait:
                    raise self._http_error(exc, ref, url, attempt + 1, wait) from exc
                log.warning(
                    "GitHub answered HTTP %d for %s; retrying in %.1f s (retry %d of %d)",
                    exc.code,
                    ref,
                    wait,
                    attempt + 1,
                    self.max_retries,
                )
                time.sleep(wait)
                attempt += 1
                continue
            except (urllib.error.URLError, OSError) as exc:
                raise self._offline_error(exc, ref, url) from exc
            if len(body) > self.max_response_bytes:
                raise GistError(
                    f"the API's answer for {ref} is larger than {self.max_response_bytes} bytes; "
                    "refusing it. Clone the gist (git clone https://gist.github.com/"
                    f"{ref.id}.git) and load the folder instead."
                )
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise GistError(f"{url} did not answer with JSON; is {API_ENV} right?") from exc
            if not isinstance(data, dict):
                raise GistError(f"{url} answered with a {type(data).__name__}, not a gist object.")
            return data

    def _retry_wait(self, exc: urllib.error.HTTPError, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when retrying cannot help."""
        headers = exc.headers
        limited = exc.code == 429 or (
            exc.code == 403 and (headers.get("Retry-After") is not None or headers.get("X-RateLimit-Remaining") == "0")
        )
        if limited:
            wait = _retry_after(headers)
            if wait is None and headers.get("X-RateLimit-Reset", "").isdigit():
                wait = int(headers["X-RateLimit-Reset"]) - time.time()
            return max(0.0, wait if wait is not None else self.backoff * 2**attempt)
        if exc.code >= 500:
            return self.backoff * 2**attempt
        return None

    def _http_error(
        self, exc: urllib.error.HTTPError, ref: GistRef, url: str, tries: int, wait: float | None
    ) -> GistError:
        clone = f"git clone https://gist.github.com/{ref.id}.git"
        if exc.code == 404:
            what = f"revision {ref.revision} of gist {ref.id}" if ref.revision else f"gist {ref.id}"
            return GistError(
                f"{what} was not found (HTTP 404 from {url}). Check the id (the last part of "
                "the gist's URL) and the revision; a deleted gist cannot be loaded."
            )
        if wait is not None and exc.code in (403, 429):
            return GistError(
                f"GitHub's rate limit stopped the download of {ref} (HTTP {exc.code} after "
                f"{tries} tries; it asks to wait {wait:.0f} s). Try again later, set "
                f"{TOKEN_ENV} to a personal access token for a higher limit, or {clone} "
                "and load the folder."
            )
        if exc.code == 401:
            return GistError(f"GitHub refused the credentials in {TOKEN_ENV} (HTTP 401); fix or unset it.")
        return GistError(
            f"GitHub answered HTTP {exc.code} ({_api_message(exc)}) for {ref} after {tries} "
            f"tries. Try again later, or {clone} and load the folder."
        )

    def _offline_error(self, exc: Exception, ref: GistRef, url: str) -> GistError:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlsplit(url).netloc
        cached = self.cached_revisions(ref.id)
        hint = f" Cached revisions work offline: {', '.join(f'gist:{ref.id}@{r}' for r in cached)}." if cached else ""
        return GistError(
            f"could not reach {host} to download {ref}: {reason}. Check the network "
            f"connection (and {API_ENV} if set), or clone the gist elsewhere "
            f"(git clone https://gist.github.com/{ref.id}.git) and load the folder.{hint}"
        )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds: either a number of seconds or an HTTP date."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return (email.utils.parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
    except (TypeError, ValueError):
        return None


def _api_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read(4096)).get("message", exc.reason))
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)


def _latest_revision(data: dict[str, Any], ref: GistRef) -> str:
    history = data.get("history")
    latest = history[0] if isinstance(history, list) and history else None
    version = latest.get("version") if isinstance(latest, dict) else None
    if not isinstance(version, str) or not _REVISION.match(version):
        raise GistError(
            f"the API's answer for {ref} names no revision (history[0].version); "
            f"pin one instead: gist:{ref.id}@<revision>."
        )
    return version


def _checked_files(data: dict[str, Any], ref: GistRef, max_bytes: int) -> dict[str, str]:
    """The gist's files by name, refusing paths, truncated and oversized files."""
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise GistError(f"{ref} holds no files.")
    clone = f"git clone https://gist.github.com/{ref.id}.git"
    out: dict[str, str] = {}
    for key, entry in files.items():
        entry = entry if isinstance(entry, dict) else {}
        name = entry.get("filename", key)
        if not isinstance(name, str) or not _is_plain_name(name):
            raise GistError(f"{ref} holds a file named {name!r}, which is not a plain file name; refusing to write it.")
        content = entry.get("content")
        if entry.get("truncated") or not isinstance(content, str):
            raise GistError(
                f"{name} in {ref} came truncated from the API (it sends at most 1 MB of a "
                f"file); refusing a partial file. {clone} and load the folder instead."
            )
        size = len(content.encode("utf-8"))
        declared = entry.get("size")
        if size > max_bytes or (isinstance(declared, int) and declared > max_bytes):
            raise GistError(
                f"{name} in {ref} is {max(size, declared or 0)} bytes, over the "
                f"{max_bytes}-byte limit for a model file; refusing it."
            )
        if isinstance(declared, int) and declared != size:
            raise GistError(
                f"{name} in {ref} should be {declared} bytes but {size} arrived (truncated); "
                f"refusing a partial file. {clone} and load the folder instead."
            )
        out[name] = content
    if not any(name.endswith(".py") for name in out):
        raise GistError(f"{ref} holds no .py file ({', '.join(out)}); a model gist needs model.py (and config.json).")
    return out


def _is_plain_name(name: str) -> bool:
    return 0 < len(name) <= 255 and not name.startswith(".") and not _FORBIDDEN_IN_NAME.search(name)


def _store(files: dict[str, str], target: Path) -> Path:
    """Write all files into a temporary folder, then rename it into place: a cached
    revision folder is complete or absent, never half-written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, content in files.items():
            atomic_write_text(staging / name, content)
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if target.is_dir():  # another process stored the same revision first
            return target
        raise
    return target
