"""What the notebook needs beyond the tiers: where the model and the data come from (a form
field, an uploaded file or zip), where results go (a folder, optionally on Google Drive), and
how they come back to the user (a download in Colab, a path elsewhere).

Everything here works outside Colab too; what only Colab can do (upload, Drive, download)
says so in one line instead of failing deep inside `google.colab`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from utils.errors import ToolkitError

MODEL_KINDS = ("example", "gist", "path", "upload")
DATA_KINDS = ("offline corpus", "file", "upload", "datasets")
DRIVE_ROOT = Path("/content/drive")


class NotebookInputError(ToolkitError, ValueError):
    """A form field the notebook cannot use; the message names the field and what to put."""


class CellOrderError(ToolkitError, RuntimeError):
    """A cell ran before the cell that makes what it needs; the message names that cell."""


def require(namespace: dict[str, Any], **needed: str) -> None:
    """Fail clearly when a cell runs before the ones it builds on, instead of a NameError
    (or, worse, a stale value) three lines down. `needed` maps each variable to the cell
    that defines it: `require(globals(), adapted="3. Load and adapt")`."""
    missing = [(name, cell) for name, cell in needed.items() if namespace.get(name) is None]
    if missing:
        cells = list(dict.fromkeys(cell for _, cell in missing))
        names = ", ".join(f"`{name}`" for name, _ in missing)
        raise CellOrderError(f"this cell needs {names}: run the cell(s) {'; '.join(cells)} first")


def tier1_caveat(namespace: dict[str, Any]) -> str | None:
    """A line saying later results mean less, when Tier 1 ran in this notebook and failed."""
    report = namespace.get("tier1")
    failed = getattr(report, "failed", None)
    if not failed:
        return None
    ids = ", ".join(r.id for r in failed)
    return (
        f"Note: Tier 1 failed ({ids}). The results below still come, but mean less until "
        "those checks pass: see the advice in the Tier 1 report."
    )


@dataclass
class Resolved:
    """What a form field turned into (`value`, handed to the toolkit) and, for the reader,
    where it came from (`origin`)."""

    value: Any
    origin: str


def in_colab() -> bool:
    """True inside a Google Colab runtime (its `google.colab` package is importable)."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def _colab(feature: str, field: str) -> ModuleType:
    """`google.colab`, or a clear error saying which field to use instead outside Colab."""
    if not in_colab():
        raise NotebookInputError(f"{feature} needs Google Colab; here, set {field} to a path on this machine instead")
    import google.colab

    return google.colab


# -- model source ---------------------------------------------------------------------------


def resolve_model_source(kind: str, value: str, work_dir: str | Path) -> Resolved:
    """Turn the MODEL_KIND / MODEL_SOURCE fields into a source for `load_model`.

    `example`: an embedded example name; `gist`: a gist id or URL; `path`: a folder, a
    `.py` file or a `.zip` of an export; `upload`: files chosen in Colab's upload dialog
    (`model.py` + `config.json`, or one zip).
    """
    value = (value or "").strip()
    if kind == "example":
        name = value.removeprefix("example:") or "gpt-mini"
        return Resolved(f"example:{name}", f"the embedded example {name!r}")
    if kind == "gist":
        if not value:
            raise NotebookInputError("MODEL_SOURCE is empty: give a gist id or a gist URL")
        text = value if value.startswith(("gist:", "http://", "https://")) else f"gist:{value}"
        return Resolved(text, f"the gist {value}")
    if kind == "path":
        return _local_model(value, Path(work_dir))
    if kind == "upload":
        files = upload_files(Path(work_dir) / "upload", field="MODEL_SOURCE")
        return _uploaded_model(files, Path(work_dir))
    raise NotebookInputError(f"MODEL_KIND={kind!r}: choose one of {', '.join(MODEL_KINDS)}")


def _local_model(value: str, work_dir: Path) -> Resolved:
    if not value:
        raise NotebookInputError("MODEL_SOURCE is empty: give a folder, a model.py or a .zip")
    path = Path(value).expanduser()
    if not path.exists():
        raise NotebookInputError(f"MODEL_SOURCE={value!r} does not exist: check the path")
    if path.suffix.lower() == ".zip":
        folder = unpack_export(path, work_dir / "exports")
        return Resolved(str(folder), f"{path} (unpacked to {folder})")
    return Resolved(str(path), str(path))


