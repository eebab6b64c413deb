"""The notebook is generated from notebooks/template.py and must run top to bottom."""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_notebook_is_generated_from_its_source():
    source = jupytext.read(ROOT / "notebooks" / "template.py")
    built = nbformat.read(ROOT / "template.ipynb", as_version=4)
    assert _cells(built) == _cells(source), "template.ipynb is stale: run `make notebook`"


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "template.ipynb", as_version=4)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "GPTMini: task causal_lm" in outputs
    assert "tokenizer: " in outputs and "after 60 steps" in outputs
    assert (tmp_path / "tbuilder_reports" / "tier1" / "report.json").exists()
