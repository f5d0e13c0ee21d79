"""Pytest wiring: under CI=true a skipped real-component test counts as a failure."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support import IN_CI

REAL_COMPONENT_MARKERS = {"bwrap", "docker", "slurm", "agent_cli", "browser", "postgres"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if not IN_CI or not report.skipped or hasattr(report, "wasxfail"):
        return
    markers = {m.name for m in item.iter_markers()}
    if markers & REAL_COMPONENT_MARKERS:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run real-component tests: {report.longrepr}"
