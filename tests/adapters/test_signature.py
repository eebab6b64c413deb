import torch.nn as nn

from utils.adapters import ModelSignatureInspector


def _sig(forward):
    cls = type("M", (nn.Module,), {"forward": forward})
    return ModelSignatureInspector(cls()).analyze()


def test_hf_style_is_simple():
    s = _sig(lambda self, input_ids, attention_mask=None, labels=None, **kw: None)
    assert (s.input_param, s.mask_param, s.label_param) == ("input_ids", "attention_mask", "labels")
    assert s.var_kwargs and s.is_simple and not s.needs_graph_executor


def test_nanogpt_style():
    s = _sig(lambda self, idx, targets=None: None)
    assert (s.input_param, s.label_param, s.mask_param) == ("idx", "targets", None)
    assert s.is_simple


def test_seq_first_tutorial_square_mask_is_not_a_padding_mask():
    s = _sig(lambda self, src, src_mask=None: None)
    assert s.input_param == "src" and s.mask_param is None and s.square_mask_param == "src_mask"
    assert s.roles() == {"src": "input", "src_mask": "square_mask"}


def test_pytorch_padding_mask_names():
    s = _sig(lambda self, x, src_key_padding_mask=None, temperature=1.0: None)
    assert s.mask_param == "src_key_padding_mask" and s.optional_params == ["temperature"]


def test_designer_intermediates_need_executor():
    s = _sig(lambda self, input_0_tokens, mhsa_0_output, residual_0_output, ffn_1_output: None)
    assert s.input_param == "input_0_tokens"
    assert s.intermediate_params == ["mhsa_0_output", "residual_0_output", "ffn_1_output"]
    assert s.needs_graph_executor and not s.is_simple


def test_unknown_required_parameter_is_reported():
    s = _sig(lambda self, input_ids, style_vector: None)
    assert s.unknown_required == ["style_vector"] and not s.is_simple
