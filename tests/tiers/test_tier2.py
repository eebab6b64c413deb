"""run_tier2 as the notebook and CLI use it: what it accepts and refuses, what it leaves
behind (nothing), real text versus random tokens, trained versus untrained, time budget."""

from __future__ import annotations

import json

import pytest
import torch

import utils
from tests.analysis.zoo import TinyLM, V
from tests.tiers.zoo_broken import NeedsUnknownArgs
from utils.tiers.tier2 import ANALYSIS_IDS, TIER2_NAME, run_tier2
from utils.tokenization import CharacterLevelTokenizer

FAST = dict(progress=False, seq_len=12)


def test_it_is_exported_and_refuses_bad_options_with_the_value():
    assert utils.run_tier2 is run_tier2
    with pytest.raises(ValueError, match="'nope'.*known: .*attribution"):
        run_tier2(TinyLM(), analyses=["attribution", "nope"])
    with pytest.raises(ValueError, match="seq_len=1"):
        run_tier2(TinyLM(), seq_len=1)
    with pytest.raises(ValueError, match="seq_len=25.*max_seq_len=24"):
        run_tier2(TinyLM(), seq_len=25)
    with pytest.raises(ValueError, match="time_budget"):
        run_tier2(TinyLM(), time_budget=0)
    with pytest.raises(ValueError, match="needs tokenizer"):
        run_tier2(TinyLM(), texts=["some text"])


def test_an_unadaptable_model_still_gets_a_report_where_everything_skips():
    report = run_tier2(NeedsUnknownArgs(), **FAST)
    assert report.name == TIER2_NAME and report.status == "skip"
    assert all(r.status == "skip" and "could not be adapted" in r.summary for r in report)


def test_the_model_is_left_exactly_as_it_was_and_the_report_renders_everywhere(tmp_path):
    model = TinyLM().train()
    model.blocks[1].eval()  # a mixed state must come back mixed
    hook = model.blocks[0].register_forward_hook(lambda *a: None)
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    report = run_tier2(model, **FAST)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert torch.equal(torch.get_rng_state(), rng)
    hook.remove()

    assert [r.id for r in report] == list(ANALYSIS_IDS) and ANALYSIS_IDS[0] == "attention_patterns"
    assert report.meta["data"] == "random" and "said twice" in report.meta["input"]
    assert report.meta["trained"] is False and "untrained" in report.meta["model_state"]
    assert report.status == "pass", {r.id: r.summary for r in report}
    assert all("untrained" in r.summary for r in report)
    report.save(tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [r["id"] for r in saved["results"]] == list(ANALYSIS_IDS)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert figures >= {
        "attribution-tokens.png",
        "perturbation_sensitivity-curves.png",
        "representation_health-layers.png",
        "weight_spectrum-worst_matrix.png",
    }
    assert "<img" in report._repr_html_() and "attribution" in report.to_text()
    assert "figures/attribution-tokens.png" in (tmp_path / "report.md").read_text()
    assert report["attribution"].metrics["completeness_error"] < 0.05
    assert report["perturbation_sensitivity"].metrics["curves"]["token_replacement"][0.0]["kl"] == 0.0


def test_real_text_labels_tokens_by_their_strings():
    tok = CharacterLevelTokenizer(vocab_size=V)
    texts = ["the quick brown fox jumps over the lazy dog " * 4]
    report = run_tier2(TinyLM(), tokenizer=tok, texts=texts, analyses=["attribution"], **FAST)
    assert report.meta["data"] == "text"
    top = report["attribution"].metrics["top_tokens"]
    assert all(t["token"] in set("thequickbrownfxjmpsvlazydg␣") for t in top)


def test_analyses_picks_a_subset_and_the_time_budget_skips_with_the_reason():
    report = run_tier2(TinyLM(), analyses=["weight_spectrum", "attribution"], **FAST)
    assert [r.id for r in report] == ["attribution", "weight_spectrum"]
    tight = run_tier2(TinyLM(), time_budget=1e-3, **FAST)
    assert all(r.status == "skip" and "time budget" in r.summary for r in tight)
    assert tight.status == "skip"


def test_a_model_confident_and_wrong_on_random_tokens_is_not_read_as_untrained():
    model = TinyLM()
    with torch.no_grad():
        model.head.weight.mul_(50)  # sharp predictions: what a text model makes of random tokens
    report = run_tier2(model, analyses=["weight_spectrum"], **FAST)
    assert report.meta["trained"] is None and "unclear" in report.meta["model_state"]
    assert "unclear on this input" in report["weight_spectrum"].summary
