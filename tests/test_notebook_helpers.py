"""The notebook's helpers: form fields to sources, export zips, results folders, cell order;
Colab's upload, Drive and download replaced by a stand-in `google.colab` module."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import pytest

from utils import notebook
from utils.examples import example_path
from utils.notebook import (
    CellOrderError,
    NotebookInputError,
    deliver,
    output_folder,
    require,
    resolve_data_source,
    resolve_model_source,
    tier1_caveat,
    unpack_export,
)


def _zip(path: Path, entries: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return path


@pytest.fixture()
def export_files() -> dict[str, str]:
    folder = example_path("gpt-mini")
    return {name: (folder / name).read_text() for name in ("model.py", "config.json")}


@pytest.fixture()
def fake_colab(monkeypatch, tmp_path):
    """A stand-in `google.colab` that records what the notebook asked of it."""
    calls: dict[str, list] = {"download": [], "mount": []}
    uploads: dict[str, bytes] = {}
    colab = types.ModuleType("google.colab")
    colab.files = types.SimpleNamespace(upload=lambda: dict(uploads), download=calls["download"].append)
    colab.drive = types.SimpleNamespace(mount=calls["mount"].append)
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return types.SimpleNamespace(calls=calls, uploads=uploads)


def test_an_export_zip_unpacks_to_the_folder_holding_model_py(tmp_path, export_files):
    archive = _zip(tmp_path / "my_export.zip", {f"my_export/{k}": v for k, v in export_files.items()})
    folder = unpack_export(archive, tmp_path / "out")
    assert (folder / "model.py").is_file() and (folder / "config.json").is_file()
    from utils import load_model

    assert load_model(str(folder)).class_name == "GPTMini"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"../evil.py": "x", "model.py": "x"}, "points outside the archive"),
        ({"/abs/model.py": "x"}, "points outside the archive"),
        ({"a/model.py": "x", "b/model.py": "x"}, "exactly one model.py"),
        ({"config.json": "{}"}, "found: none"),
    ],
)
def test_a_bad_export_zip_is_refused_and_nothing_is_written(tmp_path, entries, message):
    archive = _zip(tmp_path / "bad.zip", entries)
    with pytest.raises(NotebookInputError, match=message):
        unpack_export(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_file_that_is_not_a_zip_says_so(tmp_path):
    fake = tmp_path / "export.zip"
    fake.write_text("not a zip")
    with pytest.raises(NotebookInputError, match="not a zip file"):
        unpack_export(fake, tmp_path / "out")


def test_model_sources_from_each_kind(tmp_path, export_files):
    assert resolve_model_source("example", "bert-mini", tmp_path).value == "example:bert-mini"
    assert resolve_model_source("example", "", tmp_path).value == "example:gpt-mini"
    assert resolve_model_source("gist", "abc123", tmp_path).value == "gist:abc123"
    url = "https://gist.github.com/someone/abc123"
    assert resolve_model_source("gist", url, tmp_path).value == url
    folder = str(example_path("gpt-mini"))
    assert resolve_model_source("path", folder, tmp_path).value == folder
    archive = _zip(tmp_path / "e.zip", export_files)
    resolved = resolve_model_source("path", str(archive), tmp_path)
    assert Path(resolved.value, "model.py").is_file() and "unpacked" in resolved.origin


@pytest.mark.parametrize(
    "kind, value, message",
    [
        ("path", "", "MODEL_SOURCE is empty"),
        ("path", "/no/such/export", "does not exist"),
        ("gist", "", "gist id"),
        ("hub", "x", "MODEL_KIND='hub'"),
    ],
)
def test_unusable_model_fields_name_the_field(tmp_path, kind, value, message):
    with pytest.raises(NotebookInputError, match=message):
        resolve_model_source(kind, value, tmp_path)


def test_upload_outside_colab_says_to_use_a_path(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "in_colab", lambda: False)
    with pytest.raises(NotebookInputError, match="needs Google Colab; here, set MODEL_SOURCE"):
        resolve_model_source("upload", "", tmp_path)


def test_uploaded_zip_and_uploaded_files(tmp_path, fake_colab, export_files):
    archive = _zip(tmp_path / "upload.zip", export_files)
    fake_colab.uploads["upload.zip"] = archive.read_bytes()
    resolved = resolve_model_source("upload", "", tmp_path / "work")
    assert Path(resolved.value, "model.py").is_file()
    fake_colab.uploads.clear()
    fake_colab.uploads.update({k: v.encode() for k, v in export_files.items()})
    resolved = resolve_model_source("upload", "", tmp_path / "work2")
    assert Path(resolved.value, "config.json").is_file()
    fake_colab.uploads.clear()
    fake_colab.uploads["config.json"] = b"{}"
    with pytest.raises(NotebookInputError, match="has no model.py"):
        resolve_model_source("upload", "", tmp_path / "work3")


def test_data_sources_from_each_kind(tmp_path, fake_colab):
    corpus = resolve_data_source("offline corpus", "", tmp_path)
    assert isinstance(corpus.value, list) and len(corpus.value) > 100
    text = tmp_path / "t.txt"
    text.write_text("hello")
    assert resolve_data_source("file", str(text), tmp_path).value == str(text)
    assert resolve_data_source("datasets", "wikitext", tmp_path).value == "wikitext"
    fake_colab.uploads["d.jsonl"] = b'{"text": "x"}\n'
    assert Path(resolve_data_source("upload", "", tmp_path).value).name == "d.jsonl"
    for kind, value, message in (
        ("file", str(tmp_path / "none.txt"), "is not a file"),
        ("datasets", "", "dataset name"),
        ("web", "", "DATA_KIND='web'"),
    ):
        with pytest.raises(NotebookInputError, match=message):
            resolve_data_source(kind, value, tmp_path)


def test_output_folder_on_drive_mounts_it_once(tmp_path, fake_colab, monkeypatch):
    monkeypatch.setattr(notebook, "DRIVE_ROOT", tmp_path / "drive")
    folder = output_folder("results", on_drive=True)
    assert folder == tmp_path / "drive" / "MyDrive" / "results" and folder.is_dir()
    assert fake_colab.calls["mount"] == [str(tmp_path / "drive")]
    (tmp_path / "drive" / "MyDrive").mkdir(exist_ok=True)
    output_folder("results", on_drive=True)
    assert len(fake_colab.calls["mount"]) == 1


def test_output_folder_on_drive_outside_colab_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "in_colab", lambda: False)
    with pytest.raises(NotebookInputError, match="SAVE_TO_DRIVE = False"):
        output_folder(tmp_path / "r", on_drive=True)
    assert output_folder(tmp_path / "r").is_dir()


def test_deliver_zips_the_folder_and_downloads_it_in_colab(tmp_path, fake_colab):
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    target = deliver(folder)
    assert zipfile.ZipFile(target).namelist() == ["export/sub/a.txt"]
    assert fake_colab.calls["download"] == [str(target)]
    with pytest.raises(NotebookInputError, match="not a folder"):
        deliver(tmp_path / "missing")


def test_require_names_the_cell_to_run():
    require({"adapted": object()}, adapted="3. Load and adapt")
    with pytest.raises(CellOrderError, match=r"`adapted`, `OUT`: run the cell\(s\) 3. Load and adapt; 2. Param"):
        require({}, adapted="3. Load and adapt", OUT="2. Parameters")


def test_tier1_caveat_only_after_a_failed_tier1():
    failed = types.SimpleNamespace(failed=[types.SimpleNamespace(id="causality")])
    assert "Tier 1 failed (causality)" in tier1_caveat({"tier1": failed})
    assert tier1_caveat({"tier1": types.SimpleNamespace(failed=[])}) is None
    assert tier1_caveat({}) is None


def _report(**metrics_by_id):
    from utils import CheckResult, TierReport

    results = [CheckResult(cid, cid, "skip" if m is None else "pass", "s", m or {}) for cid, m in metrics_by_id.items()]
    return TierReport("Tier 2", results)


def _heads(*labels):
    return {"heads": [{"layer": 0, "head": i, "labels": list(ls)} for i, ls in enumerate(labels)]}


def _layers(*ranks):
    return {"layers": [{"layer": i, "module": f"b.{i}", "effective_rank_centered": r} for i, r in enumerate(ranks)]}


def test_tier2_changes_names_heads_that_specialised_and_rank_changes():
    from utils.notebook import tier2_changes

    before = _report(attention_patterns=_heads(["uniform"], ["uniform"], []), representation_health=_layers(70.0, 71.0))
    after = _report(
        attention_patterns=_heads(["previous_token"], ["uniform"], ["dead"]), representation_health=_layers(40.5, 20.25)
    )
    lines = tier2_changes(before, after)
    assert lines[0] == "heads: 1 of 3 specialised"
    assert lines[1] == "  layer 0 head 0: uniform -> previous_token"
    assert "  layer 1 (b.1): effective rank 71.0 -> 20.2" in lines
    same = tier2_changes(before, before)
    assert same[0] == "heads: none of the 3 heads took on a new pattern"


def test_tier2_changes_says_when_an_analysis_did_not_run_in_both():
    from utils.notebook import tier2_changes

    lines = tier2_changes(_report(attention_patterns=None), _report(representation_health=None))
    assert lines == [
        "heads: attention_patterns did not run in both reports, so head changes are unknown",
        "rank: representation_health did not run in both reports, so rank changes are unknown",
    ]
