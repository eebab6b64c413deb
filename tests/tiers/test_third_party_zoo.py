"""Tier 1 on real third-party architectures (tests/tiers/hf_zoo.py): correct models, so
every verdict but pass is a false alarm unless asserted here with its reason. Each family
runs the checks that showed a false alarm on it, and the cheap behavioural ones."""

from __future__ import annotations

from utils.tiers.tier1 import run_tier1


def test_gemma_rms_norms_raise_no_initialisation_warning(zoo):
    for name in ("gemma", "gemma2"):
        report = run_tier1(zoo[name], checks=["parameter_initialization"], progress=False)
        assert report["parameter_initialization"].status == "pass", (name, report["parameter_initialization"].summary)


def test_first_token_classifiers_are_padded_on_the_right_and_pass(zoo):
    for name in ("bert_cls", "distilbert_cls"):
        result = run_tier1(zoo[name], checks=["padding_invariance"], progress=False)["padding_invariance"]
        assert result.status == "pass", (name, result.summary)
        assert result.metrics["padded_on"] == "right"


def test_rwkv_ignores_its_mask_which_only_left_padding_shows(zoo):
    result = run_tier1(zoo["rwkv"], checks=["padding_invariance"], progress=False)["padding_invariance"]
    assert result.status == "warn", result.summary
    assert result.metrics["right_padding_change"] == 0
    assert "Right padding is ignored" in result.summary and "generate one prompt" in result.advice
