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


def test_an_encoder_decoder_generates_the_target_its_decoder_would_pick_step_by_step():
    from tests.tiers.zoo_broken import TinySeq2Seq

    torch.manual_seed(0)
    raw = TinySeq2Seq().eval()
    tok = CharacterLevelTokenizer(vocab_size=97)
    source = torch.tensor([tok.encode("abcab", add_special_tokens=False)])
    decoder_in = torch.zeros(1, 1, dtype=torch.long)  # the start token (no config: the pad id 0)
    with torch.no_grad():
        for _ in range(6):  # greedy by hand: feed the decoder its own tokens
            nxt = raw(source, decoder_input_ids=decoder_in)[:, -1].argmax(-1)
            decoder_in = torch.cat([decoder_in, nxt[:, None]], dim=1)
    want = tok.decode(decoder_in[0, 1:].tolist(), skip_special_tokens=True)
    got = generate_text(adapt(raw), tok, "abcab", max_new_tokens=6, temperature=0)
    assert got == want and not got.startswith("abcab")  # the target, not the source again


def test_a_model_that_is_not_generative_is_refused_by_name():
    from utils.adapters.lightning_module import UniversalModelAdapter
    from utils.loading import load_model

    loaded = load_model("example:bert-mini")  # a masked LM: it fills blanks, it does not continue
    module = UniversalModelAdapter(adapt(loaded.model, loaded.config))
    with pytest.raises(ValueError, match="causal LM or an encoder-decoder; this model's task is masked_lm"):
        module.generate(torch.zeros(1, 4, dtype=torch.long), max_new_tokens=1)


def test_an_encoder_decoder_refuses_a_source_longer_than_it_reads():
    from tests.tiers.zoo_broken import TinySeq2Seq
    from utils.adapters.lightning_module import UniversalModelAdapter

    module = UniversalModelAdapter(adapt(TinySeq2Seq()))
    limit = module.profile.max_seq_len
    with pytest.raises(ValueError, match=f"the source has {limit + 1} tokens and this model reads at most {limit}"):
        module.generate(torch.zeros(1, limit + 1, dtype=torch.long), max_new_tokens=1)
