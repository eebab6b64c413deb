"""The embedded examples behave as their descriptions say, and the default corpus is real text."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from utils.examples import default_corpus, example_path, list_examples
from utils.loading import load_model


def test_examples_are_listed_and_found():
    assert list_examples() == ["gpt-mini", "builder-export", "bert-mini"]
    for name in list_examples():
        folder = example_path(name)
        assert (folder / "model.py").is_file() and (folder / "config.json").is_file()
    with pytest.raises(ValueError, match="unknown example 'gpt2'; examples: gpt-mini, builder-export, bert-mini"):
        example_path("gpt2")


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return load_model("example:gpt-mini").model.eval()


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    return load_model("example:bert-mini").model.eval()


# -- gpt-mini -----------------------------------------------------------------------------


def test_gpt_mini_sizes(gpt):
    loaded = load_model("example:gpt-mini")
    cfg = loaded.config
    assert 900_000 <= loaded.describe()["parameters"]["total"] <= 1_200_000
    assert cfg.raw["task"] == "causal_lm"
    # the vocabulary differs from every other dimension, so a transposed shape shows
    others = {
        cfg.raw["d_model"],
        cfg.raw["d_ff"],
        cfg.max_seq_len,
        cfg.raw["num_heads"],
        cfg.raw["num_layers"],
    }
    assert cfg.vocab_size not in others
    assert gpt.lm_head.weight is gpt.tok_emb.weight


@torch.no_grad()
def test_gpt_mini_logits_and_causality(gpt):
    ids = torch.randint(0, 2048, (2, 20))
    logits = gpt(ids)
    assert logits.shape == (2, 20, 2048)
    changed = ids.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 2048
    after = gpt(changed)
    torch.testing.assert_close(after[:, :12], logits[:, :12])
    assert (after[:, 12:] - logits[:, 12:]).abs().max() > 1e-3


@torch.no_grad()
def test_gpt_mini_key_padding(gpt):
    ids = torch.randint(0, 2048, (1, 10))
    mask = torch.ones(1, 10, dtype=torch.long)
    torch.testing.assert_close(gpt(ids, mask), gpt(ids))
    # left padding: the real tokens must not see the pad tokens, and nothing turns NaN
    padded = torch.cat([torch.full((1, 3), 7), ids], dim=1)
    pad_mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), mask], dim=1)
    out = gpt(padded, pad_mask)
    assert not out.isnan().any()
    other = padded.clone()
    other[:, :3] = 99
    torch.testing.assert_close(gpt(other, pad_mask)[:, 3:], out[:, 3:])
    assert (gpt(other)[:, 3:] - gpt(padded)[:, 3:]).abs().max() > 1e-3  # without the mask they do


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["gpt-mini", "bert-mini"])
@torch.no_grad()
def test_examples_run_on_cuda(name):
    model = load_model(f"example:{name}").model.eval()
    vocab = model.tok_emb.num_embeddings
    ids = torch.randint(0, vocab, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :4] = 0
    expected = model(ids, mask)
    out = model.cuda()(ids.cuda(), mask.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), expected, atol=2e-4, rtol=2e-4)


def test_gpt_mini_refuses_too_long_inputs(gpt):
    with pytest.raises(ValueError, match="sequence length 257 is longer than max_seq_len 256"):
        gpt(torch.zeros(1, 257, dtype=torch.long))


def test_gpt_mini_learns():
    torch.manual_seed(0)
    model = load_model("example:gpt-mini").model.train()
    ids = torch.randint(0, 2048, (2, 17))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 2048), ids[:, 1:].reshape(-1))

    first = loss().item()
    for _ in range(15):
        opt.zero_grad()
        step = loss()
        step.backward()
        opt.step()
    assert first > 7.0 and step.item() < 0.6 * first


# -- bert-mini ----------------------------------------------------------------------------


@torch.no_grad()
def test_bert_mini_is_a_bidirectional_masked_lm(bert):
    loaded = load_model("example:bert-mini")
    assert loaded.config.raw["task"] == "masked_lm"
    ids = torch.randint(0, 3000, (2, 16))
    logits = bert(ids)
    assert logits.shape == (2, 16, 3000)
    changed = ids.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 3000
    # earlier positions see later ones
    assert (bert(changed)[:, :12] - logits[:, :12]).abs().max() > 1e-3


@torch.no_grad()
def test_bert_mini_key_padding(bert):
    ids = torch.randint(0, 3000, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[:, 8:] = 0
    out = bert(ids, mask)
    other = ids.clone()
    other[:, 8:] = 5
    torch.testing.assert_close(bert(other, mask)[:, :8], out[:, :8], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gpt-mini", "bert-mini"])
@torch.no_grad()
def test_initial_loss_is_near_uniform(name):
    """Small initial weights: before training the model predicts nearly uniformly, so the
    first loss is close to ln(vocab_size) and not inflated by huge logits."""
    torch.manual_seed(0)
    model = load_model(f"example:{name}").model.eval()
    vocab = model.tok_emb.num_embeddings
    ids = torch.randint(0, vocab, (4, 32))
    loss = F.cross_entropy(model(ids).reshape(-1, vocab), ids.reshape(-1))
    assert abs(loss.item() - math.log(vocab)) < 0.5


# -- builder-export -----------------------------------------------------------------------


def intended_forward(g, input_ids, attention_mask=None):
    """The forward pass the canvas graph of builder-export describes (post-LN blocks,
    causal attention), over the generated module's own layers: the test's oracle."""
    T = input_ids.shape[1]
    pos = torch.arange(T, device=input_ids.device)
    x = g.embedding_0_dropout(g.embedding_0_token(input_ids) + g.embedding_0_pos(pos))
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    padding = None if attention_mask is None else attention_mask == 0
    for block in range(2):
        attn = getattr(g, f"mhsa_{block}")
        a, _ = attn(x, x, x, attn_mask=causal, key_padding_mask=padding, need_weights=False)
        h = getattr(g, f"layernorm_{2 * block}")(x + a)
        x = getattr(g, f"layernorm_{2 * block + 1}")(h + getattr(g, f"ffn_{block}")(h))
    return g.output_0(x)


def test_builder_export_is_the_designers_style():
    loaded = load_model("example:builder-export")
    cfg, model = loaded.config, loaded.model
    assert cfg.is_graph and cfg.raw["task"] == "causal_lm"
    assert [n["params"]["causal"] for n in cfg.nodes_of_type("mhsa")] == [True, True]
    # every node with weights has a module of that name, and the edges connect known nodes
    names = dict(model.named_children())
    for node in cfg.nodes:
        if node["type"] in ("mhsa", "layernorm", "ffn", "output"):
            assert node["id"] in names
    ids = {n["id"] for n in cfg.nodes}
    assert all(a in ids and b in ids for a, b in cfg.edge_pairs())
    with pytest.raises(TypeError, match="missing 6 required positional arguments"):
        model(torch.zeros(1, 4, dtype=torch.long))
    with torch.no_grad():
        logits = intended_forward(model.eval(), torch.randint(0, 1500, (2, 10)))
    assert logits.shape == (2, 10, 1500)


@torch.no_grad()
def test_builder_export_runs_through_adapt_as_the_canvas_meant():
    from utils.adapters import adapt

    loaded = load_model("example:builder-export")
    model = loaded.model.eval()
    adapted = adapt(model, loaded.config)
    ids = torch.randint(0, 1500, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    torch.testing.assert_close(adapted(ids, mask), intended_forward(model, ids, mask))


# -- the corpus ---------------------------------------------------------------------------


def test_default_corpus_is_clean_offline_text():
    text = default_corpus()
    assert 200_000 < len(text.encode()) < 1_000_000
    assert text is default_corpus()  # built once
    assert not re.search(r"^\s*([*=^~])\1{2,}\s*$", text, re.MULTILINE)  # no heading underlines
    assert "\n\n\n" not in text
    words = re.findall(r"[a-z]+", text.lower())
    for common in ("the", "function", "class", "statement"):
        assert words.count(common) > 50
