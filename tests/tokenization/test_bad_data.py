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
    return SimpleNamespace(
        vocab_size=vocab_size,
        vocab_source="config vocab_size",
        max_seq_len=max_seq_len,
        max_seq_len_source="config max_seq_len",
    )


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused_up_front():
    tok = CharacterLevelTokenizer(vocab_size=400)
    with pytest.raises(
        ValueError,
        match=r"the tokenizer emits ids up to 399 but the model has "
        r"vocab_size 300 \(config vocab_size\)",
    ):
        AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=8, profile=profile(300, 64))


def test_max_length_past_the_models_positions_is_refused_up_front():
    tok = CharacterLevelTokenizer(vocab_size=400)
    with pytest.raises(
        ValueError,
        match=r"max_length=128 is more than the model's max_seq_len "
        r"64 \(config max_seq_len\) allows: .*max_length <= 64",
    ):
        AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=128, profile=profile(400, 64))
    # an encoder-decoder's row is a source and a target of up to max_seq_len each
    AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=128, profile=profile(400, 64), task="seq2seq")
    with pytest.raises(ValueError, match=r"allows \(a source and a target of up to max_seq_len each\).*<= 128"):
        AdaptiveTokenizerDataModule(
            dataset=TEXTS, tokenizer=tok, max_length=130, profile=profile(400, 64), task="seq2seq"
        )


def test_a_fitting_tokenizer_and_length_pass_and_unknown_sizes_are_not_guessed():
    tok = CharacterLevelTokenizer(vocab_size=400)
    dm = AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=16, profile=profile(400, 16), cache=False)
    dm.setup()
    assert int(next(iter(dm.train_dataloader()))["input_ids"].max()) < 400
    AdaptiveTokenizerDataModule(dataset=TEXTS, tokenizer=tok, max_length=16, profile=profile(None, None))


def test_a_broken_jsonl_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three\n{"text": "four"}\n')
    dm = AdaptiveTokenizerDataModule(
        dataset=str(path), tokenizer=CharacterLevelTokenizer(400), max_length=4, cache=False
    )
    with pytest.raises(
        ValueError,
        match=rf"{path} line 3: not valid JSON \(.*\); each line of a "
        r"\.jsonl file must be one JSON object",
    ):
        dm.setup()


def test_a_tokenizer_json_of_the_wrong_schema_names_the_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"version": "1.0", "model": "notadict"}))
    with pytest.raises(
        ValueError,
        match=rf"{path}: not a valid tokenizer.json \(.*\); write it "
        "with the tokenizers library",
    ):
        load_user_tokenizer(path)
    with pytest.raises(ValueError, match=rf"{path}: not a valid tokenizer.json"):
        load_user_tokenizer(tmp_path)


def test_lossy_and_wasteful_sizes_are_said_and_the_limits_come_from_one_place():
    from utils.tokenization.limits import LOSSLESS_VOCAB_SIZE, MIN_VOCAB_SIZE

    lossy = AdaptiveTokenizer.load_or_create(vocab_size=50, texts=["héllo wörld ✓ " * 50], use_pretrained=False)
    needed = LOSSLESS_VOCAB_SIZE + 3  # é, ö and ✓ need a row each beside printable ASCII
    assert any(
        n.startswith("lossy: 50 rows leave no room for the 256 byte tokens") and f"vocab_size >= {needed} " in n
        for n in lossy.notes
    ), lossy.notes
    lossless = AdaptiveTokenizer.load_or_create(vocab_size=needed, texts=["héllo wörld ✓ " * 50], use_pretrained=False)
    assert lossless.tokenizer.byte_fallback and not any("lossy" in n for n in lossless.notes)
    wasteful = AdaptiveTokenizer.load_or_create(
        vocab_size=100_000, texts=TEXTS, use_pretrained=False
    )  # BPE stops at ~300
    assert any(n.startswith("wasteful: ") for n in wasteful.notes), wasteful.notes
    with pytest.raises(ValueError, match=rf"at least {MIN_VOCAB_SIZE}"):
        AdaptiveTokenizer.load_or_create(vocab_size=MIN_VOCAB_SIZE - 1)


