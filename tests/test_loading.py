"""load_model: every source kind, class finding, construction, config reading and checking,
and each error a user will meet, with its message."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from utils.loading import ConfigNamespace, LoadedModel, LoadError, ModelConfig, load_model

FIXTURES = Path(__file__).parent / "fixtures" / "builder_exports"


def write_export(folder: Path, code: str, config: dict | str | None = None, name: str = "model.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(code))
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (folder / "config.json").write_text(text)
    return folder


TINY = """
    import torch.nn as nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(40, 8)
            self.head = nn.Linear(8, 40)

        def forward(self, input_ids, attention_mask=None):
            return self.head(self.tok(input_ids))
"""


# -- sources ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "how"),
    [
        ("gpt-mini", "GPTMini", "keyword arguments from config.json"),
        ("builder-export", "CustomTransformer", "no-argument constructor"),
        ("bert-mini", "BertMini", "a BertMiniConfig built from config.json"),
    ],
)
def test_examples_load_with_their_construction_way(name, cls, how):
    loaded = load_model(f"example:{name}")
    assert isinstance(loaded, LoadedModel)
    assert loaded.source == f"example:{name}"
    assert loaded.class_name == cls and type(loaded.model).__name__ == cls
    assert loaded.construction.startswith(how)
    assert loaded.path is not None and loaded.path.name == "model.py"
    assert (
        loaded.config.vocab_size
        == loaded.model.get_submodule(loaded.describe()["token_embedding"]["name"]).num_embeddings
    )


def test_unknown_example_lists_the_known_ones():
    with pytest.raises(LoadError, match=r"unknown example 'gpt-huge'; examples: gpt-mini, builder-export"):
        load_model("example:gpt-huge")


def test_graph_export_folder():
    loaded = load_model(FIXTURES / "simple_graph")
    cfg = loaded.config
    assert (cfg.vocab_size, cfg.max_seq_len) == (300, 24)
    assert cfg.is_graph and cfg.template == "GPT-mini" and cfg.model_name == "CustomTransformer"
    assert cfg.missing == []
    assert cfg.found_at["vocab_size"] == "nodes[1].params.vocab_size (embedding_0)"
    # this export spells its edges from/to
    assert ("input_0", "embedding_0") in cfg.edge_pairs()
    assert cfg.node("mhsa_0")["type"] == "mhsa"
    assert [n["id"] for n in cfg.nodes_of_type("layernorm")] == ["layernorm_0", "layernorm_1"]
    logits = loaded.model.eval()(torch.randint(0, 300, (2, 5)))
    assert logits.shape == (2, 5, 300)


def test_complex_signature_export_loads_although_forward_cannot_run():
    loaded = load_model(str(FIXTURES / "complex_edges"))
    cfg = loaded.config
    assert (cfg.vocab_size, cfg.max_seq_len) == (260, 16)
    assert all(n["params"]["causal"] for n in cfg.nodes_of_type("mhsa"))
    assert len(cfg.edge_pairs()) == len(cfg.edges) == 18
    assert "mhsa_0_output" in loaded.describe()["forward"]
    with pytest.raises(TypeError):
        loaded.model(torch.randint(0, 260, (1, 4)))


def test_flat_config_export():
    cfg = load_model(FIXTURES / "flat_config").config
    assert (cfg.vocab_size, cfg.max_seq_len) == (200, 12)
    assert not cfg.is_graph
    assert cfg.missing == ["template", "nodes", "edges"]
    assert cfg.edge_pairs() == [] and cfg.nodes_of_type("mhsa") == []
    assert cfg.flat()["nhead"] == 2


def test_py_file_uses_the_config_beside_it(tmp_path):
    folder = write_export(tmp_path, TINY, {"vocab_size": 40, "block_size": 16})
    loaded = load_model(folder / "model.py")
    assert loaded.config.path == folder / "config.json"
    assert (loaded.config.vocab_size, loaded.config.max_seq_len) == (40, 16)
    assert loaded.config.found_at["max_seq_len"] == "block_size"


def test_py_file_without_config_guesses_nothing(tmp_path):
    loaded = load_model(write_export(tmp_path, TINY) / "model.py")
    assert loaded.config.vocab_size is None and loaded.config.max_seq_len is None
    assert loaded.config.missing == [
        "vocab_size",
        "max_seq_len",
        "model_name",
        "template",
        "nodes",
        "edges",
    ]
    assert loaded.describe()["token_embedding"] == {"name": "tok", "rows": 40}


def test_given_config_replaces_config_json(tmp_path):
    folder = write_export(tmp_path, TINY, {"vocab_size": 40})
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"vocab_size": 40, "max_seq_len": 8}))
    assert load_model(folder, config=other).config.max_seq_len == 8
    assert load_model(folder, config={"max_seq_len": 9}).config.max_seq_len == 9
    with pytest.raises(LoadError, match="config must be a ModelConfig, a dict or the path"):
        load_model(folder, config=42)


class Doubler(nn.Module):
    def __init__(self, d_model: int, vocab_size: int = 10):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, d_model)


def test_module_instance_and_class():
    model = Doubler(4)
    loaded = load_model(model)
    assert loaded.model is model and loaded.construction == "given as a built instance"
    built = load_model(Doubler, config={"n_embd": 6, "vocab_size": 12})
    assert built.model.emb.weight.shape == (12, 6)
    assert built.construction == "keyword arguments from the config: d_model (from n_embd), vocab_size"
    with pytest.raises(LoadError, match="the source is already a built Doubler"):
        load_model(model, class_name="Doubler")


def test_module_instance_is_checked_against_a_given_config():
    with pytest.raises(LoadError, match="says vocab_size 11 .* 'emb' .* has 10 rows"):
        load_model(Doubler(4), config={"vocab_size": 11})


def test_module_path_and_class_name(tmp_path, monkeypatch):
    write_export(tmp_path / "zoo_pkg", TINY, name="models_for_test.py")
    (tmp_path / "zoo_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("zoo_pkg.models_for_test:Tiny")
    assert loaded.class_name == "Tiny" and loaded.source == "zoo_pkg.models_for_test:Tiny"
    with pytest.raises(
        LoadError,
        match="zoo_pkg.models_for_test has no class or factory named 'Nope'; it defines: Tiny",
    ):
        load_model("zoo_pkg.models_for_test:Nope")
    with pytest.raises(LoadError, match="module 'no_such_pkg' is not installed"):
        load_model("no_such_pkg.models:GPT")


def test_missing_source_says_what_sources_are():
    with pytest.raises(LoadError, match=r"'nowhere/model\.py' is not an existing file or folder"):
        load_model("nowhere/model.py")
    with pytest.raises(LoadError, match="cannot load a model from a int"):
        load_model(3)


def test_folder_and_file_shape_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LoadError, match="holds no model.py"):
        load_model(empty)
    two = write_export(tmp_path / "two", TINY, name="a.py")
    write_export(two, TINY, name="b.py")
    with pytest.raises(LoadError, match=r"several \.py files \(a\.py, b\.py\) and no model\.py"):
        load_model(two)
    assert load_model(write_export(tmp_path / "one", TINY, name="net.py")).class_name == "Tiny"
    with pytest.raises(LoadError, match=r"config\.json is not a \.py file"):
        load_model(write_export(tmp_path / "cfg", TINY, {"vocab_size": 40}) / "config.json")


# -- finding the class --------------------------------------------------------------------

HIERARCHY = """
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

    class Base(nn.Module):
        pass

    class Net(Base):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block() for _ in range(2)])
