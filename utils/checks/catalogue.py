"""Checks as a catalogue, the way ruff documents its rules: one declaration per check.

    CHECKS = CheckSet("tier1", guard=tier1_guard)

    @dataclass(frozen=True)
    class CausalityThresholds:
        max_leak: float = 1e-6  # calibrated on ...

    @CHECKS.check("causality", thresholds=CausalityThresholds(), needs=Needs(...))
    def causality(ctx, v: Verdict) -> CheckResult:
        \"\"\"No position sees the future.

        What it checks: ...
        Why it matters: ...
        Known false alarms: ...
        Broken example: ...
        How to fix: ...
        \"\"\"
        ids = ctx.ids(offset=v.stream("tokens"))
        if leak > v.thresholds.max_leak:
            return v.fail("Position 3 sees position 5.", {"leak": leak}, advice="...")
        return v.pass_("No position sees the future.")

The id is written once (in the decorator); the title is the docstring's first line; the
docstring's sections are what `tbuilder checks --explain ID` prints; `v` builds results
that already carry the id and title; random streams come from the id, so adding a check
never shifts another check's draws.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from utils.checks.report import CheckResult

# The docstring headings every check has, in the order they are printed.
SECTIONS: tuple[str, ...] = (
    "What it checks",
    "Why it matters",
    "Known false alarms",
    "Broken example",
    "How to fix",
)
_HEADING = re.compile(r"^(" + "|".join(map(re.escape, SECTIONS)) + r"):\s*(.*)$")

CheckFn = Callable[[Any, "Verdict"], CheckResult]
# guard(ctx, check, v, call): run `call()` (the check's body) or return a result instead
# (a skip for an unmet precondition); a tier's way to set seeds and restore state around it.
Guard = Callable[[Any, "Check", "Verdict", Callable[[], CheckResult]], CheckResult]

_REGISTERED: dict[str, Check] = {}


@dataclass(frozen=True)
class Check:
    """One check: a stable id, its function, its documentation, thresholds and needs."""

    id: str
    fn: CheckFn
    doc: str
    thresholds: Any = None
    needs: Any = None
    guard: Guard | None = field(default=None, compare=False)

    @property
    def title(self) -> str:
        """The one-line purpose: the docstring's first line."""
        return self.doc.strip().splitlines()[0].strip() if self.doc.strip() else self.id

    def sections(self) -> dict[str, str]:
        """The docstring's fixed sections by heading (missing ones are absent)."""
        found: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in inspect.cleandoc(self.doc).splitlines()[1:]:
            match = _HEADING.match(line.strip())
            if match:
                current = found.setdefault(match.group(1), [])
                line = match.group(2)
            if current is not None:
                current.append(line.strip())
        return {h: " ".join(" ".join(found[h]).split()) for h in SECTIONS if h in found}

    def explain(self, width: int = 88) -> str:
        """The check as a person reads it: id, title, then each section."""
        lines = [f"{self.id}: {self.title}"]
        for heading, text in self.sections().items():
            lines += ["", f"{heading}:", textwrap.fill(text, width, initial_indent="  ", subsequent_indent="  ")]
        return "\n".join(lines)

    def stream(self, name: str = "") -> int:
        """A seed offset for one random stream of this check, stable across runs and
        versions: derived from the id and the stream's name, never a hand-picked number."""
        return stream_offset(f"{self.id}/{name}")

    def run(self, ctx: Any) -> CheckResult:
        """Run the check on `ctx`, through its guard when it has one."""
        v = Verdict(self)
        if self.guard is None:
            return self.fn(ctx, v)
        return self.guard(ctx, self, v, lambda: self.fn(ctx, v))


@dataclass(frozen=True)
class Verdict:
    """The results a check can give, with its id and title already filled in."""

    check: Check

    @property
    def thresholds(self) -> Any:
        return self.check.thresholds

    def stream(self, name: str = "") -> int:
        return self.check.stream(name)

    def result(
        self,
        status: str,
        summary: str,
        metrics: dict | None = None,
        advice: str = "",
        figures: dict[str, bytes] | None = None,
    ) -> CheckResult:
        return CheckResult(
            self.check.id, self.check.title, status, summary, dict(metrics or {}), advice, dict(figures or {})
        )

    def pass_(
        self, summary: str, metrics: dict | None = None, advice: str = "", figures: dict[str, bytes] | None = None
    ) -> CheckResult:
        return self.result("pass", summary, metrics, advice, figures)

    def warn(
        self, summary: str, metrics: dict | None = None, advice: str = "", figures: dict[str, bytes] | None = None
    ) -> CheckResult:
        return self.result("warn", summary, metrics, advice, figures)

    def fail(
        self, summary: str, metrics: dict | None = None, advice: str = "", figures: dict[str, bytes] | None = None
    ) -> CheckResult:
        return self.result("fail", summary, metrics, advice, figures)

    def skip(
        self, summary: str, metrics: dict | None = None, advice: str = "", figures: dict[str, bytes] | None = None
    ) -> CheckResult:
        return self.result("skip", summary, metrics, advice, figures)


class CheckSet:
    """The checks of one tier (or of the tokenizer validator), in declaration order, sharing
    one guard. Ids are unique across every set: the catalogue is one namespace."""

    def __init__(self, name: str, *, guard: Guard | None = None) -> None:
        self.name = name
        self.guard = guard
        self._checks: dict[str, Check] = {}

    def check(self, check_id: str, *, thresholds: Any = None, needs: Any = None) -> Callable[[CheckFn], Check]:
        """Decorator: `fn(ctx, v) -> CheckResult` becomes a registered `Check`."""

        def wrap(fn: CheckFn) -> Check:
            if check_id in _REGISTERED:
                raise ValueError(f"check id {check_id!r} is declared twice")
            made = Check(check_id, fn, inspect.getdoc(fn) or "", thresholds, needs, self.guard)
            self._checks[check_id] = _REGISTERED[check_id] = made
            return made

        return wrap

    def __iter__(self) -> Iterator[Check]:
        return iter(self._checks.values())

    def __len__(self) -> int:
        return len(self._checks)

    def __getitem__(self, check_id: str) -> Check:
        return self._checks[check_id]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._checks)

    def select(self, ids: Sequence[str]) -> list[Check]:
        """The checks with these ids, in catalogue order; an unknown id is a KeyError
        naming the known ones."""
        unknown = [i for i in ids if i not in self._checks]
        if unknown:
            raise KeyError(f"unknown check id(s) {', '.join(map(repr, unknown))}; known: {', '.join(self._checks)}")
        return [c for c in self if c.id in set(ids)]


def stream_offset(name: str) -> int:
    """A stable 32-bit seed offset for a named random stream (a check's, or a shared
    probe's), so that no two streams are told apart by hand-picked integers."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big")


def registered() -> list[Check]:
    """Every check declared so far, in declaration order (import the modules that declare
    checks first: the catalogue layer never imports the tiers)."""
    return list(_REGISTERED.values())
