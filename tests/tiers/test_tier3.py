"""Tier 3: each check passes on a model that learns and fails (or warns) on one built not to.

Runs are tiny (character tokens, 32-token rows, tens of steps) on a made-up grammar whose next
character is predictable from context, so a working model beats the unigram entropy fast.
"""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from tests.training.tier3_models import (
    BlindLM,
    DivergingLM,
    EncoderDecoder,
    EndsAtOnceLM,
    NaNLM,
    NoisyBufferLM,
    StandardLM,
    TinyLM,
)
from utils.tiers.tier3 import TIER3_CHECK_IDS, run_tier3
from utils.tokenization import CharacterLevelTokenizer

V, T = 128, 32
FAST = dict(
    max_steps=40,
    eval_every=10,
    eval_batches=2,
    batch_size=8,
    seq_len=T,
    learning_rate=1e-2,
    logger="none",
    progress=False,
)


def grammar(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    who, verb, what = ["the cat", "a dog", "my fox"], ["sees", "eats", "likes"], ["fish", "hay"]
    return [f"{rng.choice(who)} {rng.choice(verb)} {rng.choice(what)}." for _ in range(n)]


@pytest.fixture(scope="module")
def tok():
    return CharacterLevelTokenizer(vocab_size=V)


def tier3(model, tmp_path, tok, **kwargs):
    torch.manual_seed(0)
    return run_tier3(model, data=grammar(), tokenizer=tok, out_dir=tmp_path / "run", **{**FAST, **kwargs})


@pytest.fixture(scope="module")
def good(tmp_path_factory, tok):
    torch.manual_seed(0)  # the baseline's own seed: at 40 steps the init still shows
    return tier3(StandardLM(V, T), tmp_path_factory.mktemp("good"), tok)


def test_a_learning_model_passes_every_check_it_was_asked(good):
    assert [r.id for r in good] == list(TIER3_CHECK_IDS)
    status = {r.id: r.status for r in good}
    assert status == {
        "training": "pass",
        "generalization": "pass",
        "baseline_comparison": "pass",
        "hyperparameter_search": "skip",
        "generation": "pass",
        "export": "pass",
    }
    assert good["training"].metrics["best_val_loss"] < good["training"].metrics["unigram_entropy"]
    assert good["export"].metrics["formats"]["safetensors"]["max_abs_diff"] == 0.0
    assert "skip" in good.verdict()  # a skipped check never reads as "all passed"


def test_the_run_folder_holds_the_report_export_and_runs(good):
    out = __import__("pathlib").Path(good.meta["out_dir"])
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.json").is_file()
    assert (out / "report" / "figures" / "baseline_comparison-val_loss_vs_tokens.png").is_file()
    assert (out / "export" / "model.safetensors").is_file()
    assert (out / "export" / "tokenizer").is_dir()
    assert (out / "train" / "checkpoints" / "last.ckpt").is_file()


def test_a_model_that_ignores_its_input(tmp_path, tok):
    # width 128: as many parameters as a 1-layer GPT-2 of width 32, so a baseline fits
    report = tier3(BlindLM(V, T, width=128), tmp_path, tok, checks=["training", "baseline_comparison", "generation"])
    assert report["generation"].status == "fail"
    assert report["generation"].metrics["prompt_sensitivity"] == 0.0
    assert report["training"].status != "pass"  # stuck near chance or at the unigram entropy
    assert report["baseline_comparison"].status == "warn"
    assert "worse than the baseline by" in report["baseline_comparison"].summary


def test_a_model_that_ends_every_prompt_at_once_warns_in_generation(tmp_path, tok):
    report = tier3(EndsAtOnceLM(V, T, eos_id=tok.eos_token_id), tmp_path, tok, checks=["generation"], baseline=False)
    assert report["generation"].status == "warn"
    assert "Every greedy continuation is empty" in report["generation"].summary
    assert report["generation"].metrics["prompt_sensitivity"] > 1e-5


def test_an_encoder_decoder_trains_as_a_prefix_lm_against_a_bart_baseline(tmp_path, tok):
    checks = ["training", "generalization", "baseline_comparison", "generation", "export"]
    report = tier3(EncoderDecoder(V, T), tmp_path, tok, checks=checks)
    assert report["training"].status == "pass", report["training"].summary
    assert report["generalization"].status == "pass"
    assert report["baseline_comparison"].status in ("pass", "warn")
    assert report["baseline_comparison"].metrics["sizing"]["family"] == "bart"
    assert report["generation"].status != "fail", report["generation"].summary
    assert report["generation"].metrics["prompt_sensitivity"] > 1e-5
    assert report["export"].status == "pass", report["export"].summary


def test_an_encoder_decoder_that_ignores_its_source_fails_generation(tmp_path, tok):
    report = tier3(EncoderDecoder(V, T, blind=True), tmp_path, tok, checks=["training", "generation"], baseline=False)
    assert report["training"].status == "pass"  # its decoder alone is a language model
    assert report["generation"].status == "fail"
    assert report["generation"].metrics["prompt_sensitivity"] == 0.0


def test_a_model_whose_loss_climbs_fails_training(tmp_path, tok):
    report = tier3(DivergingLM(V, T), tmp_path, tok, checks=["training"], baseline=False)
    assert report["training"].status == "fail" and "diverged" in report["training"].summary


def test_a_model_that_goes_nan_fails_training_and_every_search_trial(tmp_path, tok):
    report = tier3(
        NaNLM(V, T),
        tmp_path,
        tok,
        checks=["training", "hyperparameter_search"],
        baseline=False,
        search_trials=1,
        max_steps=6,
        eval_every=3,
    )
    assert report["hyperparameter_search"].status == "fail"
    assert report["hyperparameter_search"].metrics["states"] == {"FAIL": 1}
    assert report["training"].status == "fail" and "non-finite" in report["training"].summary


def test_a_search_picks_the_settings_the_model_trains_with(tmp_path, tok):
    report = tier3(
        TinyLM(V, T),
        tmp_path,
        tok,
        checks=["training", "hyperparameter_search"],
        baseline=False,
        search_trials=2,
        max_steps=10,
        eval_every=5,
    )
    search = report["hyperparameter_search"]
    assert search.status == "pass" and search.metrics["trials"] == 2
    assert report.meta["settings"]["learning_rate"] == search.metrics["best_params"]["learning_rate"]


def test_overfitting_warns(tmp_path, tok):
    rngs = [random.Random(i) for i in range(20)]  # random letters: nothing to generalise
    texts = ["".join(rng.choice("abcdefghij") for _ in range(40)) for rng in rngs]
    torch.manual_seed(0)
    report = run_tier3(
        TinyLM(V, T, d_model=64),
        data=texts,
        tokenizer=tok,
        out_dir=tmp_path,
        checks=["generalization"],
        baseline=False,
        **{**FAST, "max_steps": 150, "eval_every": 50, "learning_rate": 1e-2},
    )
    assert report["generalization"].status == "warn", report["generalization"].summary


def test_a_model_its_saved_weights_cannot_rebuild_fails_export(tmp_path, tok):
    report = tier3(NoisyBufferLM(V, T), tmp_path, tok, checks=["export"], baseline=False, max_steps=4, eval_every=2)
    assert report["export"].status == "fail"
    assert "does not reproduce" in report["export"].summary


def test_a_jsonl_or_csv_file_trains_on_its_text_column_and_a_broken_line_is_named(tmp_path, tok):
    texts = grammar(120)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    table = tmp_path / "data.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "text"], *[[i, t] for i, t in enumerate(texts)]])
    for path in (jsonl, table):
        report = run_tier3(
            StandardLM(V, T),
            data=str(path),
            tokenizer=tok,
            out_dir=tmp_path / path.suffix[1:],
            checks=["training"],
            **{**FAST, "max_steps": 5, "eval_every": 5},
        )
        assert report.meta["texts"] == len(texts), path
        assert report["training"].status != "fail", report["training"].summary
    unnamed = tmp_path / "unnamed.jsonl"
    unnamed.write_text('{"body": "no text column"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="no 'text' column"):
        run_tier3(StandardLM(V, T), data=unnamed, tokenizer=tok, out_dir=tmp_path / "unnamed", **FAST)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl.*line 2"):
        run_tier3(StandardLM(V, T), data=broken, tokenizer=tok, out_dir=tmp_path / "broken", **FAST)