"""

TWO_MODELS = """
    import torch.nn as nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

    class Large(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)
"""


def test_the_class_no_other_class_uses_is_the_model(tmp_path):
    assert load_model(write_export(tmp_path, HIERARCHY)).class_name == "Net"


def test_several_candidates_is_an_error_naming_them_and_how_to_choose(tmp_path):
    folder = write_export(tmp_path, TWO_MODELS)
    with pytest.raises(LoadError) as err:
        load_model(folder)
    message = str(err.value)
    assert "several model classes that no other class uses: Small, Large" in message
    assert "--class Small" in message and "class_name='Small'" in message and "model_name" in message
    assert load_model(folder, class_name="Large").model.lin.in_features == 8


def test_config_model_name_picks_the_class(tmp_path):
    folder = write_export(tmp_path, TWO_MODELS, {"model_name": "Large"})
    assert load_model(folder).class_name == "Large"


def test_config_model_name_that_is_not_defined_warns_and_falls_back(tmp_path, caplog):
    folder = write_export(tmp_path, HIERARCHY, {"model_name": "Renamed"})
    with caplog.at_level(logging.WARNING, logger="utils.loading"):
        assert load_model(folder).class_name == "Net"
    assert "names model_name 'Renamed', but model.py defines no such nn.Module class" in caplog.text


def test_unknown_class_name_lists_what_the_file_defines(tmp_path):
    with pytest.raises(LoadError, match="has no model class or factory named 'Huge'; it defines: Small, Large"):
        load_model(write_export(tmp_path, TWO_MODELS), class_name="Huge")


def test_factory_is_used_when_no_single_class(tmp_path):
    code = (
        TWO_MODELS
        + """
    def build_model():
        return Large()
    """
    )
    loaded = load_model(write_export(tmp_path, code))
    assert loaded.class_name == "Large"
    assert loaded.construction == "no-argument constructor"


def test_factory_with_config_arguments(tmp_path):
    code = """
    import torch.nn as nn

    def create_model(vocab_size, d_model=4):
        return nn.Embedding(vocab_size, d_model)
    """
    loaded = load_model(write_export(tmp_path, code, {"vocab_size": 33}))
    assert loaded.model.num_embeddings == 33 and loaded.class_name == "Embedding"


def test_factory_that_returns_no_module(tmp_path):
    code = """
    def build_model():
        return 3
    """
    with pytest.raises(LoadError, match=r"build_model\(\) returned a int, not an nn.Module"):
        load_model(write_export(tmp_path, code))


def test_no_model_class(tmp_path):
    code = """
    import torch

    def helper(x):
        return x
    """
    with pytest.raises(LoadError, match=r"model\.py defines no model: no nn.Module subclass and no build_model\(\)"):
        load_model(write_export(tmp_path, code))


# -- constructing it ----------------------------------------------------------------------


def test_keyword_arguments_from_graph_node_params(tmp_path):
    code = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, vocab_size, d_model, num_heads, dropout=0.0):
            super().__init__()
            self.tok = nn.Embedding(vocab_size, d_model)
            self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
    """
    config = {
        "nodes": [
            {"id": "embedding_0", "type": "embedding", "params": {"vocab_size": 50, "d_model": 16}},
            {"id": "mhsa_0", "type": "mhsa", "params": {"d_model": 16, "num_heads": 2}},
            {"id": "ffn_0", "type": "ffn", "params": {"dropout": 0.1}},
            {"id": "ffn_1", "type": "ffn", "params": {"dropout": 0.2}},
        ]
    }
    loaded = load_model(write_export(tmp_path, code, config))
    assert loaded.model.tok.weight.shape == (50, 16)
    # node params that disagree (dropout 0.1 vs 0.2) are not passed: the default stays
    assert loaded.construction == "keyword arguments from config.json: vocab_size, d_model, num_heads"


