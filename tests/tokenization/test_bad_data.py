"""Bad data and tokenizers, caught before they cost a training run: each error names the file,
line or the two numbers that disagree."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from utils.tokenization import AdaptiveTokenizer, AdaptiveTokenizerDataModule, CharacterLevelTokenizer
from utils.tokenization.user_tokenizer import load_user_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog " * 4] * 20


def profile(vocab_size: int | None, max_seq_len: int | None) -> SimpleNamespace:
    return SimpleNamespace(vocab_size=vocab_size, vocab_source="config vocab_size",
                           max_seq_len=max_seq_len, max_seq_len_source="config max_seq_len")


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused_up_front():
    tok = CharacterLevelTokenizer(vocab_size=400)
    with pytest.raises(ValueError, match=r"the tokenizer emits ids up to 399 but the model has "
                       r"vocab_size 300 \(config vocab_size\)"):
        AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=8,
                                    profile=profile(300, 64))


def test_max_length_past_the_models_positions_is_refused_up_front():
    tok = CharacterLevelTokenizer(vocab_size=400)
    with pytest.raises(ValueError, match=r"max_length=128 is longer than the model's max_seq_len "
                       r"64 \(config max_seq_len\).*max_length <= 64"):
        AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=128,
                                    profile=profile(400, 64))


def test_a_fitting_tokenizer_and_length_pass_and_unknown_sizes_are_not_guessed():
    tok = CharacterLevelTokenizer(vocab_size=400)
    dm = AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=16,
                                     profile=profile(400, 16), cache=False)
    dm.setup()
    assert int(next(iter(dm.train_dataloader()))["input_ids"].max()) < 400
    AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=16,
                                profile=profile(None, None))


def test_a_broken_jsonl_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three\n{"text": "four"}\n')
    dm = AdaptiveTokenizerDataModule(dataset=str(path), tokenizer=CharacterLevelTokenizer(400),
                                     max_length=4, cache=False)
    with pytest.raises(ValueError, match=rf"{path} line 3: not valid JSON \(.*\); each line of a "
                       r"\.jsonl file must be one JSON object"):
        dm.setup()


def test_a_tokenizer_json_of_the_wrong_schema_names_the_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"version": "1.0", "model": "notadict"}))
    with pytest.raises(ValueError, match=rf"{path}: not a valid tokenizer.json \(.*\); write it "
                       "with the tokenizers library"):
        load_user_tokenizer(path)
    with pytest.raises(ValueError, match=rf"{path}: not a valid tokenizer.json"):
        load_user_tokenizer(tmp_path)


def test_lossy_and_wasteful_sizes_are_said_and_the_limits_come_from_one_place():
    from utils.tokenization.limits import LOSSLESS_VOCAB_SIZE, MIN_VOCAB_SIZE

    lossy = AdaptiveTokenizer.load_or_create(vocab_size=50, texts=["héllo wörld ✓ " * 50],
                                             use_pretrained=False)
    needed = LOSSLESS_VOCAB_SIZE + 3  # é, ö and ✓ need a row each beside printable ASCII
    assert any(n.startswith("lossy: 50 rows leave no room for the 256 byte tokens") and
               f"vocab_size >= {needed} " in n for n in lossy.notes), lossy.notes
    lossless = AdaptiveTokenizer.load_or_create(vocab_size=needed, texts=["héllo wörld ✓ " * 50],
                                                use_pretrained=False)
    assert lossless.tokenizer.byte_fallback and not any("lossy" in n for n in lossless.notes)
    wasteful = AdaptiveTokenizer.load_or_create(vocab_size=100_000, texts=TEXTS,
                                                use_pretrained=False)  # BPE stops at ~300
    assert any(n.startswith("wasteful: ") for n in wasteful.notes), wasteful.notes
    with pytest.raises(ValueError, match=rf"at least {MIN_VOCAB_SIZE}"):
        AdaptiveTokenizer.load_or_create(vocab_size=MIN_VOCAB_SIZE - 1)


def test_a_data_file_path_is_read_as_the_tokenizers_text(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("zebra quagga\n\n" * 50)
    choice = AdaptiveTokenizer.load_or_create(vocab_size=400, texts=str(path), use_pretrained=False)
    assert choice.strategy == "character" and "those of your text first" in choice.source
    assert choice.tokenizer.convert_tokens_to_ids("z") < 5 + 256 + 10  # the text's own first
    with pytest.raises(TypeError, match="or the path of a data file"):
        AdaptiveTokenizer.load_or_create(vocab_size=400, texts="zebra quagga")


@pytest.mark.parametrize("options", [
    {}, {"padding": True}, {"padding": "max_length", "max_length": 20},
    {"truncation": True, "max_length": 4}, {"padding": True, "return_tensors": "pt"},
    {"padding": True, "return_tensors": "np"},
    {"padding": True, "padding_side": "left", "return_tensors": "pt"},
    {"padding": True, "pad_to_multiple_of": 8},
    {"padding": True, "truncation": True, "max_length": 3, "return_tensors": "pt"},
    {"padding": True, "return_attention_mask": False}, {"split_special_tokens": True},
])
@pytest.mark.parametrize("batch", [["ab", "héllo <s> x", "", "✓✓ 世界", "abc" * 5],
                                   ["plain", "ascii text", "only"]])
def test_the_batch_fast_path_gives_what_the_general_path_gives(monkeypatch, options, batch):
    import numpy as np
    import torch

    tok = CharacterLevelTokenizer(vocab_size=300, texts=["héllo wörld <s>"])
    fast = tok(batch, **options)
    monkeypatch.setattr(CharacterLevelTokenizer, "_batch_fast_path_applies", lambda *a: False)
    general = tok(batch, **options)
    assert set(fast) == set(general)
    for key in general:
        assert type(fast[key]) is type(general[key])
        if isinstance(general[key], list):
            assert fast[key] == general[key]
        else:
            assert fast[key].dtype == general[key].dtype
            assert torch.equal(torch.as_tensor(np.asarray(fast[key])),
                               torch.as_tensor(np.asarray(general[key])))
