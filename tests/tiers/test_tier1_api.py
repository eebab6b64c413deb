"""run_tier1 as the notebook and CLI use it: what it accepts, what it refuses, what it leaves
behind (nothing), and no false failure on real-world models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from tests.adapters.zoo import NanoGPT, SeqFirstLM
from tests.tiers.zoo_broken import CheckedGPT, DataTiedLM, NeedsUnknownArgs
from utils.adapters import adapt
from utils.loading import load_model
from utils.tiers.tier1 import CHECK_IDS, TIER1_NAME, run_tier1

PNG = b"\x89PNG\r\n\x1a\n"


def _no_fail(report) -> None:
    failed = {r.id: r.summary for r in report.failed}
    assert not failed, failed


def test_an_unadaptable_model_still_gets_a_report():
    report = run_tier1(NeedsUnknownArgs(), progress=False)
    assert report.name == TIER1_NAME
    assert [r.id for r in report] == list(CHECK_IDS)
    sig = report["forward_signature"]
    assert sig.status == "fail"
    assert "alpha" in sig.metrics["error"]
    assert all(
        r.status == "skip" and "could not be adapted" in r.summary and r.advice
        for r in report
        if r.id != "forward_signature"
    )


def test_bad_options_are_refused_with_the_value():
    with pytest.raises(ValueError, match="'nope'.*known: forward_signature"):
        run_tier1(CheckedGPT(), checks=["causality", "nope"])
    with pytest.raises(ValueError, match="batch_size=0"):
        run_tier1(CheckedGPT(), batch_size=0)
    with pytest.raises(ValueError, match="seq_len=17.*max_seq_len=16"):
        run_tier1(CheckedGPT(), seq_len=17)
    with pytest.raises(ValueError, match="time_budget"):
        run_tier1(CheckedGPT(), time_budget=0)


def test_the_model_is_left_exactly_as_it_was():
    model = CheckedGPT().train()
    model.blocks[1].eval()  # a mixed state must come back mixed
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    run_tier1(model, progress=False)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(rng, torch.get_rng_state())


def test_a_bfloat16_model_is_checked_in_float32_and_given_back_in_bfloat16():
    model = CheckedGPT().to(torch.bfloat16)
    report = run_tier1(model, checks=["causality", "initial_loss"], progress=False)
    assert report["causality"].metrics["max_future_gradient"] == 0.0  # exact zeros need fp32
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_data_tied_weights_are_not_untied_by_the_tier():
    model = DataTiedLM()
    run_tier1(model, progress=False, checks=["weight_sharing", "state_dict_roundtrip"])
    assert model.head.weight.data_ptr() == model.tok.weight.data_ptr()


def test_an_adapted_model_with_overrides_and_a_loaded_model_are_accepted():
    adapted = adapt(CheckedGPT())
    report = run_tier1(adapted, task="masked_lm", checks=["causality"], progress=False)
    assert report["causality"].status == "skip"
    assert "masked_lm (override)" in report["causality"].summary
    assert adapted.profile.task == "causal_lm"  # the caller's profile is untouched
    loaded = load_model(CheckedGPT())
    assert run_tier1(loaded, checks=["causality"], progress=False)["causality"].status == "pass"


def test_the_report_carries_figures_and_renders():
    report = run_tier1(CheckedGPT(), progress=False, checks=["numerical_stability", "gradient_flow", "inference_speed"])
    assert report["numerical_stability"].figures["activation_ranges"].startswith(PNG)
    assert report["gradient_flow"].figures["gradient_norms"].startswith(PNG)
    data = json.loads(report.to_json())
    assert data["status"] == "pass" and data["meta"]["seed"] == 0
    assert "layer_grad_norms" in data["results"][1]["metrics"]
    assert report["inference_speed"].metrics["flops_per_token"] > 0
    assert "## `gradient_flow`" in report.to_markdown()


def test_same_model_same_seed_same_numbers():
    model = CheckedGPT()
    runs = [run_tier1(model, checks=["initial_loss", "overfit_batch"], seed=3, progress=False) for _ in range(2)]
    for check_id in ("initial_loss", "overfit_batch"):
        assert runs[0][check_id].metrics == runs[1][check_id].metrics
    other = run_tier1(model, checks=["initial_loss"], seed=4, progress=False)
    assert other["initial_loss"].metrics["loss"] != runs[0]["initial_loss"].metrics["loss"]


def _hf_models():
    torch.manual_seed(0)
    return {
        "gpt2": GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=101, n_positions=32)),
        "llama": LlamaForCausalLM(
            LlamaConfig(
                vocab_size=103,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=48,
            )
        ),
        "bert": BertForMaskedLM(
            BertConfig(
                vocab_size=107,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=40,
            )
        ),
    }


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_hugging_face_tiny_models_get_no_false_failure(name):
    report = run_tier1(_hf_models()[name], progress=False)
    _no_fail(report)
    assert report["overfit_batch"].status == "pass"
    if name != "bert":
        assert report["causality"].status == "pass"
        assert report["label_leakage"].status == "pass"
        assert report["label_leakage"].metrics["own_loss_convention"] == "shifted"
    assert report["device_portability"].status == "pass"  # traced through HF's .all() checks


@pytest.mark.parametrize("model", [NanoGPT, SeqFirstLM], ids=["nanogpt", "seq-first"])
def test_nanogpt_and_seq_first_models_get_no_false_failure(model):
    report = run_tier1(model(), progress=False)
    _no_fail(report)
    assert report["causality"].status == "pass"
    assert report["batch_independence"].status == "pass"
