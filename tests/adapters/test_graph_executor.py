import copy
import json
import pickle

import pytest
import torch

from tests.adapters.exports import ExportSpec, load_generated, reference_forward, write_export
from utils.adapters import ComputationalGraphExecutor, GraphError, ModelSignatureInspector, adapt

VARIANTS = {
    "post_ln_graph": ExportSpec(),
    "pre_ln_graph": ExportSpec(pre_ln=True, n_blocks=3),
    "no_dropout_graph": ExportSpec(dropout=0.0, d_model=40, heads=5),
    "tied_graph": ExportSpec(tied=True, n_blocks=1),
    "wide_graph": ExportSpec(d_model=96, heads=8, vocab=517, max_len=40, n_blocks=4),
    "flat_one_block": ExportSpec(graph=False, n_blocks=1, causal=False),
    "flat_three_blocks": ExportSpec(graph=False, n_blocks=3, causal=False, d_model=32),
    "flat_no_dropout": ExportSpec(graph=False, dropout=0.0, causal=False),
}


def _build(tmp_path, spec):
    folder = write_export(tmp_path / "export", spec)
    model = load_generated(folder)
    config = json.loads((folder / "config.json").read_text())
    return model, config


def _inputs(spec, B=3, T=7):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, spec.vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, T - 2 :] = 0
    return ids, mask


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_executor_matches_reference(tmp_path, name):
    spec = VARIANTS[name]
    model, config = _build(tmp_path, spec)
    model.eval()
    ex = ComputationalGraphExecutor(model, ModelSignatureInspector(model), config)
    assert ex.source == ("config edges" if spec.graph else "forward source")
    assert ex.tied_output == spec.tied
    ids, mask = _inputs(spec)
    with torch.no_grad():
        for m in (None, mask):
            ours = ex.forward(ids, m)
            ref = reference_forward(model, spec, ids, m)
            assert ours.shape == (3, 7, spec.vocab)
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(ex.forward(ids, m), ours, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["post_ln_graph", "pre_ln_graph", "flat_one_block", "tied_graph"])
def test_backward_reaches_every_parameter(tmp_path, name):
    spec = VARIANTS[name]
    model, config = _build(tmp_path, spec)
    adapted = adapt(model, config)
    ids, mask = _inputs(spec)
    adapted(ids, mask).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_adapt_routes_complex_signature_through_executor(tmp_path):
    spec = VARIANTS["post_ln_graph"]
    model, config = _build(tmp_path, spec)
    adapted = adapt(model, config)
    p = adapted.profile
    assert p.uses_graph_executor and p.graph_source == "config edges"
    assert p.task == "causal_lm" and p.vocab_size == spec.vocab
    assert p.signature.needs_graph_executor
    assert "mhsa_0" in p.attention_modules


def test_dropout_active_in_train_mode_only(tmp_path):
    model, config = _build(tmp_path, VARIANTS["post_ln_graph"])
    adapted = adapt(model, config)
    ids, _ = _inputs(VARIANTS["post_ln_graph"])
    adapted.train()
    assert not torch.equal(adapted(ids), adapted(ids))
    adapted.eval()
    assert torch.equal(adapted(ids), adapted(ids))


def test_adapted_executor_survives_deepcopy_and_pickle(tmp_path):
    model, config = _build(tmp_path, VARIANTS["pre_ln_graph"])
    adapted = adapt(model, config).eval()
    ids, _ = _inputs(VARIANTS["pre_ln_graph"])
    copied = copy.deepcopy(adapted)
    with torch.no_grad():
        copied.model.output_0.weight.add_(1.0)  # the copy must run on its own weights
        assert not torch.equal(copied(ids), adapted(ids))
        restored = pickle.loads(pickle.dumps(adapted))
        torch.testing.assert_close(restored(ids), adapted(ids), atol=0, rtol=0)


def test_edge_to_unknown_node_is_named(tmp_path):
    model, config = _build(tmp_path, VARIANTS["post_ln_graph"])
    config["edges"].append({"source": "mhsa_0", "target": "ghost_9"})
    with pytest.raises(GraphError, match="ghost_9"):
        ComputationalGraphExecutor(model, None, config)


def test_from_to_edges_accepted(tmp_path):
    spec = VARIANTS["post_ln_graph"]
    model, config = _build(tmp_path, spec)
    config["edges"] = [{"from": e["source"], "to": e["target"]} for e in config["edges"]]
    ex = ComputationalGraphExecutor(model.eval(), None, config)
    ids, _ = _inputs(spec)
    with torch.no_grad():
        torch.testing.assert_close(ex.forward(ids), reference_forward(model, spec, ids), atol=1e-5, rtol=0)


def test_cycle_is_an_error(tmp_path):
    model, config = _build(tmp_path, VARIANTS["post_ln_graph"])
    config["edges"].append({"source": "layernorm_1", "target": "mhsa_0"})
    with pytest.raises(GraphError, match="node 'mhsa_0'.*2 inputs|cycle"):
        ComputationalGraphExecutor(model, None, config)


def test_node_without_module_is_named(tmp_path):
    model, config = _build(tmp_path, VARIANTS["post_ln_graph"])
    config["nodes"].append({"id": "rmsnorm_7", "type": "rmsnorm", "params": {}})
    config["edges"] = [e for e in config["edges"] if e["target"] != "output_0"]
    config["edges"] += [{"source": "layernorm_3", "target": "rmsnorm_7"}, {"source": "rmsnorm_7", "target": "output_0"}]
    with pytest.raises(GraphError, match="rmsnorm_7"):
        ComputationalGraphExecutor(model, None, config)


def test_unresolvable_intermediate_is_named(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.py").write_text(
        "import torch\nimport torch.nn as nn\n\n\nclass CustomTransformer(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.embedding_0_token = nn.Embedding(50, 8)\n"
        "        self.layernorm_0 = nn.LayerNorm(8)\n        self.output_0 = nn.Linear(8, 50)\n\n"
        "    def forward(self, input_0_tokens, mhsa_3_output):\n"
        "        embedding_0_x = self.embedding_0_token(input_0_tokens)\n"
        "        layernorm_0_output = self.layernorm_0(mhsa_3_output)\n"
        "        return output_0_logits\n"
    )
    model = load_generated(folder)
    with pytest.raises(GraphError, match="mhsa_3_output"):
        ComputationalGraphExecutor(model, None, {"vocab_size": 50})


def test_too_long_input_is_a_clear_error(tmp_path):
    spec = VARIANTS["post_ln_graph"]
    model, config = _build(tmp_path, spec)
    ex = ComputationalGraphExecutor(model, None, config)
    ids = torch.zeros(1, spec.max_len + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"{spec.max_len + 1} tokens.*'embedding_0'.*{spec.max_len}"):
        ex.forward(ids)


def test_config_as_the_second_positional_argument(tmp_path):
    spec = next(s for s in VARIANTS.values() if s.graph)
    model, config = _build(tmp_path, spec)
    model.eval()
    ex = ComputationalGraphExecutor(model, config)  # the natural call
    assert ex.source == "config edges"
    ids, _ = _inputs(spec)
    with torch.no_grad():
        torch.testing.assert_close(
            ex.forward(ids), ComputationalGraphExecutor(model, ModelSignatureInspector(model), config).forward(ids)
        )
    with pytest.raises(
        TypeError, match="the second argument is a dict, not a ModelSignatureInspector; pass the config as config="
    ):
        ComputationalGraphExecutor(model, config, config)
