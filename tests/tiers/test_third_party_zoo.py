"""Tier 1 on real third-party architectures (tests/tiers/hf_zoo.py): correct models, so
every verdict but pass is a false alarm unless asserted here with its reason. Every family
runs the behavioural checks (cheap, and where a wrong convention shows); the checks that once
gave a false alarm on a family run on that family."""

from __future__ import annotations

import pytest
import torch

from tests.tiers.hf_zoo import CAUSAL_LMS, CLASSIFIERS, ENCODER_DECODERS, MASKED_LMS
from utils.adapters import adapt
from utils.tiers.tier1 import run_tier1

BEHAVIOUR = [
    "forward_signature",
    "output_shape",
    "causality",
    "batch_independence",
    "padding_invariance",
    "determinism",
    "parameter_initialization",
]
# The one verdict other than pass that a correct model earns, with the words that explain it.
EXPECTED = {
    ("rwkv", "padding_invariance"): ("warn", "Right padding is ignored"),  # its HF class ignores the mask
}


def _task_of(name: str) -> str:
    for family, task in (
        (CAUSAL_LMS, "causal_lm"),
        (MASKED_LMS, "masked_lm"),
        (CLASSIFIERS, "classification"),
        (ENCODER_DECODERS, "seq2seq"),
    ):
        if name in family:
            return task
    raise KeyError(name)


@pytest.mark.parametrize("name", [*CAUSAL_LMS, *MASKED_LMS, *CLASSIFIERS, *ENCODER_DECODERS])
def test_no_false_alarm_from_the_behavioural_checks(zoo, name):
    report = run_tier1(zoo[name], checks=BEHAVIOUR, progress=False)
    task = _task_of(name)
    assert report["forward_signature"].metrics["task"] == task
    for result in report:
        expected, words = EXPECTED.get((name, result.id), ("pass", ""))
        if result.id == "causality" and task in ("masked_lm", "classification"):
            expected, words = "skip", f"this one is {task}"
        assert result.status == expected, (result.id, result.summary)
        assert words in result.summary


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


def test_roberta_family_limit_is_the_positions_after_the_padding_index(zoo):
    for name in ("roberta", "xlm_roberta"):
        report = run_tier1(zoo[name], checks=["output_shape", "memory_footprint", "inference_speed"], progress=False)
        assert report.meta["train_seq_len"] == 38, name  # 40 rows, positions from padding_idx 1 + 1
        assert "padding index 1" in report.meta["profile"]
        assert [r.status for r in report] == ["pass"] * 3, [(r.id, r.summary) for r in report]


def test_library_models_get_the_toolkits_length_error_not_advice_to_edit_their_code(zoo):
    for name in ("gpt2", "opt", "gptj"):  # each raises an opaque IndexError past its table
        result = run_tier1(zoo[name], checks=["output_shape"], progress=False)["output_shape"]
        assert result.status == "pass", (name, result.summary)
        assert "installed package transformers" in result.summary and "takes at most" in result.summary
    adapted = adapt(zoo["gpt2"])
    with pytest.raises(ValueError, match="41 tokens: GPT2LMHeadModel takes at most max_seq_len=40"):
        adapted(torch.zeros(1, 41, dtype=torch.long))


def test_falcon_and_deberta_are_traced_and_timed(zoo):
    for name in ("falcon", "deberta_v2"):
        report = run_tier1(zoo[name], checks=["device_portability", "inference_speed"], progress=False)
        assert report["device_portability"].status == "pass", (name, report["device_portability"].summary)
        assert report["inference_speed"].status == "pass", (name, report["inference_speed"].summary)
        assert report["inference_speed"].metrics["flops_per_token"] > 0


def test_recurrent_library_models_loop_in_their_own_code_without_a_warning(zoo):
    for name in ("mamba", "rwkv"):  # their CPU reference paths run a loop over positions
        result = run_tier1(zoo[name], checks=["inference_speed"], progress=False)["inference_speed"]
        assert result.status == "pass", (name, result.summary)
        assert result.metrics["loops_over_positions"] and "nothing to change in your code" in result.summary


@pytest.mark.parametrize("name", ["mistral", "albert", "distilbert_cls", "t5", "bart"])
def test_weights_and_resources_on_one_model_of_each_kind(zoo, name):
    checks = [
        "initial_loss",
        "weight_sharing",
        "device_portability",
        "state_dict_roundtrip",
        "memory_footprint",
        "inference_speed",
    ]
    report = run_tier1(zoo[name], checks=checks, progress=False)
    assert [r.status for r in report] == ["pass"] * len(checks), [(r.id, r.summary) for r in report]


def test_an_encoder_decoder_learns_its_target(zoo):
    report = run_tier1(zoo["t5"], checks=["overfit_batch", "gradient_flow"], progress=False)
    assert [r.status for r in report] == ["pass", "pass"], [(r.id, r.summary) for r in report]
