"""export(): a folder that loads back, in a fresh process, to the same logits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.training import tier3_models as models
from tests.training.tier3_models import NoisyBufferLM, TinyLM
from utils import adapt, load_model
from utils.training.export import ExportError, export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyLM()
    with torch.no_grad():
        model.tok.weight.mul_(3.0)  # trained-looking weights, not the init
    out = tmp_path_factory.mktemp("export") / "tiny"
    return model, export(model, out), out


def test_every_format_reproduces_the_logits(exported):
    _, result, out = exported
    assert result.ok
    f = result.formats
    assert f["safetensors"].status == "ok" and f["safetensors"].max_abs_diff == 0.0
    assert f["torch.export"].status == "ok" and f["torch.export"].max_abs_diff <= 1e-4
    if f["onnx"].status == "skipped":
        pytest.importorskip("onnxruntime")
    assert f["onnx"].status == "ok" and f["onnx"].max_abs_diff <= 1e-4
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "model.py",
        "config.json",
        "load_model.py",
        "README.md",
        "export.json",
        "model.pt2",
        "model.onnx",
    } <= names
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["formats"]["safetensors"]["max_abs_diff"] == 0.0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no scratch left


def test_tied_weights_are_stored_once_and_come_back_tied(exported):
    _, _, out = exported
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert ("tok.weight" in keys) != ("head.weight" in keys)
    sys.path.insert(0, str(out))
    try:
        from load_model import load

        model = load()
    finally:
        sys.path.remove(str(out))
        sys.modules.pop("load_model", None)
    assert model.head.weight.data_ptr() == model.tok.weight.data_ptr()


def test_a_model_whose_weights_do_not_reproduce_it_fails_parity(tmp_path):
    torch.manual_seed(0)
    result = export(NoisyBufferLM(), tmp_path / "noisy", formats=())
    assert not result.ok
    st = result.formats["safetensors"]
    assert st.status == "mismatch" and st.max_abs_diff > 0.1 and "max |logit difference|" in st.reason


def test_export_of_a_loaded_folder_keeps_its_config_and_replaces_an_old_export(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "model.py").write_text(Path(models.__file__).read_text())
    (folder / "config.json").write_text(
        json.dumps({"model_name": "TinyLM", "vocab_size": 48, "max_seq_len": 16, "d_model": 16})
    )
    loaded = load_model(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old export")
    result = export(loaded, out, formats=(), parity=False)
    assert list(result.formats) == [] and not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["d_model"] == 16
    again = load_model(out)
    assert adapt(again.model, again.config).profile.vocab_size == 48


def test_a_class_without_a_source_file_is_a_clear_error(tmp_path):
    namespace: dict = {}
    exec(
        "import torch\nclass Inline(torch.nn.Module):\n"  # noqa: S102 - a class with no file
        "    def __init__(self):\n        super().__init__(); self.e = torch.nn.Embedding(8, 4)\n"
        "    def forward(self, input_ids): return self.e(input_ids) @ self.e.weight.T\n",
        namespace,
    )
    with pytest.raises(ExportError, match="no source file"):
        export(namespace["Inline"](), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ExportError, match="unknown format"):
        export(TinyLM(), tmp_path / "x", formats=("tflite",))