def test_nanogpt_style_config_dataclass(tmp_path):
    code = """
    from dataclasses import dataclass
    import torch.nn as nn

    @dataclass
    class GPTConfig:
        vocab_size: int = 50304
        block_size: int = 1024
        n_embd: int = 768

    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
    """
    loaded = load_model(write_export(tmp_path, code, {"vocab_size": 64, "max_seq_len": 32, "d_model": 8}))
    assert type(loaded.model.config).__name__ == "GPTConfig"
    assert (
        loaded.model.config.vocab_size,
        loaded.model.config.block_size,
        loaded.model.config.n_embd,
    ) == (64, 32, 8)
    assert loaded.construction == "a GPTConfig built from config.json (vocab_size, block_size, n_embd)"


def test_required_dataclass_field_missing(tmp_path):
    code = """
    from dataclasses import dataclass
    import torch.nn as nn

    @dataclass
    class Cfg:
        vocab_size: int
        n_embd: int

    class Net(nn.Module):
        def __init__(self, cfg: Cfg):
            super().__init__()
    """
    with pytest.raises(
        LoadError,
        match=r"Net's Cfg needs the constructor argument 'n_embd', which .*config\.json does not provide",
    ):
        load_model(write_export(tmp_path, code, {"vocab_size": 10}))


def test_untyped_config_object_and_dict(tmp_path):
    code = """
    import torch.nn as nn

    class ByAttr(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.tok = nn.Embedding(config.vocab_size, config.d_model)

    class ByKey(nn.Module):
        def __init__(self, params: dict):
            super().__init__()
            self.tok = nn.Embedding(params["vocab_size"], params["d_model"])
            self.node_count = len(params["nodes"])
    """
    config = {
        "d_model": 4,
        "nodes": [{"id": "embedding_0", "type": "embedding", "params": {"vocab_size": 21}}],
    }
    folder = write_export(tmp_path, code, config)
    by_attr = load_model(folder, class_name="ByAttr")
    assert by_attr.model.tok.weight.shape == (21, 4)
    assert by_attr.construction.startswith("a config object holding the config's fields")
    by_key = load_model(folder, class_name="ByKey")
    assert by_key.model.node_count == 1 and by_key.construction == "a dict of the config's fields"


