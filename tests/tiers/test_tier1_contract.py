"""The catalogue's contract: every check documents itself under the fixed headings, names a
broken model that the tests show it catching, and the README's table is the catalogue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tiers.test_tier1_checks import BROKEN
from utils.checks import SECTIONS
from utils.tiers.tier1 import CHECK_IDS, CHECKS
from utils.tokenization.validator import CHECKS as TOKENIZER_CHECKS

README = Path(__file__).resolve().parents[2] / "README.md"
ALL = [*CHECKS, *TOKENIZER_CHECKS]


@pytest.mark.parametrize("check", ALL, ids=[c.id for c in ALL])
def test_every_check_documents_every_section(check):
    sections = check.sections()
    assert list(sections) == list(SECTIONS), f"{check.id}: missing {set(SECTIONS) - set(sections)}"
    assert all(len(text) > 20 for text in sections.values()), check.id
    assert check.title and not check.title.endswith(".")


@pytest.mark.parametrize("check", CHECKS, ids=CHECK_IDS)
def test_every_tier1_check_has_a_broken_model_it_catches(check):
    """The correct model passes every check (test_correct_model_passes); each check has a
    broken model in BROKEN, and its docstring names one of them."""
    models = {m.__name__ for c, m, *_ in BROKEN if c == check.id}
    assert models, f"{check.id}: no broken model in tests/tiers/test_tier1_checks.py"
    assert any(name in check.sections()["Broken example"] for name in models), (
        f"{check.id}: 'Broken example' names none of {sorted(models)}"
    )


def test_readme_table_is_the_catalogue():
    section = README.read_text().split("\n## Tier 1", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", section, flags=re.M)
    assert rows == [(c.id, c.title) for c in CHECKS]


def test_thresholds_are_frozen_dataclasses():
    for check in ALL:
        if check.thresholds is not None:
            params = getattr(type(check.thresholds), "__dataclass_params__", None)
            assert params is not None and params.frozen, check.id
