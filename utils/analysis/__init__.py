"""Tier 2's building blocks: what a model does inside, measured on any adapted model.

from utils.analysis.attribution import integrated_gradients
from utils.analysis.perturbation import perturbation_curves
from utils.analysis.adversarial import hotflip
from utils.analysis.representations import representation_health
from utils.analysis.spectrum import weight_spectra
"""