def _uploaded_model(files: list[Path], work_dir: Path) -> Resolved:
    names = ", ".join(f.name for f in files)
    zips = [f for f in files if f.suffix.lower() == ".zip"]
    if len(zips) == 1 and len(files) == 1:
        folder = unpack_export(zips[0], work_dir / "exports")
        return Resolved(str(folder), f"the uploaded {zips[0].name} (unpacked to {folder})")
    if not any(f.name == "model.py" for f in files):
        raise NotebookInputError(f"the upload ({names}) has no model.py: upload model.py and config.json, or one .zip")
    return Resolved(str(files[0].parent), f"the uploaded files {names}")


def unpack_export(zip_path: str | Path, dest_root: str | Path) -> Path:
    """Extract an export zip and return the folder holding its `model.py`.

    Entries that would land outside the destination (`../`, absolute paths) are refused, and
    the extraction goes to a temporary folder renamed into place, so a failed or interrupted
    unpack leaves nothing half-written behind.
    """
    zip_path, dest_root = Path(zip_path), Path(dest_root)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise NotebookInputError(f"{zip_path}: not a zip file ({exc}); zip the export folder again") from exc
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        bad = next((n for n in names if _escapes(n)), None)
        if bad is not None:
            raise NotebookInputError(f"{zip_path}: entry {bad!r} points outside the archive; refusing to unpack")
        models = sorted(
            n for n in names if PurePosixPath(n).name == "model.py" and "__MACOSX" not in PurePosixPath(n).parts
        )
        if len(models) != 1:
            found = ", ".join(models) if models else "none"
            raise NotebookInputError(
                f"{zip_path}: an export zip holds exactly one model.py (found: {found}); "
                "zip one export folder (model.py + config.json)"
            )
        dest_root.mkdir(parents=True, exist_ok=True)
        final = dest_root / zip_path.stem
        tmp = Path(tempfile.mkdtemp(prefix=f".{zip_path.stem}.", dir=dest_root))
        try:
            archive.extractall(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final / PurePosixPath(models[0]).parent


def _escapes(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts


def upload_files(dest: str | Path, field: str) -> list[Path]:
    """Open Colab's upload dialog and save what was chosen under `dest`."""
    colab = _colab("Uploading a file", field)
    chosen = colab.files.upload()
    if not chosen:
        raise NotebookInputError(f"nothing was uploaded: run the cell again and choose files, or set {field}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, data in chosen.items():
        target = dest / Path(name).name
        target.write_bytes(data)
        saved.append(target)
    return saved


# -- data source ----------------------------------------------------------------------------


def resolve_data_source(kind: str, value: str, work_dir: str | Path) -> Resolved:
    """Turn the DATA_KIND / DATA_SOURCE fields into what the data module reads.

    `offline corpus`: the text that ships with Python (no download); `file`: a local
    `.txt`/`.csv`/`.jsonl`/`.parquet`; `upload`: one such file from Colab's upload dialog;
    `datasets`: a Hugging Face dataset name.
    """
    value = (value or "").strip()
    if kind == "offline corpus":
        from utils.examples import default_corpus

        texts = [p for p in default_corpus().split("\n\n") if p.strip()]
        return Resolved(texts, f"the offline corpus ({len(texts)} paragraphs of Python's own docs)")
    if kind == "file":
        if not value:
            raise NotebookInputError("DATA_SOURCE is empty: give a .txt/.csv/.jsonl/.parquet file")
        path = Path(value).expanduser()
        if not path.is_file():
            raise NotebookInputError(f"DATA_SOURCE={value!r} is not a file: check the path")
        return Resolved(str(path), str(path))
    if kind == "upload":
        files = upload_files(Path(work_dir) / "data", field="DATA_SOURCE")
        if len(files) != 1:
            raise NotebookInputError(f"upload one data file, not {len(files)}")
        return Resolved(str(files[0]), f"the uploaded {files[0].name}")
    if kind == "datasets":
        if not value:
            raise NotebookInputError("DATA_SOURCE is empty: give a Hugging Face dataset name")
        return Resolved(value, f"the Hugging Face dataset {value!r}")
    raise NotebookInputError(f"DATA_KIND={kind!r}: choose one of {', '.join(DATA_KINDS)}")


# -- results --------------------------------------------------------------------------------


def output_folder(path: str | Path, on_drive: bool = False) -> Path:
    """The folder results go to; with `on_drive`, under My Drive (mounted on first use) so
    they outlive the Colab runtime."""
    path = Path(path)
    if on_drive:
        colab = _colab("Saving to Google Drive", "SAVE_TO_DRIVE = False and OUTPUT_DIR")
        if not (DRIVE_ROOT / "MyDrive").exists():
            colab.drive.mount(str(DRIVE_ROOT))
        path = DRIVE_ROOT / "MyDrive" / (path.relative_to(path.anchor) if path.is_absolute() else path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def deliver(folder: str | Path) -> Path:
    """Zip `folder` beside itself (temp + rename) and, in Colab, start its download.
    Returns the zip's path, which is where it stays outside Colab."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotebookInputError(f"{folder} is not a folder: run the export cell first")
    fd, tmp = tempfile.mkstemp(prefix=f".{folder.name}.", suffix=".zip", dir=folder.parent)
    os.close(fd)
    target = folder.with_suffix(".zip")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                archive.write(file, file.relative_to(folder.parent))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if in_colab():
        import google.colab

        google.colab.files.download(str(target))
    return target


# -- Tier 2 before and after training -------------------------------------------------------


def tier2_changes(before: Any, after: Any) -> list[str]:
    """What training changed inside, from two Tier 2 reports of the same model: the heads
    whose pattern labels changed (those that specialised), and each layer's effective rank.
    An analysis that did not run in both reports is named as such, never guessed."""
    lines = _head_changes(_metrics(before, "attention_patterns"), _metrics(after, "attention_patterns"))
    lines += _rank_changes(_metrics(before, "representation_health"), _metrics(after, "representation_health"))
    return lines


def _metrics(report: Any, check_id: str) -> dict[str, Any] | None:
    result = next((r for r in getattr(report, "results", []) if r.id == check_id), None)
    return result.metrics if result is not None and result.status != "skip" else None


def _head_changes(before: dict | None, after: dict | None) -> list[str]:
    if not before or not after or "heads" not in before or "heads" not in after:
        return ["heads: attention_patterns did not run in both reports, so head changes are unknown"]
    was = {(h["layer"], h["head"]): set(h["labels"]) for h in before["heads"]}
    changed = []
    for h in after["heads"]:
        key, now = (h["layer"], h["head"]), set(h["labels"])
        old = was.get(key, set())
        if now != old and now - {"uniform", "dead"}:
            changed.append(
                f"layer {key[0]} head {key[1]}: {', '.join(sorted(old)) or 'no pattern'} -> {', '.join(sorted(now))}"
            )
    total = len(after["heads"])
    if not changed:
        return [f"heads: none of the {total} heads took on a new pattern"]
    return [f"heads: {len(changed)} of {total} specialised"] + [f"  {line}" for line in changed]


def _rank_changes(before: dict | None, after: dict | None) -> list[str]:
    if not before or not after or "layers" not in before or "layers" not in after:
        return ["rank: representation_health did not run in both reports, so rank changes are unknown"]
    was = {row["layer"]: row for row in before["layers"]}
    lines = []
    for row in after["layers"]:
        old = was.get(row["layer"])
        if old is None or old.get("effective_rank_centered") is None or row.get("effective_rank_centered") is None:
            continue
        lines.append(
            f"  layer {row['layer']} ({row.get('module', '?')}): effective rank "
            f"{old['effective_rank_centered']:.1f} -> {row['effective_rank_centered']:.1f}"
        )
    if not lines:
        return ["rank: no layer was measured in both reports"]
    return ["rank (centred effective rank of each block's output):", *lines]
