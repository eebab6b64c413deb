"""Tier 1: is the model correct and trainable? One file per family of checks; `run_tier1`
runs them in the order of `CHECKS`."""

from utils.tiers.tier1.run import CHECK_IDS, CHECKS, TIER1_NAME, run_tier1

__all__ = ["CHECKS", "CHECK_IDS", "TIER1_NAME", "run_tier1"]
