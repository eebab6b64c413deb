"""Tier 1 on real third-party architectures (tests/tiers/hf_zoo.py): correct models, so
every verdict but pass is a false alarm unless asserted here with its reason. Each family
runs the checks that showed a false alarm on it, and the cheap behavioural ones."""

from __future__ import annotations

from utils.tiers.tier1 import run_tier1


def test_gemma_rms_norms_raise_no_initialisation_warning(zoo):
    for name in ("gemma", "gemma2"):
        report = run_tier1(zoo[name], checks=["parameter_initialization"], progress=False)
        assert report["parameter_initialization"].status == "pass", (name, report["parameter_initialization"].summary)
