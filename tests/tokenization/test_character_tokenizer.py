from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from tests.tokenization.conftest import MULTILINGUAL
from utils.tokenization import CharacterLevelTokenizer, load_user_tokenizer
from utils.tokenization.character_vocabulary import BYTE_TOKENS, unicode_fill_order

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]


@pytest.mark.parametrize("vocab_size", [100, 1000, 100_000, 500_000])
def test_any_vocabulary_size_is_filled_with_real_characters(vocab_size: int) -> None:
    tok = CharacterLevelTokenizer(vocab_size=vocab_size)
    assert len(tok) == vocab_size == tok.vocab_size
    tokens = tok.convert_ids_to_tokens(list(range(vocab_size)))
    assert tokens[:5] == SPECIALS
    chars = tokens[5 : vocab_size - 256] if tok.byte_fallback else tokens[5:]
    assert all(len(t) == 1 for t in chars), "every filler token is one real character"
    assert len(set(tokens)) == vocab_size


def test_layout_specials_text_by_frequency_unicode_order_then_bytes() -> None:
    tok = CharacterLevelTokenizer(vocab_size=600, texts=["zzz yy x 世世世世"])
    tokens = tok.convert_ids_to_tokens(list(range(600)))
    assert tok.byte_fallback
    assert tokens[5:10] == ["世", " ", "z", "y", "x"]  # counts 4, 3, 3, 2, 1; ties by code point
    rest = tokens[10:344]
    order = [chr(c) for c in unicode_fill_order()[:400] if chr(c) not in "世zyx "]
    assert rest == order[: len(rest)]
    assert rest[:4] == ["\t", "\n", "\r", "!"]
    assert tokens[344:] == list(BYTE_TOKENS)  # the last 256 ids


def test_an_english_text_has_only_ids_python_keeps_cached() -> None:
    text = "The quick brown fox, said Jo: 'JUMPS over 12 lazy dogs!' (#1 & ~%)\n\t" + "".join(
        chr(c) for c in range(0x20, 0x7F)
    )
    for vocab_size in (100, 1000, 100_000):
        tok = CharacterLevelTokenizer(vocab_size=vocab_size, texts=[text])
        assert max(tok.encode(text)) <= 256  # ints -5..256 are shared objects: no allocation per token
    assert max(CharacterLevelTokenizer(vocab_size=100_000).encode(text)) <= 256  # no text given: ASCII first


def test_a_vocabulary_saved_with_the_bytes_after_the_specials_keeps_its_ids(tmp_path) -> None:
    new = CharacterLevelTokenizer(vocab_size=600, texts=["zzz yy x 世世世世"])
    old_layout = SPECIALS + list(BYTE_TOKENS) + new.convert_ids_to_tokens(list(range(5, 344)))
    payload = {"format": "character-level", "byte_fallback": True, "special_tokens": SPECIALS, "tokens": old_layout}
    path = tmp_path / "char_vocab.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    old = CharacterLevelTokenizer(vocab_file=str(path))
    text = "zzz 世 \U0001f600"  # the emoji has no token: its four bytes
    assert old.encode(text)[:5] == [old_layout.index(c) for c in "zzz 世"] == [263, 263, 263, 262, 261]
    assert old.encode(text)[-4:] == [5 + b for b in "\U0001f600".encode()]
    assert old.decode(old.encode(text)) == text == new.decode(new.encode(text))


def test_a_saved_vocabulary_with_its_bytes_out_of_order_is_refused(tmp_path) -> None:
    tokens = SPECIALS + list("abc") + list(BYTE_TOKENS[1:]) + [BYTE_TOKENS[0]]
    payload = {"format": "character-level", "byte_fallback": True, "special_tokens": SPECIALS, "tokens": tokens}
    path = tmp_path / "char_vocab.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"char_vocab.json: byte_fallback is set but the 256 byte tokens are neither the last"
    ):
        CharacterLevelTokenizer(vocab_file=str(path))


def test_ties_in_frequency_are_broken_by_code_point() -> None:
    tok = CharacterLevelTokenizer(vocab_size=100, texts=["ba", "ab"])
    assert tok.convert_ids_to_tokens([5, 6]) == ["a", "b"]


