"""Shared fixtures for the tokenization tests: offline hub, a private cache folder per test,
and a small deterministic corpus made here (the tests never read shared data)."""

from __future__ import annotations

import random

import pytest

from utils.tokenization import FastBPETrainer

MULTILINGUAL = [
    "Hello 世界! 👋🏽",
    "Grüße aus Köln, ça va? ñandú",
    "مرحبا بالعالم — שלום",
    "e\u0301 a\u0308 \u0915\u093f 👨‍👩‍👧",
]


@pytest.fixture(autouse=True)
def _offline_and_private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test: hub libraries in offline mode, and caches in a folder of its own."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("TBUILDER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def make_corpus(n_docs: int = 300, seed: int = 0) -> list[str]:
    """Pseudo-English documents from a seeded syllable grammar: many distinct words (so BPE
    has merges to learn), punctuation, newlines, and a few non-Latin lines."""
    rng = random.Random(seed)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ren",
        "ta",
        "sho",
        "vel",
        "qu",
        "in",
        "ar",
        "est",
        "ou",
        "ph",
        "str",
        "ing",
        "ed",
        "ly",
        "the",
        "and",
        "of",
    ]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(600)]
    docs = []
    for d in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            sentence = " ".join(rng.choices(words, k=rng.randint(4, 12)))
            sentences.append(sentence.capitalize() + rng.choice([".", "!", "?", ","]))
        body = " ".join(sentences)
        if d % 25 == 0:
            body += "\n" + MULTILINGUAL[(d // 25) % len(MULTILINGUAL)]
        docs.append(body)
    return docs


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="session")
def bpe_tokenizer(corpus: list[str]):
    """A byte-level BPE tokenizer with 800 tokens (read-only: tests must not modify it)."""
    return FastBPETrainer(cache=False, show_progress=False).train_on_dataset(texts=corpus, vocab_size=800)


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    """Online mode, but the hub endpoint is a closed local port: unreachable, no network."""
    import socket

    import datasets.config
    import huggingface_hub.constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    return f"127.0.0.1:{port}"
