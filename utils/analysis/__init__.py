"""Tier 2's building blocks: what a model does inside, measured on any adapted model.

from utils.analysis.attention import capture_attention        # verified attention maps
from utils.analysis.heads import head_patterns, head_labels   # per-head metrics and labels
from utils.analysis.attribution import integrated_gradients   # IG over the token embedding
from utils.analysis.perturbation import perturbation_curves   # token replacement, noise
from utils.analysis.adversarial import hotflip                # verified single-token swaps
from utils.analysis.representations import representation_health
from utils.analysis.spectrum import weight_spectra
"""
