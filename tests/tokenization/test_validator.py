from __future__ import annotations

import copy

import pytest

from utils.checks.report import TierReport
from utils.tokenization import (
    CharacterLevelTokenizer,
    TokenizerValidationError,
    TokenizerValidator,
    load_user_tokenizer,
)
from utils.tokenization.validator import is_lossless

CHINESE = ["我们在这里学习中文，这是一个测试句子。每个字都不一样：春夏秋冬东南西北"]


def statuses(report: TierReport) -> dict[str, str]:
    return {r.id: r.status for r in report}


def test_a_fitting_lossless_tokenizer_passes_everything(bpe_tokenizer, corpus) -> None:
    report = TokenizerValidator.validate(bpe_tokenizer, expected_vocab_size=800, texts=corpus)
    assert isinstance(report, TierReport) and report.name == "tokenizer"
    assert statuses(report) == {
        "tokenizer.id_range": "pass",
        "tokenizer.special_tokens": "pass",
        "tokenizer.round_trip": "pass",
        "tokenizer.coverage": "pass",
    }
    assert report["tokenizer.coverage"].metrics["chars_per_token"] > 2.0


def test_ids_beyond_the_model_fail_and_strict_lists_every_failure(bpe_tokenizer) -> None:
    report = TokenizerValidator.validate(bpe_tokenizer, expected_vocab_size=500)
    result = report["tokenizer.id_range"]
    assert result.status == "fail" and result.metrics["max_id"] == 799
    assert "300 ids are out of range" in result.summary and "vocab_size >= 800" in result.advice
    with pytest.raises(TokenizerValidationError, match="tokenizer.id_range: The tokenizer emits ids up to 799"):
        TokenizerValidator.validate(bpe_tokenizer, expected_vocab_size=500, strict=True)
    TokenizerValidator.validate(bpe_tokenizer, expected_vocab_size=800, strict=True)


def test_unused_rows_are_reported_not_failed(bpe_tokenizer) -> None:
    result = TokenizerValidator.validate(bpe_tokenizer, expected_vocab_size=1024)["tokenizer.id_range"]
    assert result.status == "pass" and result.metrics["unused_rows"] == 224


def test_colliding_special_tokens_fail(bpe_tokenizer) -> None:
    tok = copy.deepcopy(bpe_tokenizer)
    tok.mask_token = "<pad>"
    result = TokenizerValidator.validate(tok, expected_vocab_size=800)["tokenizer.special_tokens"]
    assert result.status == "fail" and "mask_token and pad_token share id 0" in result.summary


def test_gpt2_style_shared_end_of_text_token_passes(corpus) -> None:
    tok = CharacterLevelTokenizer(
        vocab_size=500,
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        mask_token=None,
    )
    result = TokenizerValidator.validate(tok, expected_vocab_size=500)["tokenizer.special_tokens"]
    assert result.status == "pass"


def test_missing_padding_or_end_of_text_warns() -> None:
    tok = CharacterLevelTokenizer(vocab_size=500, pad_token=None, eos_token=None)
    result = TokenizerValidator.validate(tok, expected_vocab_size=500)["tokenizer.special_tokens"]
    assert result.status == "warn" and "No pad_token and no eos_token" in result.summary


def test_round_trip_fails_when_a_lossless_tokenizer_loses_text() -> None:
    tok = CharacterLevelTokenizer(vocab_size=200, texts=["plain ascii"])
    assert not tok.byte_fallback and not is_lossless(tok)
    report = TokenizerValidator.validate(tok, expected_vocab_size=200, lossless=True)
    assert report["tokenizer.round_trip"].status == "fail"
    assert report["tokenizer.round_trip"].metrics["mismatches"] > 0


def test_round_trip_warns_for_a_tokenizer_lossy_by_design(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[SEP]\nhello\n,\n!\n", encoding="utf-8")
    tok = load_user_tokenizer(tmp_path / "vocab.txt")
    result = TokenizerValidator.validate(tok, expected_vocab_size=6)["tokenizer.round_trip"]
    assert result.status == "warn" and "Lossy by design" in result.summary


def test_lossless_detection(bpe_tokenizer) -> None:
    assert is_lossless(bpe_tokenizer)
    assert is_lossless(CharacterLevelTokenizer(vocab_size=1000))
    assert not is_lossless(CharacterLevelTokenizer(vocab_size=100))


def test_coverage_fails_when_the_text_is_mostly_unknown() -> None:
    tok = CharacterLevelTokenizer(vocab_size=120, texts=["english only text"])
    result = TokenizerValidator.validate(tok, expected_vocab_size=120, texts=CHINESE)["tokenizer.coverage"]
    assert result.status == "fail" and result.metrics["unknown_rate"] > 0.5


def test_coverage_warns_when_text_is_spelled_in_bytes() -> None:
    tok = CharacterLevelTokenizer(vocab_size=400, texts=["english only text"])
    result = TokenizerValidator.validate(tok, expected_vocab_size=400, texts=CHINESE)["tokenizer.coverage"]
    assert result.status == "warn" and result.metrics["chars_per_token"] < 1.0
    assert result.metrics["unknown_tokens"] == 0


def test_coverage_is_skipped_without_text(bpe_tokenizer) -> None:
    assert TokenizerValidator.validate(bpe_tokenizer, 800)["tokenizer.coverage"].status == "skip"


def test_bad_arguments() -> None:
    tok = CharacterLevelTokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="expected_vocab_size must be a positive integer"):
        TokenizerValidator.validate(tok, expected_vocab_size=0)
    with pytest.raises(TypeError, match="not one string"):
        TokenizerValidator.validate(tok, expected_vocab_size=100, texts="abc")