def test_config_object_missing_attribute_names_field_and_line(tmp_path):
    code = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.tok = nn.Embedding(config.vocab_size, config.n_embd)
    """
    with pytest.raises(LoadError) as err:
        load_model(write_export(tmp_path, code, {"vocab_size": 10}))
    message = str(err.value)
    assert "model.py line 7" in message
    assert "the config has no field 'n_embd'; add it to config.json" in message


def test_constructor_argument_the_config_does_not_provide(tmp_path):
    code = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, vocab_size, d_model, num_layers):
            super().__init__()
    """
    folder = write_export(tmp_path, code, {"vocab_size": 10, "d_model": 4})
    with pytest.raises(LoadError) as err:
        load_model(folder)
    message = str(err.value)
    assert "Net needs the constructor argument 'num_layers'" in message
    assert f"which {folder / 'config.json'} does not provide (its fields: d_model, vocab_size)" in message
    assert 'Add "num_layers": <value> to config.json' in message
    assert load_model(folder, config={"vocab_size": 10, "d_model": 4, "n_layer": 2}).class_name == "Net"


def test_constructor_that_raises_points_at_the_line(tmp_path):
    code = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(10, 3)
    """
    with pytest.raises(
        LoadError,
        match=r"building Net with no-argument constructor failed at .*model\.py line 7: AssertionError",
    ):
        load_model(write_export(tmp_path, code))


def test_config_namespace_supports_both_access_styles():
    ns = ConfigNamespace({"d_model": 4})
    assert ns.d_model == ns["d_model"] == 4
    with pytest.raises(AttributeError, match="the config has no field 'n_head'"):
        _ = ns.n_head


# -- reading config.json ------------------------------------------------------------------


def test_invalid_json_names_line_column_and_text(tmp_path):
    folder = write_export(tmp_path, TINY, '{\n  "vocab_size": 40,\n  "d_model": 8,\n}\n')
    with pytest.raises(LoadError) as err:
        load_model(folder)
    message = str(err.value)
    assert f"{folder / 'config.json'} line 4 column 1: invalid JSON" in message
    assert "a trailing comma" in message


def test_config_disagreeing_with_itself():
    config = {
        "nodes": [
            {"id": "embedding_0", "type": "embedding", "params": {"vocab_size": 5000}},
            {"id": "output_0", "type": "output", "params": {"vocab_size": 4000}},
        ]
    }
    with pytest.raises(
        LoadError,
        match=r"disagrees with itself about vocab_size: "
        r"nodes\[0\]\.params\.vocab_size \(embedding_0\) = 5000, nodes\[1\]",
    ):
        ModelConfig.from_dict(config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([1, 2], r"expected a JSON object \(\{\.\.\.\}\) at the top level, found list"),
        (
            {"vocab_size": "5000"},
            r"vocab_size is '5000'; vocab_size must be a positive whole number",
        ),
        ({"block_size": 0}, r"block_size is 0; max_seq_len must be a positive whole number"),
        ({"model_name": 3}, r"model_name is 3; it must be a string"),
        ({"nodes": {"a": 1}}, r"'nodes' must be a list of objects, found dict"),
        ({"nodes": [{"type": "input"}]}, r"nodes\[0\] must be an object with a string 'id'"),
        ({"nodes": [{"id": "a"}, {"id": "a"}]}, r"nodes\[1\] repeats the id 'a'"),
        ({"nodes": [{"id": "a", "params": [1]}]}, r"nodes\[0\] \(a\) 'params' must be an object"),
        (
            {"nodes": [{"id": "a"}], "edges": [{"source": "a"}]},
            r"edges\[0\] needs string 'source' and 'target'",
        ),
        (
            {"nodes": [{"id": "a"}], "edges": [{"from": "a", "to": "b"}]},
            r"edges\[0\] refers to node 'b', which is not in 'nodes'",
        ),
        ({"edges": "a->b"}, r"'edges' must be a list of objects, found str"),
    ],
)
def test_config_validation_errors(config, message):
    with pytest.raises(LoadError, match=message):
        ModelConfig.from_dict(config, "cfg.json")


def test_config_helpers():
    cfg = ModelConfig.from_dict(
        {
            "n_positions": 64,
            "nodes": [
                {"id": "a", "type": "input"},
                {"id": "b", "type": "output", "params": {"vocab_size": 7}},
            ],
            "edges": [{"source": "a", "target": "b"}, {"from": "b", "to": "a"}],
        }
    )
    assert cfg.edge_pairs() == [("a", "b"), ("b", "a")]
    assert (cfg.vocab_size, cfg.max_seq_len) == (7, 64)
    assert cfg.flat()["max_seq_len"] == 64
    with pytest.raises(KeyError, match="no node 'c' in the config; nodes: a, b"):
        cfg.node("c")
    assert not ModelConfig().is_graph and ModelConfig().edge_pairs() == []


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"vocab_size": "\xff"}')
    with pytest.raises(LoadError, match="is not UTF-8 text"):
        ModelConfig.from_file(path)
    with pytest.raises(LoadError, match="no such file"):
        ModelConfig.from_file(tmp_path / "none.json")


# -- config against the model -------------------------------------------------------------


def test_config_vocab_disagreeing_with_the_embedding(tmp_path):
    code = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_emb = nn.Embedding(128, 8)
            self.embedding_0_token = nn.Embedding(4000, 8)
    """
    config = {
        "nodes": [
            {
                "id": "embedding_0",
                "type": "embedding",
                "params": {"vocab_size": 5000, "max_seq_len": 128},
            }
        ]
    }
    with pytest.raises(LoadError) as err:
        load_model(write_export(tmp_path, code, config))
    message = str(err.value)
    assert "says vocab_size 5000 (nodes[0].params.vocab_size (embedding_0))" in message
    assert "token embedding 'embedding_0_token' (nn.Embedding) has 4000 rows" in message
    assert "set vocab_size to 4000 in the config, or build that embedding with 5000 rows" in message
    config["nodes"][0]["params"]["vocab_size"] = 4000
    assert load_model(write_export(tmp_path, code, config)).config.vocab_size == 4000


