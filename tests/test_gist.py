"""Gist loading against a real HTTP server on 127.0.0.1 standing in for GitHub's API:
parsing ids and URLs, caching by revision, rate limits, refusals and offline errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from utils.loading import LoadError, load_model
from utils.loading.gist import GistClient, GistError, GistRef, parse_gist_source

GIST_ID = "aa5a315d61ae9438b18d"
REV_OLD = "1" * 40
REV_NEW = "b" * 40

MODEL_PY = """\
import torch.nn as nn


class GistNet(nn.Module):
    def __init__(self, vocab_size, d_model):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.tok(input_ids))
"""
CONFIG = json.dumps({"model_name": "GistNet", "vocab_size": 30, "d_model": 6})


def gist_file(name: str, content: str, **overrides) -> dict:
    entry = {
        "filename": name,
        "size": len(content.encode()),
        "truncated": False,
        "content": content,
    }
    return {**entry, **overrides}


def gist_body(revision: str = REV_NEW, files: dict | None = None) -> dict:
    files = files or {
        "model.py": gist_file("model.py", MODEL_PY),
        "config.json": gist_file("config.json", CONFIG),
    }
    return {"id": GIST_ID, "files": files, "history": [{"version": revision}]}


class FakeGitHub:
    """Routes GET paths to queued responses (status, headers, body); the last one repeats."""

    def __init__(self) -> None:
        self.routes: dict[str, list[tuple[int, dict, bytes, float]]] = {}
        self.requests: list[tuple[str, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, dict(self.headers)))
                queue = owner.routes.get(self.path) or [(404, {}, b'{"message": "Not Found"}', 0.0)]
                status, headers, body, delay = queue.pop(0) if len(queue) > 1 else queue[0]
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (the timeout test)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def add(self, path: str, *responses) -> None:
        """Each response: a dict body (200), or (status, headers, body[, delay])."""
        queue = []
        for r in responses:
            if isinstance(r, dict):
                r = (200, {}, r)
            status, headers, body, *delay = r
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            queue.append((status, headers, raw, delay[0] if delay else 0.0))
        self.routes[path] = queue

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def github(monkeypatch):
    server = FakeGitHub()
    monkeypatch.setenv("TBUILDER_GIST_API", server.url)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    yield server
    server.stop()


def client(tmp_path: Path, **options) -> GistClient:
    return GistClient(cache_dir=tmp_path / "cache", **{"backoff": 0.01, **options})


# -- ids and URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        (f"gist:{GIST_ID}", GistRef(GIST_ID)),
        (f"gist:{GIST_ID.upper()}@{REV_NEW}", GistRef(GIST_ID, REV_NEW)),
        (f"https://gist.github.com/someone/{GIST_ID}", GistRef(GIST_ID)),
        (f"https://gist.github.com/someone/{GIST_ID}#file-model-py", GistRef(GIST_ID)),
        (f"gist.github.com/{GIST_ID}", GistRef(GIST_ID)),
        (f"https://gist.github.com/1234/{GIST_ID}/{REV_OLD}", GistRef(GIST_ID, REV_OLD)),
        (f"https://gist.github.com/someone/{GIST_ID}.git", GistRef(GIST_ID)),
        (
            f"https://gist.githubusercontent.com/someone/{GIST_ID}/raw/{REV_OLD}/model.py",
            GistRef(GIST_ID, REV_OLD),
        ),
    ],
)
def test_parse_gist_sources(text, ref):
    assert parse_gist_source(text) == ref


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "gist:not-an-id",
            r"'not-an-id' \(from 'gist:not-an-id'\) is not a gist id: a gist id is 20 to 32 hexadecimal",
        ),
        ("gist:../../etc", r"is not a gist id"),
        (
            f"gist:{GIST_ID}@main",
            r"'main' \(from .*\) is not a gist revision: a revision is the 40-hexadecimal",
        ),
        ("https://gist.github.com/", r"holds no gist id. Use the gist's URL"),
    ],
)
def test_invalid_gist_sources(text, message):
    with pytest.raises(GistError, match=message):
        parse_gist_source(text)


# -- fetching and caching -----------------------------------------------------------------


def test_load_model_from_a_gist_then_from_the_cache_offline(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", gist_body())
    cache = tmp_path / "cache"
    loaded = load_model(f"gist:{GIST_ID}", cache_dir=cache)
    assert loaded.class_name == "GistNet" and loaded.config.vocab_size == 30
    assert loaded.source == f"gist:{GIST_ID}@{REV_NEW}"
    folder = cache / "gists" / GIST_ID / REV_NEW
    assert loaded.path == folder / "model.py"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.py"]
    assert (folder / "model.py").read_text() == MODEL_PY
    github.stop()  # offline from here: a pinned revision comes from the cache
    again = load_model(f"gist:{GIST_ID}@{REV_NEW}", cache_dir=cache)
    assert again.class_name == "GistNet"
    assert github.paths() == [f"/gists/{GIST_ID}"]


def test_pinned_revision_asks_for_that_revision(github, tmp_path):
    github.add(f"/gists/{GIST_ID}/{REV_OLD}", gist_body(REV_OLD))
    ref, folder = client(tmp_path).fetch(GistRef(GIST_ID, REV_OLD))
    assert ref == GistRef(GIST_ID, REV_OLD) and folder.name == REV_OLD
    assert github.paths() == [f"/gists/{GIST_ID}/{REV_OLD}"]


def test_gist_url_source(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", gist_body())
    loaded = load_model(f"https://gist.github.com/someone/{GIST_ID}", cache_dir=tmp_path)
    assert loaded.source == f"gist:{GIST_ID}@{REV_NEW}"


def test_latest_revision_already_cached_is_not_rewritten(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", gist_body())
    gists = client(tmp_path)
    _, folder = gists.fetch(GistRef(GIST_ID))
    (folder / "model.py").write_text("# kept\n")
    _, again = gists.fetch(GistRef(GIST_ID))
    assert again == folder and (folder / "model.py").read_text() == "# kept\n"
    assert len(github.requests) == 2  # unpinned: always asks which revision is the latest


def test_fetching_does_not_run_the_code(github, tmp_path):
    hostile = "raise SystemExit('this must only run when loaded')\n"
    github.add(f"/gists/{GIST_ID}", gist_body(files={"model.py": gist_file("model.py", hostile)}))
    _, folder = client(tmp_path).fetch(GistRef(GIST_ID))
    assert (folder / "model.py").read_text() == hostile


def test_gists_can_be_turned_off(github, tmp_path):
    with pytest.raises(LoadError, match=r"gist sources are turned off here \(allow_gist=False, tbuilder --no-gist\)"):
        load_model(f"gist:{GIST_ID}", allow_gist=False, cache_dir=tmp_path)
    assert github.requests == []


def test_token_is_sent_when_set(github, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "test-token-123")
    github.add(f"/gists/{GIST_ID}", gist_body())
    client(tmp_path).fetch(GistRef(GIST_ID))
    headers = github.requests[0][1]
    assert headers["Authorization"] == "Bearer test-token-123"
    assert headers["User-Agent"] == "tbuilder"


# -- rate limits and retries --------------------------------------------------------------


def test_rate_limit_honours_retry_after(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", (429, {"Retry-After": "1"}, {"message": "slow down"}), gist_body())
    start = time.monotonic()
    ref, _ = client(tmp_path).fetch(GistRef(GIST_ID))
    assert time.monotonic() - start >= 1.0
    assert ref.revision == REV_NEW and len(github.requests) == 2


def test_rate_limit_403_with_reset_time_is_retried(github, tmp_path):
    reset = str(int(time.time()))  # already passed: retry at once
    github.add(
        f"/gists/{GIST_ID}",
        (
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
            {"message": "API rate limit exceeded"},
        ),
        gist_body(),
    )
    client(tmp_path).fetch(GistRef(GIST_ID))
    assert len(github.requests) == 2


def test_rate_limit_that_does_not_clear(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", (429, {"Retry-After": "0"}, {"message": "slow down"}))
    with pytest.raises(GistError) as err:
        client(tmp_path, max_retries=2).fetch(GistRef(GIST_ID))
    assert len(github.requests) == 3
    message = str(err.value)
    assert f"GitHub's rate limit stopped the download of gist:{GIST_ID} (HTTP 429 after 3 tries" in message
    assert "GITHUB_TOKEN" in message and f"git clone https://gist.github.com/{GIST_ID}.git" in message


def test_rate_limit_asking_for_too_long_a_wait_is_reported_at_once(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", (403, {"Retry-After": "3600"}, {"message": "rate limited"}))
    with pytest.raises(GistError, match="it asks to wait 3600 s"):
        client(tmp_path, max_wait=5).fetch(GistRef(GIST_ID))
    assert len(github.requests) == 1


def test_plain_403_is_not_retried(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", (403, {}, {"message": "Resource not accessible"}))
    with pytest.raises(GistError, match=r"GitHub answered HTTP 403 \(Resource not accessible\)"):
        client(tmp_path).fetch(GistRef(GIST_ID))
    assert len(github.requests) == 1


def test_server_error_is_retried_with_backoff(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", (502, {}, b"bad gateway"), gist_body())
    client(tmp_path).fetch(GistRef(GIST_ID))
    assert len(github.requests) == 2


# -- one clear error ----------------------------------------------------------------------


def test_not_found(github, tmp_path):
    with pytest.raises(GistError, match=rf"gist {GIST_ID} was not found \(HTTP 404 from .*\)\. Check the id"):
        load_model(f"gist:{GIST_ID}", cache_dir=tmp_path)
    with pytest.raises(GistError, match=rf"revision {REV_OLD} of gist {GIST_ID} was not found"):
        load_model(f"gist:{GIST_ID}@{REV_OLD}", cache_dir=tmp_path)


def test_offline(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TBUILDER_GIST_API", f"http://127.0.0.1:{port}")
    cached = tmp_path / "gists" / GIST_ID / REV_OLD
    cached.mkdir(parents=True)
    with pytest.raises(GistError) as err:
        load_model(f"gist:{GIST_ID}", cache_dir=tmp_path)
    message = str(err.value)
    assert f"could not reach 127.0.0.1:{port} to download gist:{GIST_ID}" in message
    assert "Check the network connection" in message
    assert f"Cached revisions work offline: gist:{GIST_ID}@{REV_OLD}" in message


def test_timeout(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", (200, {}, gist_body(), 1.5))
    with pytest.raises(GistError, match="could not reach .*timed out"):
        client(tmp_path, timeout=0.3).fetch(GistRef(GIST_ID))


def test_answer_that_is_not_json(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", (200, {}, b"<html>proxy login</html>"))
    with pytest.raises(GistError, match="did not answer with JSON; is TBUILDER_GIST_API right"):
        client(tmp_path).fetch(GistRef(GIST_ID))


def test_answer_too_large(github, tmp_path):
    github.add(f"/gists/{GIST_ID}", gist_body())
    with pytest.raises(GistError, match="larger than 100 bytes; refusing it"):
        client(tmp_path, max_response_bytes=100).fetch(GistRef(GIST_ID))


# -- refusing files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"model.py": gist_file("model.py", MODEL_PY[:50], truncated=True)},
            r"model\.py in gist:.* came truncated",
        ),
        (
            {"model.py": {"filename": "model.py", "size": 5_000_000, "truncated": False}},
            "came truncated",
        ),
        (
            {"model.py": gist_file("model.py", MODEL_PY, size=len(MODEL_PY) + 10)},
            r"should be \d+ bytes but \d+ arrived",
        ),
        (
            {"model.py": gist_file("model.py", "x = 1\n" * 400)},
            r"is 2400 bytes, over the 1000-byte limit",
        ),
        (
            {"evil": gist_file("../model.py", MODEL_PY)},
            r"a file named '\.\./model\.py', which is not a plain file name",
        ),
        ({"evil": gist_file("sub/model.py", MODEL_PY)}, "not a plain file name"),
        ({"evil": gist_file(".bashrc", "echo hi")}, "not a plain file name"),
        ({"notes.md": gist_file("notes.md", "# notes")}, r"holds no \.py file \(notes\.md\)"),
    ],
)
def test_refused_files_leave_nothing_in_the_cache(github, tmp_path, files, message):
    github.add(f"/gists/{GIST_ID}", gist_body(files=files))
    with pytest.raises(GistError, match=message):
        client(tmp_path, max_file_bytes=1000).fetch(GistRef(GIST_ID))
    folder = tmp_path / "cache" / "gists" / GIST_ID
    assert not folder.exists() or list(folder.iterdir()) == []


def test_answer_without_a_revision_asks_to_pin_one(github, tmp_path):
    body = gist_body()
    del body["history"]
    github.add(f"/gists/{GIST_ID}", body)
    with pytest.raises(GistError, match=rf"names no revision .* pin one instead: gist:{GIST_ID}@<revision>"):
        client(tmp_path).fetch(GistRef(GIST_ID))
