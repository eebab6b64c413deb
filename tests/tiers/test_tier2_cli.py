"""`tbuilder analyze` and `tbuilder run` (Tier 1 then Tier 2), in-process."""

from __future__ import annotations

import json

from utils.cli import main

MODEL = "tests.analysis.zoo:TinyLM"


def test_analyze_writes_the_report_and_figures(capsys, tmp_path):
    out = tmp_path / "report"
    code = main(["-q", "analyze", MODEL, "--analyses", "attribution,weight_spectrum", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "attribution" in text and "weight_spectrum" in text and "Tier 2" in text
    saved = json.loads((out / "report.json").read_text())
    assert [r["id"] for r in saved["results"]] == ["attribution", "weight_spectrum"]
    assert (out / "figures" / "attribution-tokens.png").exists()


def test_analyze_with_data_needs_the_tokenizer(capsys, tmp_path):
    data = tmp_path / "text.txt"
    data.write_text("some text to analyse\n")
    code = main(["analyze", MODEL, "--data", str(data)])
    assert code == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_run_is_tier1_then_tier2(capsys, tmp_path):
    record = tmp_path / "run.json"
    code = main(
        ["-q", "run", MODEL, "--checks", "output_shape", "--analyses", "weight_spectrum", "--json", str(record)]
    )
    assert code == 0, capsys.readouterr().out
    ids = [r["id"] for r in json.loads(record.read_text())["results"]]
    assert ids == ["output_shape", "weight_spectrum"]
