"""The check catalogue: one declaration gives the id, title, sections, thresholds, results
bound to the check, guards and random streams derived from the id."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from utils.checks import SECTIONS, Check, CheckSet, Verdict, registered, run_checks

DOC = """Rows never mix

What it checks: each row's output depends on that row only.
Why it matters: mixed rows
  leak across a batch.
Known false alarms: batch norm.
Broken example: attention over the batch axis.
How to fix: use batch_first=True.
"""


@dataclass(frozen=True)
class LimitThresholds:
    limit: float = 0.5  # an example threshold


def declare(checks: CheckSet, check_id: str, doc: str = DOC, **kwargs) -> Check:
    def fn(ctx, v: Verdict):
        if ctx > v.thresholds.limit:
            return v.fail("too big", {"value": ctx}, advice="make it smaller")
        return v.pass_("small enough", {"value": ctx})

    fn.__doc__ = doc
    return checks.check(check_id, thresholds=LimitThresholds(), **kwargs)(fn)


def test_one_declaration_gives_id_title_sections_and_results():
    checks = CheckSet("catalogue-a")
    c = declare(checks, "catalogue.limit")
    assert c.id == "catalogue.limit" and c.title == "Rows never mix"
    assert list(c.sections()) == list(SECTIONS)
    assert c.sections()["Why it matters"] == "mixed rows leak across a batch."
    assert c.explain().splitlines()[0] == "catalogue.limit: Rows never mix"
    assert "How to fix:\n  use batch_first=True." in c.explain()
    failed, passed = c.run(0.9), c.run(0.1)
    assert (failed.id, failed.title, failed.status, failed.advice) == (
        "catalogue.limit",
        "Rows never mix",
        "fail",
        "make it smaller",
    )
    assert passed.status == "pass" and passed.metrics == {"value": 0.1}
    assert c in registered() and list(checks) == [c] and checks.ids == ("catalogue.limit",)


def test_streams_come_from_the_id_and_are_stable():
    checks = CheckSet("catalogue-b")
    a, b = declare(checks, "catalogue.stream_a"), declare(checks, "catalogue.stream_b")
    assert a.stream("x") == a.stream("x") and a.stream("x") != a.stream("y")
    assert a.stream("x") != b.stream("x") and 0 <= a.stream() < 2**32
    assert Verdict(a).stream("x") == a.stream("x")


def test_a_guard_can_skip_or_wrap_the_body():
    calls = []

    def guard(ctx, check, v, call):
        if ctx is None:
            return v.skip("no input", advice="give one")
        calls.append(check.id)
        return call()

    checks = CheckSet("catalogue-c", guard=guard)
    c = declare(checks, "catalogue.guarded")
    report = run_checks("guarded", [c], None, progress=False)
    assert report["catalogue.guarded"].status == "skip" and calls == []
    assert c.run(0.1).status == "pass" and calls == ["catalogue.guarded"]


def test_ids_are_unique_and_selection_names_unknown_ids():
    checks = CheckSet("catalogue-d")
    declare(checks, "catalogue.unique")
    with pytest.raises(ValueError, match="declared twice"):
        declare(CheckSet("catalogue-e"), "catalogue.unique")
    assert [c.id for c in checks.select(["catalogue.unique"])] == ["catalogue.unique"]
    with pytest.raises(KeyError, match="'nope'.*known: catalogue.unique"):
        checks.select(["nope"])


def test_missing_sections_are_absent():
    c = declare(CheckSet("catalogue-f"), "catalogue.bare", doc="Only a title")
    assert c.title == "Only a title" and c.sections() == {}
