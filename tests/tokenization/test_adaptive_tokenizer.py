from __future__ import annotations

import json
import logging

import pytest

from utils.tokenization import (
    AdaptiveTokenizer,
    CharacterLevelTokenizer,
    FastBPETrainer,
    KnownTokenizer,
)


@pytest.fixture
def trainer(tmp_path) -> FastBPETrainer:
    return FastBPETrainer(cache_dir=tmp_path / "bpe", show_progress=False)


@pytest.fixture
def local_known(tmp_path, bpe_tokenizer) -> dict[int, KnownTokenizer]:
    """A 'pretrained' table whose repository is a local folder the test made."""
    folder = tmp_path / "pretrained"
    bpe_tokenizer.save_pretrained(folder)
    return {800: KnownTokenizer(str(folder), 800, "Test BPE")}


def test_a_given_tokenizer_always_wins(tmp_path, corpus, local_known, bpe_tokenizer) -> None:
    folder = tmp_path / "mine"
    CharacterLevelTokenizer(vocab_size=700).save_pretrained(folder)
    choice = AdaptiveTokenizer.load_or_create(vocab_size=800, texts=corpus, tokenizer=folder, known=local_known)
    assert choice.strategy == "user" and isinstance(choice.tokenizer, CharacterLevelTokenizer)
    assert choice.unused_rows == 100 and "always wins" in choice.reason
    assert AdaptiveTokenizer.load_or_create(vocab_size=900, tokenizer=bpe_tokenizer).strategy == "user"


def test_a_given_tokenizer_larger_than_the_model_is_an_error(bpe_tokenizer, tmp_path) -> None:
    with pytest.raises(ValueError, match="has 800 tokens with ids up to 799 but the model has 500 rows"):
        AdaptiveTokenizer.load_or_create(vocab_size=500, tokenizer=bpe_tokenizer)
    gaps = tmp_path / "vocab.json"  # three tokens, but one of them has id 4999
    gaps.write_text(json.dumps({"<unk>": 0, "a": 1, "b": 4999}), encoding="utf-8")
    with pytest.raises(ValueError, match="has 3 tokens with ids up to 4999 but the model has 100 rows"):
        AdaptiveTokenizer.load_or_create(vocab_size=100, tokenizer=gaps)


def test_known_size_uses_the_pretrained_tokenizer(corpus, local_known) -> None:
    choice = AdaptiveTokenizer.load_or_create(vocab_size=800, texts=corpus, known=local_known)
    assert choice.strategy == "pretrained" and len(choice.tokenizer) == 800
    assert "exactly the model's size" in choice.reason and choice.unused_rows == 0
    assert [a.outcome for a in choice.tried] == ["used"]


def test_padded_size_uses_the_pretrained_tokenizer_and_reports_unused_rows(local_known) -> None:
    choice = AdaptiveTokenizer.load_or_create(vocab_size=832, known=local_known)
    assert choice.strategy == "pretrained" and choice.unused_rows == 32
    assert "800 padded to a multiple of 64" in choice.reason and "32 embedding rows" in choice.reason


def test_pretrained_without_padding_token_gets_eos_as_padding(tmp_path, corpus) -> None:
    plain = FastBPETrainer(
        special_tokens={"unk_token": "<unk>", "eos_token": "</s>"}, cache=False, show_progress=False
    ).train_on_dataset(texts=corpus, vocab_size=700)
    plain.save_pretrained(tmp_path / "plain")
    choice = AdaptiveTokenizer.load_or_create(
        vocab_size=700, known={700: KnownTokenizer(str(tmp_path / "plain"), 700, "Plain")}
    )
    assert choice.tokenizer.pad_token == "</s>"
    assert "pad_token is set to eos_token" in choice.notes[0]


def test_offline_pretrained_falls_to_bpe_with_one_log_line(corpus, trainer, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="utils.tokenization.adaptive_tokenizer"):
        choice = AdaptiveTokenizer.load_or_create(vocab_size=50304, texts=corpus, bpe_trainer=trainer)
    assert choice.strategy == "bpe"
    pretrained = [a for a in choice.tried if a.strategy == "pretrained"]
    assert [a.source for a in pretrained][:2] == ["openai-community/gpt2", "EleutherAI/pythia-160m"]
    assert all("offline mode is on" in a.outcome for a in pretrained)
    hub_lines = [r for r in caplog.records if "Hub unavailable" in r.getMessage()]
    assert len(hub_lines) == 1
    assert len(choice.tokenizer) < 50304 and "reached" in choice.notes[0]


def test_unreachable_hub_falls_through_without_hanging(unreachable_hub) -> None:
    choice = AdaptiveTokenizer.load_or_create(vocab_size=50257)
    assert choice.strategy == "character"
    assert f"{unreachable_hub} cannot be reached" in choice.tried[0].outcome


def test_unknown_size_with_text_trains_bpe(corpus, trainer) -> None:
    choice = AdaptiveTokenizer.load_or_create(vocab_size=600, texts=corpus, bpe_trainer=trainer)
    assert choice.strategy == "bpe" and len(choice.tokenizer) == 600
    assert [a.strategy for a in choice.tried] == ["pretrained", "bpe"]
    assert "no known tokenizer fits 600 rows" in choice.tried[0].outcome


def test_small_vocabulary_with_text_is_character_level_from_that_text(corpus) -> None:
    choice = AdaptiveTokenizer.load_or_create(vocab_size=300, texts=corpus)
    assert choice.strategy == "character" and len(choice.tokenizer) == 300
    assert "too few rows for merges" in choice.tried[1].outcome
    assert choice.tokenizer.convert_ids_to_tokens(5) == " "  # the text's most frequent character


def test_no_text_is_character_level() -> None:
    choice = AdaptiveTokenizer.load_or_create(vocab_size=100_000)
    assert choice.strategy == "character" and choice.tokenizer.byte_fallback
    assert "no text to train on" in choice.tried[1].outcome


def test_pretrained_can_be_switched_off(corpus, local_known, trainer) -> None:
    choice = AdaptiveTokenizer.load_or_create(
        vocab_size=800, texts=corpus, known=local_known, use_pretrained=False, bpe_trainer=trainer
    )
    assert choice.strategy == "bpe" and choice.tried[0].outcome == "skipped: use_pretrained=False"


def test_save_and_reload_the_choice(tmp_path, corpus, trainer) -> None:
    for vocab_size in (600, 300):
        choice = AdaptiveTokenizer.load_or_create(vocab_size=vocab_size, texts=corpus, bpe_trainer=trainer)
        folder = choice.save(tmp_path / f"choice{vocab_size}")
        again = AdaptiveTokenizer.load(folder)
        assert again.to_dict() == choice.to_dict()
        assert again.tokenizer.encode(corpus[0]) == choice.tokenizer.encode(corpus[0])


def test_bad_arguments_get_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="vocab_size must be a whole number of rows \\(at least 6"):
        AdaptiveTokenizer.load_or_create(vocab_size="8000")
    with pytest.raises(TypeError, match="not one string"):
        AdaptiveTokenizer.load_or_create(vocab_size=8000, texts="some text")
    with pytest.raises(FileNotFoundError, match="tokenizer_choice.json not found"):
        AdaptiveTokenizer.load(tmp_path)
