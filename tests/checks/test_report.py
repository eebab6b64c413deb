"""Report objects and the check runner: computed verdicts, the four renderings, atomic saving,
and crash isolation."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import pytest
import torch

from utils.checks import Check, CheckSet, run_checks
from utils.checks.report import CheckResult, TierReport, figure_to_png, merge_reports

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(check_id: str, status: str, **extra) -> CheckResult:
    return CheckResult(check_id, f"title of {check_id}", status, f"summary of {check_id}", **extra)


def tiny_png() -> bytes:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    return figure_to_png(fig, dpi=20)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["pass", "pass"], "pass"),
        (["pass", "warn", "skip"], "warn"),
        (["warn", "fail", "pass"], "fail"),
        (["skip", "skip"], "skip"),
        ([], "skip"),
        (["skip", "pass"], "pass"),
    ],
)
def test_status_is_computed_from_results(statuses, expected):
    report = TierReport("Tier 1", [result(f"c{i}", s) for i, s in enumerate(statuses)])
    assert report.status == expected
    assert sum(report.counts.values()) == len(statuses)


def test_verdict_counts_and_lookup():
    report = TierReport("Tier 1", [result("shape", "pass"), result("causality", "fail"), result("grad", "warn")])
    assert report.verdict() == "1 check(s) failed: causality. (1 pass, 1 warn, 1 fail, 0 skip)"
    assert report["causality"].status == "fail" and "grad" in report and "nope" not in report
    assert [r.id for r in report.failed] == ["causality"]
    assert len(report) == 3 and [r.id for r in report] == ["shape", "causality", "grad"]
    with pytest.raises(KeyError, match="no check 'nope' in Tier 1; checks: shape, causality, grad"):
        report["nope"]


def test_invalid_status_is_refused():
    with pytest.raises(
        ValueError,
        match=r"CheckResult 'x': status 'ok' is not one of \('pass', 'warn', 'fail', 'skip'\)",
    ):
        result("x", "ok")
    assert result("y", "warn").ok and not result("z", "fail").ok


def test_to_dict_is_json_for_any_metric_value():
    r = result(
        "m",
        "pass",
        metrics={
            "nan": math.nan,
            "inf": -math.inf,
            "t": torch.tensor(2.5),
            "nested": {"a": (1, 2)},
            3: None,
        },
        figures={"plot": b"png"},
    )
    data = json.loads(TierReport("T", [r]).to_json())
    metrics = data["results"][0]["metrics"]
    assert metrics == {"nan": "nan", "inf": "-inf", "t": 2.5, "nested": {"a": [1, 2]}, "3": None}
    assert data["results"][0]["figures"] == ["plot"]
    assert data["status"] == "pass" and data["counts"]["pass"] == 1


def test_text_table_shows_advice_only_where_needed():
    report = TierReport(
        "Tier 1",
        [
            result("ok", "pass", advice="never shown"),
            result("leak", "fail", advice="add a causal mask"),
        ],
    )
    text = report.to_text()
    assert "PASS  ok" in text and "FAIL  leak" in text
    assert "-> add a causal mask" in text and "never shown" not in text
    assert text.splitlines()[-1].startswith("FAIL: 1 check(s) failed: leak.")
    assert str(report) == text


def test_skipped_checks_make_the_report_incomplete_and_the_headline_says_so():
    skipped = result("overfit_batch", "skip")
    skipped.summary = "Not run: the tier's 60 s time budget was spent."
    report = TierReport("Tier 1", [result("shape", "pass"), skipped])
    assert report.status == "pass" and not report.complete
    assert "All checks passed" not in report.verdict()
    assert report.verdict().startswith(
        "Every check that ran passed. Incomplete: 1 check(s) did not run (overfit_batch)"
    )
    data = json.loads(report.to_json())
    assert data["complete"] is False
    assert data["not_run"] == {"overfit_batch": "Not run: the tier's 60 s time budget was spent."}
    assert "All checks passed" not in report.to_markdown() + report._repr_html_()
    whole = TierReport("Tier 1", [result("shape", "pass")])
    assert whole.complete and whole.verdict().startswith("All checks passed.")
    assert not TierReport("Tier 1").complete


def test_text_wraps_long_summaries_and_advice_instead_of_cutting():
    long_advice = " ".join(f"step{i}" for i in range(60)) + " /a/very/long/path/to/model.py:123"
    report = TierReport("Tier 1", [result("leak", "fail", advice=long_advice)])
    report.results[0].summary = "word " * 50 + "END"
    text = report.to_text(width=60)
    assert "..." not in text
    assert all(len(line) <= 60 for line in text.splitlines() if "/a/very" not in line)
    flat = " ".join(text.split())
    assert "step0 step1" in flat and "step59 /a/very/long/path/to/model.py:123" in flat
    assert flat.count("word") == 50 and "END" in flat


def test_markdown_escapes_tables_and_links_figures():
    report = TierReport("Tier 1", [result("a", "fail", advice="fix it", figures={"curve": b"x"})])
    report.results[0].summary = "x | y"
    md = report.to_markdown()
    assert "| `a` | fail | x \\| y |" in md
    assert "**What to do:** fix it" in md
    assert "![curve](figures/a-curve.png)" in md


def test_html_has_colours_escapes_and_inline_figures():
    png = tiny_png()
    report = TierReport(
        "Tier <1>",
        [result("a", "fail", advice="<b>fix</b>", metrics={"loss": 1.23456}, figures={"f": png})],
    )
    page = report._repr_html_()
    assert "Tier &lt;1&gt;" in page and "&lt;b&gt;fix&lt;/b&gt;" in page
    assert "#cf222e" in page and "loss=1.235" in page
    assert "data:image/png;base64," in page
    assert TierReport("ok", [result("a", "pass")])._repr_html_().count("#1a7f37") >= 1


def test_save_writes_json_markdown_and_png_atomically(tmp_path):
    png = tiny_png()
    assert png.startswith(PNG_MAGIC)
    report = TierReport("Tier 1", [result("a", "warn", figures={"curve": png})], meta={"seed": 0})
    out = report.save(tmp_path / "report")
    assert json.loads((out / "report.json").read_text())["meta"] == {"seed": 0}
    assert (out / "report.md").read_text() == report.to_markdown()
    assert (out / "figures" / "a-curve.png").read_bytes() == png
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_merge_reports_keeps_order_and_meta():
    one = TierReport("Tier 1", [result("a", "pass")], meta={"x": 1})
    two = TierReport("Tier 2", [result("b", "fail")], meta={"y": 2})
    merged = merge_reports("All", [one, two])
    assert [r.id for r in merged] == ["a", "b"] and merged.status == "fail"
    assert merged.meta == {"Tier 1": {"x": 1}, "Tier 2": {"y": 2}}


def test_runner_isolates_a_crashing_check():
    checks = CheckSet("test-runner")

    @checks.check("runner.first")
    def first(ctx, v):
        """works"""
        return v.pass_(f"saw {ctx}")

    @checks.check("runner.boom")
    def boom(ctx, v):
        """crashes"""
        raise RuntimeError("shape mismatch in block 2")

    @checks.check("runner.last")
    def last(ctx, v):
        """still runs"""
        return v.pass_("ok")

    assert isinstance(first, Check) and first.id == "runner.first" and first.title == "works"
    report = run_checks("Tier 1", [first, boom, last], ctx="context", meta={"m": 1}, progress=False)
    assert [r.id for r in report] == ["runner.first", "runner.boom", "runner.last"]
    assert report["runner.first"].summary == "saw context"
    crashed = report["runner.boom"]
    assert crashed.status == "fail" and crashed.title == "crashes"
    assert crashed.summary.startswith(
        "The check could not run: RuntimeError: shape mismatch in block 2 (raised at test_report.py:"
    )  # the line that raised, outside the toolkit
    assert "RuntimeError" in crashed.metrics["traceback"] and crashed.advice
    assert report.status == "fail" and report.meta == {"m": 1}
    assert all(r.seconds >= 0 for r in report)
