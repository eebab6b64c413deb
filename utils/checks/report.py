"""Check results and tier reports: one object, four renderings (HTML, terminal, JSON, Markdown).

The verdict of a tier is computed from its results, never written by hand: a tier fails
when any check fails, warns when any warns, and passes otherwise. A report in which some
check did not run is `complete = False`, and its headline names what did not run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils._io import atomic_write_bytes, atomic_write_text, writable_folder

STATUSES = ("pass", "warn", "fail", "skip")
_SEVERITY = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}
_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "skip": "#6e7781"}
_SYMBOLS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def figure_to_png(fig: Any, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (figures are kept as bytes so
    reports pickle, compare and save without a live matplotlib state)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


@dataclass
class CheckResult:
    """The outcome of one check: a stable id, a status and what a person needs to act."""

    id: str
    title: str
    status: str
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    advice: str = ""
    figures: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CheckResult {self.id!r}: status {self.status!r} is not one of {STATUSES}")

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "metrics": _jsonable(self.metrics),
            "advice": self.advice,
            "figures": sorted(self.figures),
            "seconds": round(self.seconds, 4),
        }


@dataclass
class TierReport:
    """An ordered list of check results with a computed verdict."""

    name: str
    results: list[CheckResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        counted = [r.status for r in self.results if r.status != "skip"]
        if not counted:
            return "skip"
        return max(counted, key=_SEVERITY.__getitem__)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def skipped(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "skip"]

    @property
    def complete(self) -> bool:
        """True when every check ran: a skipped check (for time, memory or a precondition)
        means the verdict covers less than the tier."""
        return bool(self.results) and not self.skipped

    def __getitem__(self, check_id: str) -> CheckResult:
        for r in self.results:
            if r.id == check_id:
                return r
        known = ", ".join(r.id for r in self.results)
        raise KeyError(f"no check {check_id!r} in {self.name}; checks: {known}")

    def __contains__(self, check_id: object) -> bool:
        return any(r.id == check_id for r in self.results)

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def verdict(self) -> str:
        """One sentence: what failed or needs a look, what did not run, and the counts. It says
        "all passed" only when every check ran and passed."""
        c = self.counts
        ids = ", ".join
        head = {
            "pass": "All checks passed." if self.complete else "Every check that ran passed.",
            "warn": f"No check failed, but some need a look: {ids(r.id for r in self.results if r.status == 'warn')}.",
            "fail": f"{c['fail']} check(s) failed: {ids(r.id for r in self.failed)}.",
            "skip": "No check ran.",
        }[self.status]
        if self.skipped and self.status != "skip":
            not_run = _some(r.id for r in self.skipped)
            head += f" Incomplete: {c['skip']} check(s) did not run ({not_run}); each says why."
        return f"{head} ({c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip)"

    # -- renderings ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "verdict": self.verdict(),
            "complete": self.complete,
            "not_run": {r.id: r.summary for r in self.skipped},
            "counts": self.counts,
            "meta": _jsonable(self.meta),
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self) -> str:
        lines = [f"# {self.name}", "", f"**{self.status.upper()}**: {self.verdict()}", ""]
        lines += ["| check | status | summary |", "|---|---|---|"]
        for r in self.results:
            lines.append(f"| `{r.id}` | {r.status} | {_md_cell(r.summary)} |")
        for r in self.results:
            if r.status in ("warn", "fail") or r.figures:
                lines += ["", f"## `{r.id}`: {r.title}", "", r.summary]
                if r.advice:
                    lines += ["", f"**What to do:** {r.advice}"]
                for name in sorted(r.figures):
                    lines += ["", f"![{name}](figures/{r.id}-{name}.png)"]
        return "\n".join(lines) + "\n"

    def to_text(self, width: int = 100) -> str:
        """A plain table for terminals: a row a check, its summary wrapped (never cut) beside
        it, the advice indented under anything but a pass."""
        lines = [self.name, "=" * min(width, max(len(self.name), 20))]
        idw = max([len(r.id) for r in self.results] + [5])
        indent = " " * (idw + 8)
        shown: set[str] = set()  # skips for one cause share their advice: say it once
        for r in self.results:
            lines += _wrap(r.summary, width, f"{_SYMBOLS[r.status]}  {r.id:<{idw}}  ", indent)
            if r.status != "pass" and r.advice and r.advice not in shown:
                lines += _wrap(r.advice, width, indent + "-> ", indent + "   ")
                shown.add(r.advice)
        lines.append("")
        lines += _wrap(self.verdict(), width, f"{self.status.upper()}: ", "  ")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        colour = _COLOURS[self.status]
        rows = []
        for r in self.results:
            metrics = ", ".join(
                f"{html.escape(str(k))}={html.escape(_fmt(v))}"
                for k, v in r.metrics.items()
                if not isinstance(v, (dict, list))
            )
            advice = (
                f"<div style='margin-top:4px'><b>What to do:</b> {html.escape(r.advice)}</div>"
                if r.advice and r.status != "pass"
                else ""
            )
            figs = "".join(
                f"<div><img alt='{html.escape(n)}' style='max-width:640px' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode()}'/></div>"
                for n, png in sorted(r.figures.items())
            )
            rows.append(
                "<tr>"
                f"<td style='color:{_COLOURS[r.status]};font-weight:bold'>{r.status.upper()}</td>"
                f"<td><code>{html.escape(r.id)}</code><br/><small>{html.escape(r.title)}</small></td>"
                f"<td>{html.escape(r.summary)}{advice}"
                f"<div style='color:#57606a;font-size:85%'>{metrics}</div>{figs}</td>"
                "</tr>"
            )
        return (
            f"<div><h3>{html.escape(self.name)}</h3>"
            f"<p style='color:{colour};font-weight:bold'>{self.status.upper()}: "
            f"{html.escape(self.verdict())}</p>"
            "<table><thead><tr><th>status</th><th>check</th><th>result</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )

    def save(self, directory: str | Path) -> Path:
        """Write report.json, report.md and figures/*.png into `directory`, each atomically.
        Raises WriteError (one line) when `directory` is a file or cannot be written."""
        directory = writable_folder(directory)  # before writing anything
        for r in self.results:
            for name, png in r.figures.items():
                atomic_write_bytes(directory / "figures" / f"{r.id}-{name}.png", png)
        atomic_write_text(directory / "report.md", self.to_markdown())
        atomic_write_text(directory / "report.json", self.to_json())
        return directory


def merge_reports(name: str, reports: Iterable[TierReport]) -> TierReport:
    """One report holding the results of several tiers, in order."""
    merged = TierReport(name)
    for rep in reports:
        merged.results.extend(rep.results)
        merged.meta[rep.name] = rep.meta
    return merged


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    return str(value)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _some(ids: Iterable[str], shown: int = 6) -> str:
    """The first few ids and how many more: a headline stays a sentence."""
    ids = list(ids)
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """`text` wrapped to `width` columns after the prefixes; long words are never split, so
    paths and ids stay whole."""
    return textwrap.wrap(
        " ".join(str(text).split()) or "-",
        width=max(width, len(first) + 20),
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
