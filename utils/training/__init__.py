"""Tier 3's building blocks: training, hyperparameter search, a matched baseline, export."""