def test_config_max_len_longer_than_the_position_table(tmp_path):
    code = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(100, 8)
            self.wpe = nn.Embedding(64, 8)
    """
    with pytest.raises(LoadError, match="says max_seq_len 128 .* position embedding 'wpe' has only 64 rows"):
        load_model(write_export(tmp_path, code, {"max_seq_len": 128}))
    assert load_model(write_export(tmp_path, code, {"max_seq_len": 32})).config.max_seq_len == 32


# -- importing the file -------------------------------------------------------------------


def test_syntax_error_names_file_line_and_code(tmp_path):
    code = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4
    """
    folder = write_export(tmp_path, code)
    with pytest.raises(LoadError) as err:
        load_model(folder)
    message = str(err.value)
    assert f"{folder / 'model.py'}:7: syntax error" in message
    assert "'self.lin = nn.Linear(4, 4'" in message


def test_missing_import_says_what_to_install(tmp_path):
    code = """
    import torch.nn as nn
    import flash_attn_not_here.ops

    class Net(nn.Module):
        pass
    """
    with pytest.raises(
        LoadError,
        match=r"model\.py line 3 imports flash_attn_not_here which is not installed: pip install flash_attn_not_here",
    ):
        load_model(write_export(tmp_path, code))


def test_missing_import_uses_the_package_name(tmp_path):
    with pytest.raises(LoadError, match="line 1 imports sklearn which is not installed: pip install scikit-learn"):
        load_model(write_export(tmp_path, "import sklearn\n"))


def test_module_level_error_names_the_line(tmp_path):
    code = """
    import torch.nn as nn
    SIZE = undefined_name + 1
    """
    with pytest.raises(
        LoadError,
        match=r"model\.py line 3 raised NameError while being imported: name 'undefined_name'",
    ):
        load_model(write_export(tmp_path, code))


def test_reloading_an_edited_file_sees_the_edit_and_its_sibling(tmp_path):
    code = """
    import torch.nn as nn
    from layers import WIDTH

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(WIDTH, 2)
    """
    folder = write_export(tmp_path, code)
    (folder / "layers.py").write_text("WIDTH = 3\n")
    assert load_model(folder / "model.py").model.lin.in_features == 3
    (folder / "layers.py").write_text("WIDTH = 5\n")
    assert load_model(folder / "model.py").model.lin.in_features == 5


def test_describe_counts_parameters_once_and_embeddings():
    loaded = load_model("example:gpt-mini")
    facts = loaded.describe()
    model = loaded.model
    assert model.lm_head.weight is model.tok_emb.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert facts["parameters"]["total"] == sum(unique.values())
    assert facts["parameters"]["embedding"] == model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    model.tok_emb.weight.requires_grad_(False)
    frozen = loaded.describe()["parameters"]
    assert frozen["trainable"] == frozen["total"] - model.tok_emb.weight.numel()
    assert facts["forward"].startswith("forward(input_ids: torch.Tensor, attention_mask")
    assert facts["config"]["missing"] == ["nodes", "edges"]
    assert "d_model" in facts["config"]["other_fields"]
