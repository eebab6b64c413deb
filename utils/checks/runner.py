"""Run a tier's checks in order, isolating failures: a check that crashes becomes a failed
result naming the exception, never a crashed tier."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from utils._frames import describe
from utils.checks.catalogue import Check
from utils.checks.report import CheckResult, TierReport

log = logging.getLogger(__name__)


def run_checks(
    name: str,
    checks: Sequence[Check],
    ctx: Any,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> TierReport:
    """Run `checks` on `ctx` in order and collect their results in a report named `name`."""
    report = TierReport(name, meta=dict(meta or {}))
    # disable=None: a bar on terminals, none in logs and pipes
    bar = tqdm(checks, desc=name, unit="check", disable=None if progress else True, leave=False)
    for c in bar:
        bar.set_postfix_str(c.id)
        start = time.perf_counter()
        try:
            result = c.run(ctx)
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            log.debug("check %s crashed", c.id, exc_info=True)
            result = CheckResult(
                c.id,
                c.title,
                "fail",
                f"The check could not run: {describe(exc)}",
                metrics={"traceback": traceback.format_exc(limit=4)},
                advice="Something raised while this check ran; the error above says where. "
                "Fix what it names (or pass options that fit) and run the tier again.",
            )
        result.seconds = time.perf_counter() - start
        report.results.append(result)
    return report
