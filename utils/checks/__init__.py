"""Checks shared by every tier and by the tokenizer validator: results, reports, the runner."""

from utils.checks.report import CheckResult, TierReport, figure_to_png, merge_reports
from utils.checks.runner import Check, check, run_checks

__all__ = [
    "Check",
    "CheckResult",
    "TierReport",
    "check",
    "figure_to_png",
    "merge_reports",
    "run_checks",
]
