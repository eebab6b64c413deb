from __future__ import annotations

import json
import logging

import pytest
from transformers import PreTrainedTokenizerFast

from tests.tokenization.conftest import MULTILINGUAL
from utils.tokenization import FastBPETrainer


def trainer(tmp_path, **kwargs) -> FastBPETrainer:
    return FastBPETrainer(cache_dir=tmp_path / "bpe", show_progress=False, **kwargs)


def test_hits_the_requested_size_exactly_when_the_corpus_allows(bpe_tokenizer) -> None:
    assert isinstance(bpe_tokenizer, PreTrainedTokenizerFast)
    assert len(bpe_tokenizer) == 800
    assert bpe_tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    assert (bpe_tokenizer.pad_token_id, bpe_tokenizer.eos_token_id, bpe_tokenizer.mask_token_id) == (0, 3, 4)


def test_byte_level_round_trip_is_exact_on_any_unicode(bpe_tokenizer) -> None:
    for text in MULTILINGUAL + ["", "  spaced\t\tout\r\n", "\x00\x7f control"]:
        ids = bpe_tokenizer.encode(text)
        assert bpe_tokenizer.decode(ids) == text


def test_a_small_corpus_gives_a_smaller_tokenizer_and_says_why(tmp_path) -> None:
    result = trainer(tmp_path).train(texts=["hello world hello world"], vocab_size=1000)
    assert not result.exact
    assert 261 <= result.vocab_size < 1000 == result.requested_vocab_size
    assert len(result.tokenizer) == result.vocab_size
    assert "no pair of tokens occurs 2 or more times" in result.reason
    assert f"{1000 - result.vocab_size} embedding rows go unused" in result.reason
    exhausted = trainer(tmp_path, min_frequency=1).train(texts=["abc abd"], vocab_size=1000)
    assert "no pair is left to merge" in exhausted.reason


def test_trains_from_files_streamed_line_by_line(tmp_path, corpus) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus), encoding="utf-8")
    result = trainer(tmp_path).train(files=[path], vocab_size=700)
    assert result.exact and len(result.tokenizer) == 700


def test_a_one_shot_iterator_streams_and_is_not_cached(tmp_path, corpus, caplog) -> None:
    caplog.set_level(logging.INFO, logger="utils.tokenization.bpe_trainer")
    result = trainer(tmp_path).train(texts=(doc for doc in corpus), vocab_size=600)
    assert result.exact and result.fingerprint is None and not result.from_cache
    assert "one-shot iterator" in caplog.text
    assert not (tmp_path / "bpe").exists()


def test_cache_by_fingerprint_of_corpus_and_settings(tmp_path, corpus) -> None:
    first = trainer(tmp_path).train(texts=corpus, vocab_size=600)
    again = trainer(tmp_path).train(texts=list(corpus), vocab_size=600)
    assert not first.from_cache and again.from_cache
    assert again.fingerprint == first.fingerprint
    assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    other_size = trainer(tmp_path).train(texts=corpus, vocab_size=601)
    other_text = trainer(tmp_path).train(texts=corpus[:-1], vocab_size=600)
    other_setting = trainer(tmp_path, min_frequency=3).train(texts=corpus, vocab_size=600)
    fingerprints = {first.fingerprint, other_size.fingerprint, other_text.fingerprint, other_setting.fingerprint}
    assert len(fingerprints) == 4 and not other_size.from_cache


def test_an_interrupted_cache_entry_is_never_read(tmp_path, corpus, caplog) -> None:
    first = trainer(tmp_path).train(texts=corpus, vocab_size=600)
    folder = next((tmp_path / "bpe").iterdir())
    (folder / "bpe_training.json").unlink()  # the record is written last: no record, no hit
    assert not trainer(tmp_path).train(texts=corpus, vocab_size=600).from_cache
    record = json.loads((folder / "bpe_training.json").read_text())
    assert record["fingerprint"] == first.fingerprint
    (folder / "tokenizer.json").write_text("{broken", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        retrained = trainer(tmp_path).train(texts=corpus, vocab_size=600)
    assert not retrained.from_cache and "unreadable" in caplog.text


def test_save_and_load_in_hugging_face_format(tmp_path, bpe_tokenizer) -> None:
    folder = FastBPETrainer.save(bpe_tokenizer, tmp_path / "tok")
    assert (folder / "tokenizer.json").is_file()
    loaded = FastBPETrainer.load(folder)
    text = " ".join(MULTILINGUAL)
    assert loaded.encode(text) == bpe_tokenizer.encode(text)
    assert loaded.pad_token == "<pad>" and loaded.mask_token == "<mask>"


def test_user_special_tokens(tmp_path, corpus) -> None:
    special = {"pad_token": "[PAD]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
    tok = trainer(tmp_path, special_tokens=special).train_on_dataset(texts=corpus, vocab_size=600)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["[PAD]", "[EOS]", "[UNK]"]
    assert tok.eos_token == "[EOS]" and tok.mask_token is None
    shared = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    gpt2_style = trainer(tmp_path, special_tokens=shared)
    assert gpt2_style.min_vocab_size == 257
    tok = gpt2_style.train_on_dataset(texts=corpus, vocab_size=600)
    assert tok.bos_token_id == tok.eos_token_id == 0 and len(tok) == 600


def test_bad_input_gets_clear_errors(tmp_path, corpus) -> None:
    t = trainer(tmp_path)
    with pytest.raises(ValueError, match=r"vocab_size=200 is below the 261 tokens"):
        t.train(texts=corpus, vocab_size=200)
    with pytest.raises(ValueError, match="exactly one of texts="):
        t.train(vocab_size=600)
    with pytest.raises(ValueError, match="exactly one of texts="):
        t.train(texts=corpus, files=["x.txt"], vocab_size=600)
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        t.train(files=[tmp_path / "missing.txt"], vocab_size=600)
    with pytest.raises(ValueError, match="texts is empty"):
        t.train(texts=["", ""], vocab_size=600)
    with pytest.raises(ValueError, match="yielded no characters"):
        t.train(texts=iter([""]), vocab_size=600)
    with pytest.raises(TypeError, match="texts item 1 is a int"):
        t.train(texts=iter(["ok", 5]), vocab_size=600)
    with pytest.raises(TypeError, match="texts item 2 is a NoneType"):
        t.train(texts=["ok", "fine", None], vocab_size=600)
    with pytest.raises(TypeError, match="not one string"):
        t.train(texts="a whole string", vocab_size=600)
