"""adapters/webhooks.py against real loopback receivers: delivery, retries with backoff on 5xx and
connection errors, no retry on 4xx, and back-pressure (a hung receiver, a full queue)."""

from __future__ import annotations

import socket
import threading

import pytest

from rollout_operator.adapters.webhooks import (
    WebhookNotifier,
    compute_backoff,
    compute_outcome,
    compute_retry_delay,
    read_retry_after,
)
from rollout_operator.domain.notifications import Receiver
from tests.support.stub_prometheus import HungPrometheus
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.unit

PAYLOAD = {"rollout": "speech", "event": "promoted"}


class Results:
    """The notifier's on_result/on_depth hooks, recorded."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []
        self.depths: list[int] = []
        self._lock = threading.Lock()

    def on_result(self, receiver: str, result: str) -> None:
        with self._lock:
            self.results.append((receiver, result))

    def on_depth(self, depth: int) -> None:
        with self._lock:
            self.depths.append(depth)

    def count(self, result: str) -> int:
        with self._lock:
            return sum(1 for _, r in self.results if r == result)


def _notifier(results: Results, **kw) -> WebhookNotifier:
    kw = {"workers": 1, "backoff_base": 0.01, "backoff_max": 0.05, "draw": lambda: 0.0, **kw}
    return WebhookNotifier(on_result=results.on_result, on_depth=results.on_depth, **kw)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens there any more: connection refused


@pytest.mark.parametrize(
    "attempt, draw, seconds",
    [(1, 0.0, 0.5), (1, 0.5, 0.75), (2, 0.0, 1.0), (4, 0.999, 7.996), (7, 0.0, 30.0), (30, 0.0, 30.0)],
)
def test_backoff_doubles_per_attempt_up_to_the_cap_with_half_of_it_jittered(attempt, draw, seconds):
    assert compute_backoff(attempt, 1.0, 60.0, draw) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "retry_after, seconds",
    [(None, 1.0), (0.0, 1.0), (7.0, 7.0), (3600.0, 60.0)],  # attempt 2: the backoff is 1 s (draw 0)
)
def test_retry_after_lengthens_the_wait_up_to_the_cap(retry_after, seconds):
    assert compute_retry_delay(2, 1.0, 60.0, 0.0, retry_after) == seconds


@pytest.mark.parametrize("header, seconds", [("7", 7.0), (" 120 ", 120.0), (None, None), ("soon", None), ("-3", None)])
def test_retry_after_is_read_in_seconds_only(header, seconds):
    assert read_retry_after(header) == seconds


@pytest.mark.parametrize(
    "status, delivered, retry",
    [
        (200, True, False),
        (204, True, False),
        (301, False, False),  # never followed: it could lead anywhere
        (400, False, False),
        (401, False, False),
        (404, False, False),
        (408, False, True),
        (429, False, True),
        (500, False, True),
        (503, False, True),
    ],
)
def test_outcome_by_status(status, delivered, retry):
    outcome = compute_outcome(status, b"body")
    assert (outcome.delivered, outcome.retry) == (delivered, retry)


def test_delivers_the_json_body_with_the_receivers_headers():
    results = Results()
    with WebhookReceiver() as hook:
        notifier = _notifier(results)
        notifier.notify(
            Receiver("ops", hook.url, headers={"Authorization": "Bearer t0k"}), PAYLOAD, "ml/speech Promoted"
        )
        (got,) = hook.wait_for(1)
        wait_for(lambda: results.results, "a result")
        notifier.close()
    assert got.path == "/hook" and got.json == PAYLOAD
    assert got.headers["Authorization"] == "Bearer t0k"
    assert got.headers["Content-Type"] == "application/json"
    assert results.results == [("ops", "delivered")]
    assert results.depths[-1] == 0


def test_5xx_is_retried_until_delivered():
    results = Results()
    with WebhookReceiver([503, 500]) as hook:
        notifier = _notifier(results)
        notifier.notify(Receiver("ops", hook.url), PAYLOAD)
        got = hook.wait_for(3)
        wait_for(lambda: results.results, "a result")
        notifier.close()
    assert [r.json for r in got] == [PAYLOAD] * 3, "the same body each attempt"
    assert results.results == [("ops", "delivered")]


def test_a_429_is_retried_after_the_wait_the_receiver_asked_for():
    with WebhookReceiver([429], retry_after="7") as hook:
        notifier = _notifier(Results())
        outcome = notifier.deliver(Receiver("ops", hook.url), b"{}")
        notifier.close()
    assert (outcome.delivered, outcome.retry, outcome.retry_after) == (False, True, 7.0)


def test_gives_up_after_max_attempts():
    results = Results()
    with WebhookReceiver([500] * 10) as hook:
        notifier = _notifier(results, max_attempts=3)
        notifier.notify(Receiver("ops", hook.url), PAYLOAD)
        wait_for(lambda: results.results, "a result")
        notifier.close()
        assert len(hook.received) == 3
    assert results.results == [("ops", "failed")]


@pytest.mark.parametrize("status", [400, 403, 404])
def test_4xx_is_not_retried(status):
    results = Results()
    with WebhookReceiver([status]) as hook:
        notifier = _notifier(results, max_attempts=5)
        receiver = Receiver("ops", hook.url)
        notifier.notify(receiver, PAYLOAD)
        wait_for(lambda: results.results, "a result")
        # A retry would have been due long before this second one is delivered (one worker).
        notifier.notify(receiver, {"second": True})
        wait_for(lambda: len(results.results) == 2, "the second result")
        notifier.close()
        assert [r.json for r in hook.received] == [PAYLOAD, {"second": True}]
    assert results.results == [("ops", "failed"), ("ops", "delivered")]


def test_connection_errors_are_retried_then_counted_failed():
    results = Results()
    notifier = _notifier(results, max_attempts=3)
    receiver = Receiver("gone", _closed_port_url(), timeout_seconds=2)
    outcome = notifier.deliver(receiver, b"{}")
    assert not outcome.delivered and outcome.retry, outcome
    notifier.notify(receiver, PAYLOAD)
    wait_for(lambda: results.results, "a result")
    notifier.close()
    assert results.results == [("gone", "failed")]


def test_a_hung_receiver_is_cut_at_its_timeout_and_retried():
    results = Results()
    with HungPrometheus() as hung:
        notifier = _notifier(results, max_attempts=2)
        outcome = notifier.deliver(Receiver("hung", hung.url, timeout_seconds=0.3), b"{}")
        notifier.close()
    assert not outcome.delivered and outcome.retry
    assert "total deadline" in outcome.detail


def test_a_hung_receiver_and_a_full_queue_never_block_notify_and_drop_the_oldest():
    results = Results()
    with HungPrometheus() as hung:
        notifier = _notifier(results, queue_size=3, max_attempts=1)
        receivers = [Receiver(f"r{i}", hung.url, timeout_seconds=3) for i in range(10)]
        notifier.notify(receivers[0], PAYLOAD)
        wait_for(lambda: hung.waves == [1], "the only worker stuck on r0")
        for receiver in receivers[1:]:  # all while the worker is held: notify must return anyway
            notifier.notify(receiver, PAYLOAD)
        assert notifier.depth == 3
        dropped = [name for name, result in results.results if result == "dropped"]
        assert dropped == [f"r{i}" for i in range(1, 7)], "the oldest go first; the newest three wait"
        notifier.close(timeout=10)
    assert results.depths[-1] == 0


def test_nothing_starts_before_the_first_notification_and_nothing_is_sent_after_close():
    results = Results()
    with WebhookReceiver() as hook:
        before = set(threading.enumerate())
        notifier = _notifier(results)
        assert set(threading.enumerate()) <= before, "a standby builds one and never notifies: no threads"
        notifier.close()
        notifier.notify(Receiver("ops", hook.url), PAYLOAD)
        assert notifier.depth == 0 and hook.received == [] and results.results == []
