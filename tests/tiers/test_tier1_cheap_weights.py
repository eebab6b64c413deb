"""The weight checks' cheap paths (an identity walk instead of `.to()`, one safetensors file
for every reload, sampled statistics on huge tensors) still fail the models built to break
them, and pass the correct ones."""

from __future__ import annotations

import torch
from torch import nn

from tests.adapters.zoo import TinyGPT
from utils.tiers.tier1 import run_tier1
from utils.tiers.tier1.weights import STATS_SAMPLE, share_groups, split_by_conversion


class TiedLM(TinyGPT):
    """Ties the head to the embedding by sharing the Parameter itself."""

    def __init__(self) -> None:
        super().__init__()
        self.head.weight = self.tok.weight


class DataTiedHeadFirstLM(TinyGPT):
    """A `.data` tie made the other way round: the embedding takes the head's storage."""

    def __init__(self) -> None:
        super().__init__()
        self.tok.weight.data = self.head.weight.data


class Config:
    """A Hugging Face-style config: the class can be rebuilt exactly from it."""


class TiedAfterConstructionLM(TinyGPT):
    """Its constructor does not tie; the tie is made on the instance after construction, so
    a model rebuilt from its config (as loading a checkpoint does) has two separate tensors."""

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config

    def post_init(self) -> None:
        """Marks the class as rebuildable from `self.config`, as Hugging Face models are."""


def _tied_after_construction() -> TiedAfterConstructionLM:
    model = TiedAfterConstructionLM(Config())
    model.head.weight = model.tok.weight
    return model


def _result(model: nn.Module, check_id: str):
    return run_tier1(model, checks=[check_id], progress=False)[check_id]


def test_the_identity_walk_agrees_with_a_real_conversion():
    for cls in (TiedLM, DataTiedHeadFirstLM):
        model = cls()
        groups = share_groups(model)
        converted = share_groups(model.to(torch.float64))
        real = [g for g in groups if not any(set(g) <= set(o) for o in converted)]
        assert groups and split_by_conversion(cls(), share_groups(cls())) == real


def test_ties_made_through_data_fail_in_both_directions_and_a_real_tie_passes():
    assert _result(TiedLM(), "weight_sharing").status == "pass"
    result = _result(DataTiedHeadFirstLM(), "weight_sharing")
    assert result.status == "fail" and ".to()" in result.summary
    assert result.metrics["lost_after_to"] == [["head.weight", "tok.weight"]]


def test_a_tie_a_rebuilt_instance_lacks_fails_the_round_trip():
    result = _result(_tied_after_construction(), "weight_sharing")
    assert result.status == "fail", result.summary
    assert "round trip" in result.summary and result.metrics["lost_after_to"] == []
    assert result.metrics["loaded_into"] == "TiedAfterConstructionLM(model.config)"


def test_state_dict_roundtrip_reloads_one_file_into_both_instances():
    result = _result(TiedLM(), "state_dict_roundtrip")
    assert result.status == "pass" and len(result.metrics["loaded_into"]) == 2


class WideLM(TinyGPT):
    """A correct model with one matrix big enough to be judged on a sample."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Linear(2048, 2 * STATS_SAMPLE // 2048 + 8)
        assert self.wide.weight.numel() > 2 * STATS_SAMPLE


def test_huge_tensors_are_judged_on_a_sample_and_bad_ones_still_fail():
    assert _result(WideLM(), "parameter_initialization").status == "pass"
    loud = WideLM()
    with torch.no_grad():
        loud.wide.weight.mul_(40.0)  # gain about 23
    result = _result(loud, "parameter_initialization")
    assert result.status == "fail" and "wide.weight" in result.summary
    one_nan = WideLM()
    with torch.no_grad():
        one_nan.wide.weight.view(-1)[12_345] = float("nan")  # off every sampled position
    result = _result(one_nan, "parameter_initialization")
    assert result.status == "fail" and "NaN" in result.summary
