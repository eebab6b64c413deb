"""Tier 1 on the designer's exports and the embedded examples.

The exports are the test copies in tests/fixtures/builder_exports (tiny, in the designer's
format): `simple_graph` is a GPT template whose attention has no causal mask, so as a causal
LM it must fail causality and label_leakage with advice naming its attention module; the
complex-signature ones run through the graph executor and must not fail anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from utils.loading import load_model
from utils.tiers.tier1 import run_tier1

EXPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "builder_exports"


@pytest.fixture(scope="module")
def simple_graph_report():
    return run_tier1(load_model(EXPORTS / "simple_graph"), progress=False)


def test_gpt_template_without_causal_mask_fails_causality(simple_graph_report):
    result = simple_graph_report["causality"]
    assert simple_graph_report["forward_signature"].metrics["task"] == "causal_lm"
    assert result.status == "fail"
    assert result.metrics["first_leaking_module"] == "mhsa_0"
    assert "`mhsa_0` (nn.MultiheadAttention)" in result.advice
    assert "attn_mask=mask" in result.advice
    assert "make node mhsa_0 causal" in result.advice  # the export's own fix, on the canvas


def test_gpt_template_without_causal_mask_fails_label_leakage(simple_graph_report):
    result = simple_graph_report["label_leakage"]
    assert result.status == "fail"
    assert result.metrics["lowest_window_mean"] < result.metrics["fail_below"]
    assert "`mhsa_0`" in result.summary and "attn_mask" in result.advice


def test_gpt_template_fails_nothing_else(simple_graph_report):
    failed = {r.id for r in simple_graph_report.failed}
    assert failed == {"causality", "label_leakage"}


@pytest.mark.parametrize("name", ["complex_edges", "flat_config"])
def test_complex_signature_exports_have_no_false_failure(name):
    loaded = load_model(EXPORTS / name)
    report = run_tier1(loaded, progress=False)
    assert report["forward_signature"].metrics["graph_executor"] is True
    failed = {r.id: r.summary for r in report.failed}
    assert not failed, failed
    assert report["overfit_batch"].status == "pass"


def test_causal_complex_export_passes_causality():
    report = run_tier1(load_model(EXPORTS / "complex_edges"), progress=False, checks=["causality", "label_leakage"])
    assert report["causality"].status == "pass"
    assert report["label_leakage"].status == "pass"


@pytest.mark.parametrize("name", ["gpt-mini", "builder-export", "bert-mini"])
def test_embedded_examples_have_no_false_failure(name):
    report = run_tier1(load_model(f"example:{name}"), progress=False)
    failed = {r.id: r.summary for r in report.failed}
    assert not failed, failed
