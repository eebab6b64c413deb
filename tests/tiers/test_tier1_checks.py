"""Every Tier 1 check passes on a correct model and fails (or warns, for the checks that only
report) on a model built to break it, with advice that names what to change."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.adapters.zoo import BatchMixingLM, Classifier, TinyGPT
from tests.tiers.zoo_broken import (
    CheckedGPT,
    DataTiedLM,
    DropoutNeverAppliedLM,
    EvalDropoutLM,
    FixedDeviceLM,
    Fp16OverflowLM,
    HugeInitLM,
    IgnoresMaskEncoder,
    IgnoresMaskLM,
    InvertedMaskLM,
    InvertedPadTrueLM,
    LateLeakGPT,
    LateLeakNet,
    MHACausalPadLM,
    NaNLM,
    NeedsUnknownArgs,
    NoCausalMaskGPT,
    PeekAheadGPT,
    PeekingDecoderSeq2Seq,
    PlainAttributeLM,
    PortableIdiomsLM,
    PositionLoopLM,
    PositionOnlyLM,
    ShiftedLossLM,
    ShortPositionLM,
    SourceMaskIgnoredSeq2Seq,
    UnsavedRandomLM,
    UnshiftedLossLM,
    UnusedLayerLM,
    VanishingBranchLM,
    ZeroGateLM,
)
from utils.tiers.tier1 import CHECK_IDS, run_tier1


@pytest.fixture(scope="module")
def good_report():
    return run_tier1(CheckedGPT(), progress=False)


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_correct_model_passes(good_report, check_id):
    result = good_report[check_id]
    assert result.status == "pass", f"{check_id}: {result.summary}"


# (check, model, run_tier1 options, expected status, words the summary + advice must contain)
BROKEN = [
    ("forward_signature", NeedsUnknownArgs, {}, "fail", ["alpha", "input_ids"]),
    ("output_shape", ShortPositionLM, {}, "fail", ["`pos` (8 rows)", "max_seq_len 16"]),
    ("output_shape", TinyGPT, {}, "warn", ["IndexError", "raise ValueError"]),
    ("causality", NoCausalMaskGPT, {"task": "causal_lm"}, "fail", ["`blocks.0.attn`", "masked_fill"]),
    ("causality", LateLeakGPT, {"task": "causal_lm"}, "fail", ["`blocks.2.attn`", "masked_fill"]),
    ("causality", LateLeakNet, {}, "warn", ["`blocks.2.attn`", "masked LM", "task='causal_lm'"]),
    ("batch_independence", BatchMixingLM, {}, "fail", ["`attn`", "batch_first=True"]),
    ("padding_invariance", IgnoresMaskLM, {}, "warn", ["Right padding is ignored", "left padding"]),
    ("padding_invariance", IgnoresMaskEncoder, {"task": "masked_lm"}, "fail", ["does not depend on the mask"]),
    ("padding_invariance", InvertedMaskLM, {}, "fail", ["inverted", "== 0"]),
    ("padding_invariance", InvertedPadTrueLM, {}, "fail", ["inverted", "drop the `~`"]),
    ("padding_invariance", MHACausalPadLM, {}, "warn", ["no_grad", "float masks"]),
    ("padding_invariance", SourceMaskIgnoredSeq2Seq, {}, "fail", ["does not depend on the mask"]),
    ("causality", PeekingDecoderSeq2Seq, {}, "fail", ["in the decoder", "`decoder.attn`", "masked_fill"]),
    ("label_leakage", PeekingDecoderSeq2Seq, {}, "fail", ["decoder reads the target", "shifted right"]),
    ("determinism", EvalDropoutLM, {}, "fail", ["training=self.training"]),
    ("determinism", DropoutNeverAppliedLM, {}, "warn", ["never runs"]),
    ("numerical_stability", NaNLM, {}, "fail", ["`head`", "`ln_f`"]),
    ("numerical_stability", Fp16OverflowLM, {}, "warn", ["`scale`", "65504"]),
    ("initial_loss", HugeInitLM, {}, "fail", ["Far too high", "output layer"]),
    ("initial_loss", NaNLM, {}, "fail", ["not finite"]),
    ("gradient_flow", UnusedLayerLM, {}, "fail", ["decoder.weight", "never called"]),
    ("gradient_flow", ZeroGateLM, {}, "warn", ["exactly zero", "extra"]),
    ("gradient_flow", VanishingBranchLM, {}, "warn", ["span a factor"]),
    ("parameter_initialization", HugeInitLM, {}, "fail", ["head.weight", "gain"]),
    ("weight_sharing", DataTiedLM, {}, "fail", ["head.weight = tok.weight", ".data"]),
    ("device_portability", FixedDeviceLM, {}, "fail", ["torch.embedding", "torch.arange(T))", "device=idx.device"]),
    ("device_portability", PlainAttributeLM, {}, "warn", ["scale_table", "register_buffer"]),
    ("overfit_batch", PositionOnlyLM, {}, "fail", ["Could not memorise", "input tokens"]),
    ("label_leakage", NoCausalMaskGPT, {"task": "causal_lm"}, "fail", ["far below chance", "`blocks.0.attn`"]),
    ("label_leakage", LateLeakGPT, {"task": "causal_lm"}, "fail", ["far below chance", "`blocks.2.attn`"]),
    ("label_leakage", PeekAheadGPT, {"task": "causal_lm"}, "fail", ["far below chance", "`blocks.0.attn`"]),
    ("label_leakage", UnshiftedLossLM, {}, "fail", ["no shift", "labels[:, 1:]"]),
    ("state_dict_roundtrip", UnsavedRandomLM, {}, "fail", ["mix", "register_buffer"]),
    ("memory_footprint", CheckedGPT, {"batch_size": 10**9}, "warn", ["at most", "sequences"]),
    ("inference_speed", PositionLoopLM, {}, "warn", ["Python loop over positions"]),
]


@pytest.mark.parametrize(
    ("check_id", "model", "options", "status", "words"), BROKEN, ids=[f"{c}-{m.__name__}" for c, m, *_ in BROKEN]
)
def test_broken_model_is_caught(check_id, model, options, status, words):
    if check_id == "memory_footprint" and not Path("/proc/meminfo").exists():
        pytest.skip("available memory is read from /proc/meminfo, which this system lacks")
    result = run_tier1(model(), checks=[check_id], progress=False, **options)[check_id]
    assert result.status == status, f"{result.status}: {result.summary}"
    text = f"{result.summary} {result.advice}"
    for word in words:
        assert word in text, f"{word!r} not in: {text}"
    assert result.advice, "every non-pass result carries advice"


def test_own_loss_with_the_shift_passes_label_leakage():
    result = run_tier1(ShiftedLossLM(), checks=["label_leakage"], progress=False)["label_leakage"]
    assert result.status == "pass", result.summary
    assert result.metrics["own_loss_convention"] == "shifted"
    assert result.metrics["loss_used"].startswith("model's own")


def test_label_leakage_stays_at_chance_for_a_causal_model(good_report):
    m = good_report["label_leakage"].metrics
    assert m["lowest_window_mean"] > m["fail_below"]
    assert math.isclose(m["chance_loss"], math.log(m["tokens_in_use"]))


def test_causality_finds_exact_zeros_by_gradient(good_report):
    m = good_report["causality"].metrics
    assert m["method"] == "gradient + resampling"
    assert m["max_future_gradient"] == 0.0
    assert m["positions_tested"] == good_report.meta["seq_len"] - 1


def test_failed_causality_counts_every_leaking_position():
    result = run_tier1(NoCausalMaskGPT(), task="causal_lm", checks=["causality"], progress=False)["causality"]
    assert result.metrics["leaking_positions"] == result.metrics["positions_tested"]
    assert result.metrics["first_leaking_module"] == "blocks.0.attn"


def test_checks_that_do_not_apply_skip_with_the_reason_and_what_to_do():
    report = run_tier1(Classifier(), progress=False, checks=["causality", "label_leakage", "padding_invariance"])
    assert report["causality"].status == "skip"
    assert "causal_lm models; this one is classification" in report["causality"].summary
    assert report["label_leakage"].status == "skip"
    assert all("task=" in report[c].advice for c in ("causality", "label_leakage"))
    assert report["padding_invariance"].status == "pass"
    unmasked = run_tier1(
        PortableIdiomsLM(), progress=False, batch_size=1, checks=["padding_invariance", "batch_independence"]
    )
    assert [r.status for r in unmasked] == ["skip", "skip"]
    assert "attention_mask" in unmasked["padding_invariance"].advice
    assert "batch_size=2" in unmasked["batch_independence"].advice


@pytest.mark.parametrize(("model", "cause"), [(EvalDropoutLM, "determinism"), (NaNLM, "numerical_stability")])
def test_checks_that_compare_two_forwards_skip_when_outputs_are_random_or_nan(model, cause):
    compared = ["causality", "batch_independence", "state_dict_roundtrip"]
    report = run_tier1(model(), task="causal_lm", checks=[*compared, cause], progress=False)
    assert report[cause].status == "fail"
    for check_id in compared:
        assert report[check_id].status == "skip", report[check_id].summary
        assert f"(see {cause})" in report[check_id].summary


def test_a_declared_masked_lm_skips_causality_without_a_warning():
    result = run_tier1(LateLeakGPT(), task="masked_lm", checks=["causality"], progress=False)["causality"]
    assert result.status == "skip" and "override" in result.summary


def test_portable_idioms_and_a_minus_inf_mask_module_are_not_flagged():
    report = run_tier1(
        PortableIdiomsLM(), progress=False, checks=["causality", "numerical_stability", "device_portability"]
    )
    for result in report:
        assert result.status == "pass", f"{result.id}: {result.summary}"
    stats = report["numerical_stability"].metrics
    assert stats["first_nonfinite_module"] is None
    assert stats["per_module_max_abs"]["causal"] == 0.0  # -inf is a mask, not an activation


def test_a_broken_forward_makes_dependent_checks_skip_with_the_reason():
    report = run_tier1(ShortPositionLM(), progress=False, checks=["output_shape", "causality", "gradient_flow"])
    assert report["output_shape"].status == "fail"
    for check_id in ("causality", "gradient_flow"):
        assert report[check_id].status == "skip"
        assert "index out of range" in report[check_id].summary


def test_overfit_batch_skips_when_the_time_budget_is_spent():
    result = run_tier1(CheckedGPT(), checks=["overfit_batch"], time_budget=1e-6, progress=False)["overfit_batch"]
    assert result.status == "skip"
    assert "time" in result.summary and "time_budget" in result.advice
