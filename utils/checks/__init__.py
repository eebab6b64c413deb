"""Checks shared by every tier and by the tokenizer validator: results, reports, the
catalogue of checks and the runner."""

from utils.checks.catalogue import SECTIONS, Check, CheckSet, Verdict, registered, stream_offset
from utils.checks.report import CheckResult, TierReport, figure_to_png, merge_reports
from utils.checks.runner import run_checks

__all__ = [
    "SECTIONS",
    "Check",
    "CheckResult",
    "CheckSet",
    "TierReport",
    "Verdict",
    "figure_to_png",
    "merge_reports",
    "registered",
    "run_checks",
    "stream_offset",
]
