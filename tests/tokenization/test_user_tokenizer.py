from __future__ import annotations

import json

import pytest
import sentencepiece as spm

from tests.tokenization.conftest import MULTILINGUAL, make_corpus
from utils.tokenization import load_user_tokenizer
from utils.tokenization.user_tokenizer import SentencePieceTokenizer

TEXT = " ".join(MULTILINGUAL) + " and plain words"


def test_tokenizer_object_is_used_as_is(bpe_tokenizer) -> None:
    assert load_user_tokenizer(bpe_tokenizer) is bpe_tokenizer
    wrapped = load_user_tokenizer(bpe_tokenizer.backend_tokenizer)
    assert wrapped.encode(TEXT) == bpe_tokenizer.encode(TEXT) and wrapped.pad_token == "<pad>"


def test_tokenizer_json_file(tmp_path, bpe_tokenizer) -> None:
    path = tmp_path / "tokenizer.json"
    bpe_tokenizer.backend_tokenizer.save(str(path))
    tok = load_user_tokenizer(path)
    assert tok.encode(TEXT) == bpe_tokenizer.encode(TEXT)
    assert (tok.pad_token, tok.eos_token, tok.mask_token) == ("<pad>", "</s>", "<mask>")


def test_hugging_face_folder(tmp_path, bpe_tokenizer) -> None:
    bpe_tokenizer.save_pretrained(tmp_path)
    tok = load_user_tokenizer(str(tmp_path))
    assert tok.encode(TEXT) == bpe_tokenizer.encode(TEXT) and len(tok) == 800


def test_sentencepiece_model_decodes_through_sentencepiece(tmp_path) -> None:
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("\n".join(make_corpus(80, seed=3)[1:]), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=300,
        model_type="bpe",
        pad_id=3,
        minloglevel=2,
    )
    tok = load_user_tokenizer(tmp_path / "sp.model")
    assert isinstance(tok, SentencePieceTokenizer) and len(tok) == 300
    assert (tok.unk_token, tok.bos_token, tok.eos_token, tok.pad_token) == ("<unk>", "<s>", "</s>", "<pad>")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    sentence = "Kalo the mi, and of estou!"
    ids = tok.encode(sentence, add_special_tokens=False)
    assert ids == sp.encode(sentence)
    assert tok.decode(ids) == sp.decode(ids)
    tok.save_pretrained(tmp_path / "saved")
    assert isinstance(load_user_tokenizer(tmp_path / "saved"), SentencePieceTokenizer)


def test_bert_vocab_txt_is_wordpiece_lowercased_when_the_vocabulary_has_no_capitals(tmp_path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n,\n", encoding="utf-8")
    tok = load_user_tokenizer(path)
    assert tok.convert_ids_to_tokens(tok.encode("Hello, worlds", add_special_tokens=False)) == [
        "hello",
        ",",
        "world",
        "##s",
    ]
    assert (tok.pad_token, tok.unk_token, tok.mask_token, tok.bos_token, tok.eos_token) == (
        "[PAD]",
        "[UNK]",
        "[MASK]",
        "[CLS]",
        "[SEP]",
    )
    cased = tmp_path / "cased" / "vocab.txt"
    cased.parent.mkdir()
    cased.write_text("[UNK]\nHello\nhello\n", encoding="utf-8")
    assert load_user_tokenizer(cased.parent).encode("Hello", add_special_tokens=False) == [1]


def test_vocab_json_with_merges_is_byte_level_bpe(tmp_path, bpe_tokenizer) -> None:
    bpe_tokenizer.backend_tokenizer.model.save(str(tmp_path))
    tok = load_user_tokenizer(tmp_path / "vocab.json")
    assert tok.encode(TEXT, add_special_tokens=False) == bpe_tokenizer.encode(TEXT)
    assert tok.decode(tok.encode(TEXT)) == TEXT and tok.pad_token == "<pad>"


def test_vocab_json_alone_is_a_character_or_word_vocabulary(tmp_path) -> None:
    chars = tmp_path / "chars" / "vocab.json"
    chars.parent.mkdir()
    chars.write_text(json.dumps({"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, " ": 4, "\n": 5}), encoding="utf-8")
    tok = load_user_tokenizer(chars)
    assert tok.encode("ab a\nc", add_special_tokens=False) == [2, 3, 4, 2, 5, 1]
    assert tok.decode([2, 3, 4, 2, 5]) == "ab a\n"
    words = tmp_path / "words.json"
    words.write_text(json.dumps({"<unk>": 0, "hello": 1, "world": 2}), encoding="utf-8")
    assert load_user_tokenizer(words).encode("hello there world", add_special_tokens=False) == [1, 0, 2]


def test_unusable_sources_get_errors_naming_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.json does not exist; give a tokenizer.json"):
        load_user_tokenizer(tmp_path / "nothing.json")
    (tmp_path / "weights.bin").write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"weights.bin: unknown tokenizer file type '.bin'"):
        load_user_tokenizer(tmp_path / "weights.bin")
    (tmp_path / "bad.json").write_text('{"model": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.json: invalid JSON at line 1, column 11"):
        load_user_tokenizer(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="neither a tokenizer.json"):
        load_user_tokenizer(tmp_path / "list.json")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 text \(byte 3\)"):
        load_user_tokenizer(tmp_path / "latin1.txt")
    with pytest.raises(TypeError, match="got int"):
        load_user_tokenizer(42)
    (tmp_path / "no_unk.json").write_text(json.dumps({"<pad>": 0, "a": 1, "b": 2}), encoding="utf-8")
    (tmp_path / "no_unk.txt").write_text("[PAD]\nhello\n##s\n", encoding="utf-8")
    for name in ("no_unk.json", "no_unk.txt"):
        with pytest.raises(ValueError, match=rf"{name}: this vocabulary has no unknown token.*add one of"):
            load_user_tokenizer(tmp_path / name)


def test_folders_with_custom_code_or_no_tokenizer_are_refused(tmp_path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tok.MyTok", None]}}), encoding="utf-8"
    )
    with pytest.raises(ValueError, match="custom tokenizer code .auto_map., which is never run"):
        load_user_tokenizer(remote)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match=r"holds no tokenizer files \(found \['notes.md'\]\)"):
        load_user_tokenizer(empty)
