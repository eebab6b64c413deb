"""Tier 2's building blocks: attention capture and the metrics the analyses compute."""
