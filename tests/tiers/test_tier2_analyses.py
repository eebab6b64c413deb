"""Each Tier 2 analysis both ways, through run_tier2: a model built to be flagged is flagged
(and named), a correct one is not."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tests.analysis.zoo import ClonedHeadLM, CopiedBlocksLM, CopyingLM, IgnoresTokensLM, TinyLM, TrainedCopiesLM
from utils.checks import SECTIONS
from utils.tiers.tier2 import ANALYSES, run_tier2

FAST = dict(progress=False, seq_len=12)
INPUT_ANALYSES = ["attribution", "perturbation_sensitivity", "adversarial_tokens"]


def test_every_analysis_documents_itself():
    for check in ANALYSES:
        assert list(check.sections()) == list(SECTIONS), check.id


def test_a_model_that_ignores_its_tokens_is_flagged_by_every_input_analysis():
    report = run_tier2(IgnoresTokensLM(), analyses=INPUT_ANALYSES, **FAST)
    for r in report:
        assert r.status == "warn" and "ignores its tokens" in r.summary, (r.id, r.summary)
        assert r.advice


def test_a_correct_model_passes_every_input_analysis():
    report = run_tier2(TinyLM(), analyses=INPUT_ANALYSES, **FAST)
    assert [r.status for r in report] == ["pass"] * 3, {r.id: r.summary for r in report}
    swaps = report["adversarial_tokens"].metrics
    assert swaps["hotflip_kl"] > swaps["random_kl"] > 0


def test_the_collapsing_block_is_named_and_a_healthy_stream_passes():
    bad = run_tier2(TinyLM(collapse_at=1), analyses=["representation_health"], **FAST)["representation_health"]
    assert bad.status == "fail" and "'blocks.1'" in bad.summary and "blocks.0" not in bad.summary
    good = run_tier2(TinyLM(), analyses=["representation_health"], **FAST)["representation_health"]
    assert good.status == "pass", good.summary
    assert [row["module"] for row in good.metrics["layers"]] == ["blocks.0", "blocks.1", "blocks.2"]
    assert set(good.metrics["layers"][0]) >= {
        "layer",
        "module",
        "effective_rank",
        "effective_rank_centered",
        "mean_token_cosine",
        "anisotropy",
        "block_cosine",
        "dead_neuron_fraction",
    }


def test_half_dead_relu_units_warn():
    model = TinyLM()
    model.blocks[2].mlp[1] = nn.ReLU()
    with torch.no_grad():
        model.blocks[2].mlp[0].bias[: 3 * 24] = -100.0
    r = run_tier2(model, analyses=["representation_health"], **FAST)["representation_health"]
    assert r.status == "warn" and "'blocks.2'" in r.summary and "75%" in r.summary


@pytest.mark.parametrize("model, status", [(ClonedHeadLM(), "fail"), (TinyLM(), "pass"), (CopiedBlocksLM(), "pass")])
def test_a_cloned_untied_matrix_fails_and_copied_layers_at_init_are_only_noted(model, status):
    r = run_tier2(model, analyses=["weight_spectrum"], **FAST)["weight_spectrum"]
    assert r.status == status, r.summary
    names = {m["name"] for m in r.metrics["matrices"]}
    assert "blocks.0.attn.qkv.weight" in names
    if isinstance(model, ClonedHeadLM):
        assert "'head.weight' = 'tok.weight'" in r.summary
    if isinstance(model, CopiedBlocksLM):
        assert "copies of the same layer" in r.summary


def test_copies_that_survive_training_fail():
    r = run_tier2(TrainedCopiesLM(), analyses=["weight_spectrum"], **FAST)
    assert r.meta["trained"] is True
    assert r["weight_spectrum"].status == "fail" and "blocks.1" in r["weight_spectrum"].summary


def test_a_trained_model_raises_no_false_alarm():
    report = run_tier2(CopyingLM(), analyses=INPUT_ANALYSES + ["representation_health", "weight_spectrum"], **FAST)
    assert report.meta["trained"] is True
    assert report.status == "pass", {r.id: r.summary for r in report}
    assert all("untrained" not in r.summary for r in report)