def test_a_data_file_path_is_read_as_the_tokenizers_text(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("zebra quagga\n\n" * 50)
    choice = AdaptiveTokenizer.load_or_create(vocab_size=400, texts=str(path), use_pretrained=False)
    assert choice.strategy == "character" and "those of your text first" in choice.source
    assert choice.tokenizer.convert_tokens_to_ids("z") < 5 + 10  # the text's own first
    with pytest.raises(TypeError, match="or the path of a data file"):
        AdaptiveTokenizer.load_or_create(vocab_size=400, texts="zebra quagga")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"padding": True},
        {"padding": "max_length", "max_length": 20},
        {"padding": "max_length", "max_length": 4},  # longer rows stay unpadded: a ragged batch
        {"padding": "max_length", "max_length": 4, "truncation": True, "return_tensors": "pt"},
        {"truncation": True, "max_length": 4},
        {"padding": True, "return_tensors": "pt"},
        {"padding": True, "return_tensors": "np"},
        {"padding": True, "padding_side": "left", "return_tensors": "pt"},
        {"padding": True, "padding_side": "left"},
        {"padding": True, "pad_to_multiple_of": 8},
        {"padding": True, "pad_to_multiple_of": 8, "padding_side": "left", "return_tensors": "pt"},
        {"padding": True, "truncation": True, "max_length": 3, "return_tensors": "pt"},
        {"truncation": True, "max_length": 3, "truncation_side": "left"},
        {
            "padding": True,
            "truncation": True,
            "max_length": 3,
            "truncation_side": "left",
            "padding_side": "left",
            "return_tensors": "pt",
        },
        {"truncation": True, "max_length": 2, "return_tensors": "pt"},
        {"padding": True, "return_attention_mask": False},
        {"return_attention_mask": False},
        {"return_attention_mask": True},
        {"padding": True, "return_attention_mask": True, "return_tensors": "pt"},
        {"split_special_tokens": True},
        {"padding": True, "split_special_tokens": True},
        {"add_special_tokens": False},
        {"add_special_tokens": True, "padding": True},
    ],
)
@pytest.mark.parametrize(
    "batch",
    [
        ["ab", "héllo <s> x", "", "✓✓ 世界", "abc" * 5],
        ["plain", "ascii text", "only"],
        ["", ""],
        ["<pad></s>", "\U0001f600 emoji", "\x00nul"],
        ["abcd", "efgh", "ijkl"],  # fixed-size chunks: rows that fill the width
    ],
)
@pytest.mark.parametrize("vocab_size", [300, 1000])  # unknown characters: <unk>, then bytes
@pytest.mark.parametrize("block_chars", [4, 1 << 14])  # a block per text or two; one block
def test_the_batch_fast_path_gives_what_the_general_path_gives(monkeypatch, options, batch, vocab_size, block_chars):
    import numpy as np
    import torch

    import utils.tokenization.character_tokenizer as character

    monkeypatch.setattr(character, "BLOCK_CHARS", block_chars)
    tok = CharacterLevelTokenizer(vocab_size=vocab_size, texts=["héllo wörld <s>"])
    assert tok.byte_fallback == (vocab_size == 1000)
    options = dict(options)  # shared by every case of the parametrisation
    tok.truncation_side = options.pop("truncation_side", "right")
    try:
        fast = tok(batch, **options)
    except ValueError as exc:  # e.g. a ragged batch as tensors: the same refusal both ways
        monkeypatch.setattr(CharacterLevelTokenizer, "_batch_fast_path_applies", lambda *a: False)
        with pytest.raises(ValueError, match="(?i)tensor"):
            tok(batch, **options)
        assert "tensor" in str(exc).lower()
        return
    monkeypatch.setattr(CharacterLevelTokenizer, "_batch_fast_path_applies", lambda *a: False)
    general = tok(batch, **options)
    assert set(fast) == set(general)
    for key in general:
        assert type(fast[key]) is type(general[key])
        if isinstance(general[key], list):
            assert fast[key] == general[key]
            assert all(type(i) is int for row in fast[key] for i in row)  # np.int32(5) == 5 too
        else:
            assert fast[key].dtype == general[key].dtype
            assert torch.equal(torch.as_tensor(np.asarray(fast[key])), torch.as_tensor(np.asarray(general[key])))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"padding": True, "return_tensors": "pt"},
        {"padding": True, "truncation": True, "max_length": 3},
        {"padding": True, "padding_side": "left"},
    ],
)
def test_batch_calls_never_reach_the_per_text_loop(monkeypatch, options):
    from transformers import PreTrainedTokenizer

    def per_text_loop(*args, **kwargs):
        raise AssertionError("the batch took the per-text path")

    tok = CharacterLevelTokenizer(vocab_size=1000)
    monkeypatch.setattr(PreTrainedTokenizer, "_encode_plus", per_text_loop)
    assert len(tok(["héllo 世界", "", "abc"], **options)["input_ids"]) == 3
