"""Fixtures of the fuzz tier, defined once here (pytest finds them; never import them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each fuzz module, its `fuzz_summary()` line (inputs tried, outcomes), past pytest's
    output capture so it shows in a quiet run."""
    yield
    summary = getattr(request.module, "fuzz_summary", None)
    if summary is None:
        return
    line = summary()
    writer = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if writer is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            writer.write_line(f"\n{line}")
