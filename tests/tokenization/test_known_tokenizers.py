from __future__ import annotations

import socket

import pytest

from utils.tokenization import KNOWN_TOKENIZERS, KnownTokenizer, find_known_tokenizers
from utils.tokenization._common import _probe, hub_offline_reason
from utils.tokenization.known_tokenizers import (
    GPT2,
    OPT,
    PYTHIA,
    ROBERTA,
    build_table,
    check_loaded_length,
    load_pretrained,
)

# Sizes the table must cover, with the tokenizer length each is served by.
EXPECTED = {
    50257: 50257,
    50304: 50257,
    30522: 30522,
    28996: 28996,
    32100: 32100,
    32128: 32100,
    50265: 50265,
    50272: 50265,
    50277: 50277,
    32000: 32000,
    32768: 32768,
    151936: 151646,
    49152: 49152,
}


def test_table_covers_the_common_model_sizes() -> None:
    for size, length in EXPECTED.items():
        assert KNOWN_TOKENIZERS[size].length == length, size


def test_every_entry_fits_its_size_and_names_a_hub_repository() -> None:
    for size, tok in KNOWN_TOKENIZERS.items():
        assert tok.length <= size
        owner, _, name = tok.repo.partition("/")
        assert owner and name, tok.repo


def test_build_table_refuses_duplicates_and_tokenizers_too_big_for_their_size() -> None:
    a = KnownTokenizer("org/a", 100, "A")
    assert build_table([(100, a), (128, a)]) == {100: a, 128: a}
    with pytest.raises(ValueError, match="vocabulary size 100 is listed twice"):
        build_table([(100, a), (100, KnownTokenizer("org/b", 90, "B"))])
    with pytest.raises(ValueError, match="org/a emits ids up to 99, which do not fit 64 rows"):
        build_table([(64, a)])


def test_listed_size_first_then_tokenizers_padded_to_it() -> None:
    matches = find_known_tokenizers(50304)
    assert [m.tokenizer for m in matches] == [GPT2, PYTHIA, ROBERTA, OPT]
    assert [m.unused_rows for m in matches] == [47, 27, 39, 39]
    assert matches[0].how == "listed for this size"
    assert "50277 padded to a multiple of 64" in matches[1].how
    assert find_known_tokenizers(50257)[0].unused_rows == 0
    assert find_known_tokenizers(12345) == []


def test_padding_rule_accepts_multiples_of_64_and_128_only() -> None:
    table = {1000: KnownTokenizer("org/x", 1000, "X")}
    assert [m.unused_rows for m in find_known_tokenizers(1024, table)] == [24]
    assert find_known_tokenizers(1100, table) == []
    assert find_known_tokenizers(999, table) == []


def test_a_loaded_tokenizer_larger_than_the_model_is_caught(bpe_tokenizer) -> None:
    table = {800: KnownTokenizer("org/x", 800, "X")}
    match = find_known_tokenizers(800, table)[0]
    assert check_loaded_length(match, bpe_tokenizer) == ""
    small = find_known_tokenizers(700, {700: KnownTokenizer("org/x", 700, "X")})[0]
    assert "has 800 tokens, more than the model's 700 rows" in check_loaded_length(small, bpe_tokenizer)


def test_offline_the_hub_is_not_asked_and_the_reason_is_given() -> None:
    assert "HF_HUB_OFFLINE" in hub_offline_reason()
    asked = []
    with pytest.raises(OSError, match="not in the local cache, and the hub is unavailable: offline"):
        load_pretrained("openai-community/gpt2", lambda: asked.append(1) or "offline for the test")
    assert asked == [1]


def test_an_unreachable_hub_is_found_out_quickly(unreachable_hub) -> None:
    reason = hub_offline_reason()
    assert reason.startswith(f"{unreachable_hub} cannot be reached (ConnectionRefusedError")


def test_a_local_folder_loads_without_asking_about_the_hub(tmp_path, bpe_tokenizer) -> None:
    bpe_tokenizer.save_pretrained(tmp_path)
    tok = load_pretrained(str(tmp_path), lambda: pytest.fail("hub must not be consulted"))
    assert len(tok) == 800


def test_probe_reports_refused_and_open_ports_quickly() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert "ConnectionRefusedError" in _probe("127.0.0.1", port, 2.0)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert _probe("127.0.0.1", server.getsockname()[1], 2.0) == ""
