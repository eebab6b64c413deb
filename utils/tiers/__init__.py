"""Tiers: lists of checks run against an adapted model, each returning a TierReport."""

from utils.tiers.report import CheckResult, TierReport, figure_to_png, merge_reports
from utils.tiers.runner import Check, check, run_checks

__all__ = [
    "Check",
    "CheckResult",
    "TierReport",
    "check",
    "figure_to_png",
    "merge_reports",
    "run_checks",
]