def test_round_trip_is_exact_for_any_unicode_with_byte_fallback() -> None:
    tok = CharacterLevelTokenizer(vocab_size=400, texts=["plain ascii text"])
    assert tok.byte_fallback
    for text in MULTILINGUAL + ["", "\x00\x0c tabs\tand\r\nnewlines", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🫠"]:
        ids = tok.encode(text)
        assert max(ids, default=0) < 400
        assert tok.decode(ids) == text


def test_without_room_for_bytes_unknown_characters_become_unk() -> None:
    tok = CharacterLevelTokenizer(vocab_size=100, texts=["hello"])
    assert not tok.byte_fallback
    ids = tok.encode("hello 世界")
    assert ids[-2:] == [tok.unk_token_id] * 2
    assert tok.decode(ids) == "hello <unk><unk>"


def test_vectorised_encoder_matches_a_plain_dictionary_loop() -> None:
    rng = random.Random(1)
    alphabet = "abcdefgh 世界é👋\n" + "".join(chr(c) for c in range(0x400, 0x420))
    text = "".join(rng.choice(alphabet) for _ in range(5000))
    tok = CharacterLevelTokenizer(vocab_size=300, texts=["abcdefgh 世界"], byte_fallback=True)
    vocab = tok.get_vocab()
    expected = []
    for ch in text:
        if ch in vocab:
            expected.append(vocab[ch])
        else:
            expected.extend(vocab[f"<0x{b:02X}>"] for b in ch.encode("utf-8"))
    assert tok.encode(text) == expected
    assert tok.decode(expected) == text


def test_special_token_strings_in_text_become_their_ids_unless_split() -> None:
    tok = CharacterLevelTokenizer(vocab_size=1000)
    ids = tok.encode("a</s>b<pad>")
    assert ids[1] == tok.eos_token_id and ids[-1] == tok.pad_token_id and len(ids) == 4
    split = tok.encode("a</s>b", split_special_tokens=True)
    assert len(split) == 6 and tok.eos_token_id not in split


def test_hugging_face_call_padding_truncation_tensors_and_decode() -> None:
    tok = CharacterLevelTokenizer(vocab_size=1000)
    batch = tok(["hi", "hello there", ""], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (3, 11) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == [2, 11, 0]
    assert (batch["input_ids"][0, 2:] == tok.pad_token_id).all()
    cut = tok(["hello there"], truncation=True, max_length=4)
    assert cut["input_ids"] == [tok.encode("hell")]
    ids = tok.encode("<s>hi</s>")
    assert tok.decode(ids, skip_special_tokens=True) == "hi"
    assert tok.decode(ids) == "<s>hi</s>"
    assert tok.decode(torch.tensor(ids[1:3])) == "hi"
    roles = (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id)
    assert roles == (0, 1, 2, 3, 4)


def test_custom_special_tokens_take_the_first_ids() -> None:
    tok = CharacterLevelTokenizer(
        vocab_size=200, pad_token="[PAD]", unk_token="[UNK]", bos_token=None, eos_token="[EOS]", mask_token=None
    )
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["[PAD]", "[UNK]", "[EOS]"]
    assert tok.bos_token is None and tok.eos_token_id == 2


def test_save_and_reload_keeps_every_id(tmp_path) -> None:
    tok = CharacterLevelTokenizer(vocab_size=5000, texts=MULTILINGUAL)
    tok.save_pretrained(tmp_path)
    again = CharacterLevelTokenizer.from_pretrained(tmp_path)
    assert again.get_vocab() == tok.get_vocab() and again.byte_fallback == tok.byte_fallback
    text = " ".join(MULTILINGUAL)
    assert again.encode(text) == tok.encode(text)
    assert isinstance(load_user_tokenizer(tmp_path), CharacterLevelTokenizer)


def test_a_corrupted_vocabulary_file_is_refused_with_its_path(tmp_path) -> None:
    CharacterLevelTokenizer(vocab_size=400).save_pretrained(tmp_path)
    path = tmp_path / "char_vocab.json"
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["tokens"][100] = "ab"
    path.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(ValueError, match=r"char_vocab.json: token #100 'ab' is not a single character"):
        CharacterLevelTokenizer.from_pretrained(tmp_path)


def test_bad_arguments_get_clear_errors(monkeypatch) -> None:
    import utils.tokenization.character_tokenizer as character

    monkeypatch.setattr(character, "BLOCK_CHARS", 4)
    with pytest.raises(ValueError, match="vocab_size=5 leaves no room"):
        CharacterLevelTokenizer(vocab_size=5)
    with pytest.raises(TypeError, match="vocab_size must be a whole number .*, got '1000'"):
        CharacterLevelTokenizer(vocab_size="1000")
    with pytest.raises(ValueError, match="byte_fallback=True needs vocab_size > 261"):
        CharacterLevelTokenizer(vocab_size=200, byte_fallback=True)
    tok = CharacterLevelTokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("ok \udc80")
    batch = ["fine"] * 9 + ["ab\ud800cd"]  # past the first block of 4 characters below
    for call in (
        lambda: tok(batch),
        lambda: tok(batch, padding=True, return_tensors="pt"),
        lambda: tok.encode_to_arrays(batch),
    ):
        with pytest.raises(ValueError, match="text 9 of the batch: .*lone surrogate .* at character 2:"):
            call()
    with pytest.raises(ValueError, match="token id 100 is outside"):
        tok.decode([5, 100])


def test_same_arguments_give_the_same_vocabulary() -> None:
    a = CharacterLevelTokenizer(vocab_size=3000, texts=MULTILINGUAL)
    b = CharacterLevelTokenizer(vocab_size=3000, texts=iter(MULTILINGUAL))
    assert a.get_vocab() == b.get_vocab()


def test_encode_to_arrays_is_the_fast_path_without_special_tokens() -> None:
    tok = CharacterLevelTokenizer(vocab_size=1000)
    arrays = tok.encode_to_arrays(["ab", "", "世"])
    assert [a.dtype for a in arrays] == [np.int32] * 3
    assert [a.tolist() for a in arrays] == [tok.encode("ab"), [], tok.encode("世")]


def test_added_tokens_are_recognised_in_text_and_decoded() -> None:
    tok = CharacterLevelTokenizer(vocab_size=1000)
    tok.add_special_tokens({"additional_special_tokens": ["<sep2>"]})
    assert len(tok) == 1001
    ids = tok.encode("a<sep2>b</s>")
    assert ids[1] == 1000 and ids[-1] == tok.eos_token_id and len(ids) == 4
    assert tok.decode(ids) == "a<sep2>b</s>" and tok.decode(ids, skip_special_tokens=True) == "ab"


def test_text_holding_the_internal_marker_characters_still_encodes_exactly() -> None:
    tok = CharacterLevelTokenizer(vocab_size=2000)
    text = "x\ufdd0y</s>z\ufdef"
    ids = tok.encode(text)
    assert ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids) == text
