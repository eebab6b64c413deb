"""The notebook is generated from notebooks/template.py and runs top to bottom in quick
mode (tiny budgets, the offline corpus, no network)."""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def _errors(nb) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def _text(nb) -> str:
    return "\n".join(
        o.get("text", "") if "text" in o else str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def test_notebook_is_generated_from_its_source():
    source = jupytext.read(ROOT / "notebooks" / "template.py")
    built = nbformat.read(ROOT / "template.ipynb", as_version=4)
    assert _cells(built) == _cells(source), "template.ipynb is stale: run `make notebook`"
    assert not _errors(built), "template.ipynb stores error outputs: run `make notebook`"


def test_each_cell_run_alone_names_the_cell_to_run_first():
    """No hidden state: a cell run before the ones it builds on says which to run, instead
    of failing on a name it never defined."""
    from utils.notebook import CellOrderError

    code = [c.source for c in jupytext.read(ROOT / "notebooks" / "template.py").cells if c.cell_type == "code"]
    for source in code[1:]:  # the set-up cell needs nothing before it
        with pytest.raises(CellOrderError, match=r"run the cell\(s\) \d\. "):
            exec(compile(source, "<cell>", "exec"), {})


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "template.ipynb", as_version=4)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TBUILDER_NOTEBOOK_QUICK", "1")
    # one intra-op thread: on a CI machine whose few cores are shared, two threads that wait
    # on each other make each training step ~20x slower
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TBUILDER_TOOLKIT_SOURCE", raising=False)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert not _errors(nb)
    outputs = _text(nb)
    assert "installing transformer-builder-toolkit" not in outputs  # importable here: nothing installed
    assert "device cpu: no GPU" in outputs or "device cuda:" in outputs
    assert "QUICK_MODE: tiny budgets" in outputs
    assert "GPTMini: task causal_lm" in outputs
    assert "tokenizer: " in outputs
    assert "ln(V) = " in outputs and "gpt2 baseline" in outputs  # Tier 3 trained both
    assert "heads: " in outputs and "rank" in outputs  # what training changed inside
    assert "parity: every format reproduces the model" in outputs
    results = tmp_path / "tbuilder_results"
    for report in ("tier1", "tier2_untrained", "tier3/report", "tier2_trained"):
        assert (results / report / "report.json").exists(), report
    assert (results / "export.zip").is_file() and (results / "export" / "export.json").is_file()
