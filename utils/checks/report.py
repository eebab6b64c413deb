"""Check results and tier reports: one object, four renderings (HTML, terminal, JSON, Markdown).

The verdict of a tier is computed from its results, never written by hand: a tier fails
when any check fails, warns when any warns, and passes otherwise.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils._io import atomic_write_bytes, atomic_write_text

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
            raise ValueError(
                f"CheckResult {self.id!r}: status {self.status!r} is not one of {STATUSES}"
            )

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
        c = self.counts
        head = {
            "pass": "All checks passed.",
            "warn": "No check failed, but some need a look.",
            "fail": f"{c['fail']} check(s) failed.",
            "skip": "Every check was skipped.",
        }[self.status]
        return f"{head} ({c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip)"

    # -- renderings ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "verdict": self.verdict(),
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
        """A plain table for terminals: one line a check, advice indented under failures."""
        lines = [self.name, "=" * min(width, max(len(self.name), 20))]
        idw = max([len(r.id) for r in self.results] + [5])
        for r in self.results:
            summary = _shorten(r.summary, width - idw - 9)
            lines.append(f"{_SYMBOLS[r.status]}  {r.id:<{idw}}  {summary}")
            if r.status in ("warn", "fail") and r.advice:
                lines.append(f"{'':6}{'':<{idw}}  -> {_shorten(r.advice, width - idw - 11)}")
        lines += ["", f"{self.status.upper()}: {self.verdict()}"]
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
        """Write report.json, report.md and figures/*.png into `directory`, each atomically."""
        directory = Path(directory)
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


def _shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
