"""The one poll helper of the test tiers, the e2e tests and the benchmarks.

Waiting is for things outside the test's control (a process starting, a watch delivering, a
controller acting). The timeout only turns a hang into a failure that names what never
happened; it is never a latency assertion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    what: str,
    timeout: float = 120.0,
    every: float = 0.25,
    describe: Callable[[], str] | None = None,
    gone: Callable[[], str | None] | None = None,
) -> T:
    """Calls `check` until it returns something truthy and returns that value.

    Fails with an AssertionError naming `what`, the last value and `describe()` (say, the state of
    the thing waited on) once `timeout` seconds have passed. `gone`, asked after every miss, ends
    the wait at once when it returns a reason (the process being waited on has exited, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        reason = gone() if gone is not None else None
        if reason:
            raise AssertionError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            state = f"\n{describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {value!r}{state}")
        time.sleep(every)
