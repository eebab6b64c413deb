"""capture_attention against an oracle for every attention style, and the model left alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.analysis.models import (
    STYLES,
    EncoderLM,
    NanoGPT,
    StructuredLM,
    VariantLM,
    hf_model,
    mha_reference,
)
from utils.adapters import adapt
from utils.analysis.attention import (
    CaptureError,
    capture_attention,
    run_with_capture,
    run_with_heads_ablated,
)
from utils.loading import load_model

TOL = 1e-5  # float32 recomputation against the model's own kernels
EXPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "builder_exports"


def _ids(vocab: int, B: int = 2, T: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def _available(maps):
    return [m for m in maps if m.available]


def _assert_match(maps, reference, rows: torch.Tensor | None = None) -> None:
    """Same number of calls, same weights (on real query rows), verified to within TOL."""
    maps = _available(maps)
    assert len(maps) == len(reference)
    for m, ref in zip(maps, reference):
        assert m.weights.shape == ref.shape and m.weights.dtype == torch.float32
        diff = (m.weights - ref.float()).abs()
        if rows is not None:  # (B, T) real query positions
            diff = diff[rows[:, None, :, None].expand_as(diff)]
        assert diff.max() < TOL, (m.module, float(diff.max()))
        assert m.max_error < TOL, (m.module, m.errors)


def _padded(ids: torch.Tensor, n: int = 3) -> torch.Tensor:
    mask = torch.ones_like(ids)
    mask[1, -n:] = 0
    return mask


# -- Hugging Face ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_hf_eager_matches_output_attentions(kind):
    model = hf_model(kind, "eager")
    ids = _ids(99)
    mask = _padded(ids)
    adapted = adapt(model)
    maps, logits = run_with_capture(adapted, ids, mask)
    with torch.no_grad():
        assert torch.equal(logits, adapted(ids, mask))  # capture changes no output
        ref = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    _assert_match(maps, ref, rows=mask.bool())
    assert {m.method for m in maps} == {"softmax"}


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_hf_sdpa_matches_the_eager_twin(kind):
    """SDPA weights are recomputed (Llama: 4 query heads over 2 key/value heads); the eager
    twin with the same weights says what they must be."""
    sdpa, eager = hf_model(kind, "sdpa"), hf_model(kind, "eager")
    eager.load_state_dict(sdpa.state_dict())
    ids = _ids(99, seed=1)
    mask = _padded(ids)
    adapted = adapt(sdpa)
    maps, logits = run_with_capture(adapted, ids, mask)
    with torch.no_grad():
        assert torch.equal(logits, adapted(ids, mask))
        ref = eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    _assert_match(maps, ref, rows=mask.bool())
    assert {m.method for m in maps} == {"sdpa"}
    assert maps[0].module.endswith("layers.0.self_attn") or ".0." in maps[0].module


# -- nanoGPT, nn.TransformerEncoder, the embedded examples ---------------------------------------


def test_nanogpt_sdpa_matches_its_manual_path():
    flash, manual = NanoGPT(flash=True).eval(), NanoGPT(flash=False).eval()
    manual.load_state_dict(flash.state_dict())
    ids = _ids(97, T=12)
    maps = capture_attention(adapt(flash), ids)
    with torch.no_grad():
        manual(ids, ids)
    _assert_match(maps, [b.seen for b in manual.h])
    assert [m.module for m in maps] == ["h.0", "h.1"]
    manual_maps = capture_attention(adapt(manual), ids)
    assert {m.method for m in manual_maps} == {"softmax"}
    _assert_match(manual_maps, [b.seen for b in manual.h])


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_matches_the_module(batch_first):
    model = EncoderLM(batch_first).eval()
    adapted = adapt(model)
    assert adapted.profile.batch_first is batch_first
    ids = _ids(97, B=3, T=9)
    mask = _padded(ids, 2)
    maps = capture_attention(adapted, ids, mask)
    ref = mha_reference(model, lambda: adapted(ids, mask))
    _assert_match(maps, ref, rows=mask.bool())
    assert [m.module for m in maps] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    w = maps[0].weights
    assert w.triu(1).abs().max() == 0  # causal: no weight on later keys
    assert w[1, :, :6, -2:].abs().max() == 0  # padding: no weight on pad keys


class _MHAVariantLM(nn.Module):
    """One nn.MultiheadAttention in a layout other than packed self-attention: separate key
    and value widths (separate projections), or bias_k/bias_v with add_zero_attn."""

    def __init__(self, layout: str):
        super().__init__()
        kdim = 12 if layout == "kdim" else None
        extras = layout == "extras"
        self.emb = nn.Embedding(97, 32)
        self.kv = nn.Linear(32, kdim or 32)
        self.attn = nn.MultiheadAttention(
            32, 4, kdim=kdim, vdim=kdim, add_bias_kv=extras, add_zero_attn=extras, batch_first=True
        )
        self.out = nn.Linear(32, 97)

    def forward(self, ids, attention_mask=None):
        x = self.emb(ids)  # (B, T, C)
        kv = self.kv(x)
        T = ids.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        pad = None if attention_mask is None else attention_mask == 0
        return self.out(self.attn(x, kv, kv, attn_mask=causal, key_padding_mask=pad, need_weights=False)[0])


@pytest.mark.parametrize("layout", ["kdim", "extras"])
def test_mha_layouts_match_the_module(layout):
    model = _MHAVariantLM(layout).eval()
    adapted = adapt(model)
    ids = _ids(97, B=3, T=9)
    mask = _padded(ids, 2)
    maps = capture_attention(adapted, ids, mask)
    ref = mha_reference(model, lambda: adapted(ids, mask))
    _assert_match(maps, ref, rows=mask.bool())
    assert maps[0].errors["masked"] == 0 and "output_projected" in maps[0].errors


def test_builder_export_through_the_graph_executor():
    loaded = load_model("example:builder-export")
    adapted = adapt(loaded.model.eval(), loaded.config)
    ids = _ids(1500, T=12)
    maps = capture_attention(adapted, ids)
    ref = mha_reference(loaded.model, lambda: adapted(ids))
    _assert_match(maps, ref)
    assert [m.module for m in maps] == ["mhsa_0", "mhsa_1"] and maps[0].method == "mha"


@pytest.mark.parametrize("export", ["simple_graph", "complex_edges", "flat_config"])
def test_designer_exports_match_the_module(export):
    loaded = load_model(EXPORTS / export)
    adapted = adapt(loaded.model.eval(), loaded.config)
    ids = _ids(adapted.profile.vocab_size, T=8)
    mask = _padded(ids, 2)
    maps, logits = run_with_capture(adapted, ids, mask)
    ref = mha_reference(loaded.model, lambda: adapted(ids, mask))
    _assert_match(maps, ref, rows=mask.bool())
    assert all(m.method == "mha" and m.module.startswith("mhsa_") for m in maps)
    with torch.no_grad():
        torch.testing.assert_close(logits, adapted(ids, mask), rtol=0, atol=1e-5)


def test_gpt_mini_matches_softmax_of_its_own_q_k():
    loaded = load_model("example:gpt-mini")
    model = loaded.model.eval()
    ids = _ids(2048, T=12)
    mask = _padded(ids)
    adapted = adapt(model, loaded.config)
    qk: list[torch.Tensor] = []
    handles = [b.attn.qkv.register_forward_hook(lambda m, i, o: qk.append(o)) for b in model.blocks]
    maps = capture_attention(adapted, ids, mask)
    for h in handles:
        h.remove()
    ref = []
    allowed = model._allowed(mask, 12)  # (B, 1, T, T)
    for out in qk:
        q, k, _ = (t.view(2, 12, 4, 32).transpose(1, 2) for t in out.split(128, dim=2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(32)
        ref.append(F.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1))
    _assert_match(maps, ref, rows=mask.bool())


@pytest.mark.parametrize("kind", ["einsum", "bmm", "baddbmm", "exp", "gqa"])
def test_attention_written_other_ways(kind):
    model = VariantLM(kind).eval()
    adapted = adapt(model, task="causal_lm")
    ids = _ids(97, T=11)
    maps, logits = run_with_capture(adapted, ids)
    _assert_match(maps, [model.attn.seen])
    assert maps[0].module == "attn"
    assert maps[0].method == ("sdpa" if kind == "gqa" else "softmax")
    with torch.no_grad():
        assert torch.equal(logits, adapted(ids))
    assert (run_with_heads_ablated(adapted, ids, {0: [1]}) - logits).abs().max() > 0


# -- the model is left as it was -----------------------------------------------------------------


def _hooks(m: nn.Module) -> tuple[dict, ...]:
    return dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._forward_hooks_always_called)


def _state(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [_hooks(m) for m in model.modules()],
    )


@pytest.mark.parametrize("style", STYLES)
def test_outputs_and_model_unchanged(style):
    model = StructuredLM(style)
    model.train()
    model.head.eval()  # a mixed train/eval state must stay mixed
    adapted = adapt(model)
    fired = []
    model.head.register_forward_hook(lambda *_: fired.append(1))  # the user's own hook stays
    ids = _ids(50, T=16)
    before = _state(model)
    model.eval()
    with torch.no_grad():
        plain = adapted(ids)
    for m, mode in zip(model.modules(), before[1]):
        m.training = mode
    rng = torch.get_rng_state()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    maps, logits = run_with_capture(adapted, ids)
    after = _state(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:] and len(fired) == 2
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    if style == "mha":  # MHA runs its reference path, not the fused kernel, during capture
        torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)
    else:
        assert torch.equal(logits, plain)
    assert len(maps) == 1 and maps[0].weights.shape == (2, 6, 16, 16)


def test_three_styles_capture_the_same_weights():
    ids = _ids(50, T=16)
    maps = [capture_attention(adapt(StructuredLM(s).eval()), ids)[0] for s in STYLES]
    assert [m.method for m in maps] == ["mha", "sdpa", "softmax"]
    for m in maps[1:]:
        torch.testing.assert_close(m.weights, maps[0].weights, rtol=0, atol=1e-5)
    assert all(m.max_error < TOL for m in maps)


def test_ablation_zeroes_one_head_in_every_style():
    ids = _ids(50, T=16)
    outs = []
    for style in STYLES:
        adapted = adapt(StructuredLM(style).eval())
        with torch.no_grad():
            clean = adapted(ids)
        dead = run_with_heads_ablated(adapted, ids, {0: [5]})
        torch.testing.assert_close(dead, clean, rtol=0, atol=1e-5)  # the dead head wrote nothing
        outs.append(run_with_heads_ablated(adapted, ids, {0: [0]}))
        assert (outs[-1] - clean).abs().max() > 1e-2
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=1e-4)
    with pytest.raises(CaptureError, match="could not zero"):
        run_with_heads_ablated(adapted, ids, {3: [0]})


# -- what cannot be seen, and bad input ----------------------------------------------------------


@torch.jit.script
def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


class OpaqueAttention(nn.Module):
    """Attention in a compiled kernel the Python mode cannot look into."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(32, 96)

    def forward(self, x):
        q, k, v = self.qkv(x).split(32, dim=-1)
        return _fused(q, k, v)


class OpaqueLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(97, 32)
        self.attn = OpaqueAttention()
        self.out = nn.Linear(32, 97)

    def forward(self, input_ids):
        return self.out(self.attn(self.emb(input_ids)))


def test_an_unseeable_kernel_is_reported_unavailable():
    maps = capture_attention(adapt(OpaqueLM().eval(), task="masked_lm"), _ids(97))
    assert len(maps) == 1
    assert maps[0].module == "attn" and maps[0].method == "unavailable"
    assert maps[0].weights is None and maps[0].max_error is None and "kernel" in maps[0].note


def test_bad_input_is_one_clear_error():
    adapted = adapt(NanoGPT().eval())
    with pytest.raises(ValueError, match=r"input_ids=.*\(B, T\) tensor of token ids"):
        capture_attention(adapted, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"attention_mask=.*shaped like input_ids"):
        capture_attention(adapted, _ids(97), torch.ones(3, 3))
