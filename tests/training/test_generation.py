"""generate_text: prompt in, prompt plus continuation out, reproducible per seed."""

from __future__ import annotations

import pytest
import torch

from tests.training.tier3_models import TinyLM
from utils import adapt
from utils.tokenization import CharacterLevelTokenizer
from utils.training.generation import generate_text


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tok = CharacterLevelTokenizer(vocab_size=300)
    return adapt(TinyLM(vocab_size=300, max_seq_len=32)), tok


def test_greedy_is_top_k_one_and_continues_the_prompt(setup):
    model, tok = setup
    greedy = generate_text(model, tok, "abc", max_new_tokens=8, temperature=0)
    assert greedy.startswith("abc") and len(greedy) > 3
    assert generate_text(model, tok, "abc", max_new_tokens=8, top_k=1) == greedy


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds(setup):
    model, tok = setup
    kwargs = dict(max_new_tokens=20, temperature=1.5, top_p=0.99)
    first = generate_text(model, tok, ["x", "hello"], seed=1, **kwargs)
    assert first == generate_text(model, tok, ["x", "hello"], seed=1, **kwargs)
    assert first != generate_text(model, tok, ["x", "hello"], seed=2, **kwargs)
    assert first[0].startswith("x") and first[1].startswith("hello")


def test_generation_runs_past_the_context_by_cropping(setup):
    model, tok = setup
    text = generate_text(model, tok, "a" * 30, max_new_tokens=10, temperature=0)
    assert text.startswith("a" * 30)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_bad_options_are_clear_errors(setup, kwargs, match):
    model, tok = setup
    with pytest.raises(ValueError, match=match):
        generate_text(model, tok, "a", **kwargs)
