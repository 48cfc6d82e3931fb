"""Shadow mirroring through the real router binary: the user always gets the stable answer, the
copy never blocks it, and the router counts prediction agreement between the two versions."""

from __future__ import annotations

import time

import pytest

from tests.support.router_fixtures import Backend, RouterProcess, start_backend, start_router, weights, write_static

pytestmark = pytest.mark.unit


@pytest.fixture
def setup(router_bin, tmp_path):
    started: list[Backend | RouterProcess] = []

    def start(stable_args: tuple = (), mirror_args: tuple | None = (), percent: int = 100, *router_args: str):
        stable = start_backend("v1", "--label", "yes", "--confidence", "0.9", *stable_args)
        started.append(stable)
        eps = {"v1": [stable.addr], "v2": []}
        mirror = None
        if mirror_args is not None:
            mirror = start_backend("v2", *mirror_args)
            started.append(mirror)
            eps["v2"] = [mirror.addr]
        cfg = tmp_path / "split.json"
        write_static(cfg, weights("v1", 100, mirror=("v2", percent)), eps)
        router = start_router(router_bin, tmp_path, f"--static-config={cfg}", *router_args)
        started.append(router)
        router.wait_ready()
        return router, stable, mirror

    yield start
    for p in started:
        if isinstance(p, RouterProcess):
            p.stop()
        elif p.proc.poll() is None:
            p.kill()


def test_agreement_and_confidence_delta_are_counted(setup):
    router, stable, mirror = setup((), ("--label", "yes", "--confidence", "0.6"))
    client = router.client()
    for path in ["/v1/models/m:predict"] * 10 + ["/v2/models/m/infer"] * 10:
        r = client.post(path)
        assert r.status == 200 and r.headers["x-model-version"] == "v1"
    router.wait_metric("router_shadow_comparisons_total", 20, result="agree")
    assert router.metric("router_shadow_comparisons_total", result="disagree") == 0
    assert router.metric("router_mirror_requests_total", version="v2", outcome="ok") == 20
    assert mirror.hits() == 20
    # candidate 0.6 − stable 0.9 = −0.3 on every comparison (v2 sends FP32, hence the tolerance)
    assert router.metric("router_shadow_confidence_delta_count", stable_version="v1", candidate_version="v2") == 20
    total = router.metric("router_shadow_confidence_delta_sum", stable_version="v1", candidate_version="v2")
    assert total == pytest.approx(-6.0, abs=1e-4)
    # The copies are not user traffic: only stable shows up in the routed-request counters.
    assert router.metric("router_requests_total", version="v2") == 0


def test_disagreement_is_counted(setup):
    router, _, _ = setup((), ("--label", "no"))
    client = router.client()
    for _ in range(10):
        assert client.post().json()["predictions"][0]["label"] == "yes"
    router.wait_metric("router_shadow_comparisons_total", 10, result="disagree")
    assert router.metric("router_shadow_comparisons_total", result="agree") == 0


THREE_WORDS = "yes@0.1-0.6,no@1.2-1.7,up@2.5-3.0"


def test_segment_agreement_counts_every_segment(setup):
    # The candidate's spans are a little off (every IoU > 0.8) but say the same words.
    router, _, _ = setup(
        ("--segments", THREE_WORDS), ("--label", "yes", "--segments", "yes@0.12-0.58,no@1.25-1.72,up@2.45-2.95")
    )
    client = router.client()
    for path in ["/v1/models/m:predict"] * 5 + ["/v2/models/m/infer"] * 5:
        assert client.post(path).status == 200
    router.wait_metric(
        "router_shadow_segment_comparisons_total", 30, result="agree", stable_version="v1", candidate_version="v2"
    )
    assert router.metric("router_shadow_segment_comparisons_total") == 30
    assert router.metric("router_shadow_comparisons_total", result="agree") == 10


def test_segment_disagreement_is_counted_where_the_top_label_agrees(setup):
    # Same top label, so clip level agrees; per segment: "yes" agrees, "no" heard as "go",
    # "up" not found, and a word stable never heard.
    router, _, _ = setup(
        ("--segments", THREE_WORDS), ("--label", "yes", "--segments", "yes@0.1-0.6,go@1.2-1.7,down@4.0-4.5")
    )
    client = router.client()
    for path in ["/v1/models/m:predict"] * 5 + ["/v2/models/m/infer"] * 5:
        assert client.post(path).status == 200
    for result in ("agree", "disagree", "missing", "extra"):
        router.wait_metric("router_shadow_segment_comparisons_total", 10, result=result)
    assert router.metric("router_shadow_segment_comparisons_total", result="error") == 0
    router.wait_metric("router_shadow_comparisons_total", 10, result="agree")


def test_segments_of_a_dead_candidate_are_errors(setup):
    router, _, _ = setup(("--segments", THREE_WORDS), None)
    client = router.client()
    for _ in range(4):
        client.post()
    router.wait_metric("router_shadow_segment_comparisons_total", 12, result="error")
    assert router.metric("router_shadow_segment_comparisons_total") == 12


def test_slow_candidate_never_delays_the_user_and_drops_are_counted(setup):
    router, stable, mirror = setup((), ("--delay", "3"), 100, "--mirror-workers=1", "--mirror-queue=2")
    client = router.client()
    answers = [client.post() for _ in range(15)]
    # Every user got the stable answer; the 3 s candidate could absorb at most 1 running + 2 queued
    # copies, so the rest were dropped rather than waited for.
    assert all(r.status == 200 and r.json()["served_by"] == "v1" for r in answers)
    assert stable.hits() == 15
    assert router.metric("router_mirror_dropped_total") >= 12
    assert router.metric("router_requests_total", version="v1", role="stable", outcome="ok") == 15


def test_candidate_down_counts_errors_and_users_still_get_stable(setup):
    router, stable, _ = setup((), None)  # mirror version has no endpoints at all
    client = router.client()
    assert all(client.post().json()["served_by"] == "v1" for _ in range(10))
    router.wait_metric("router_shadow_comparisons_total", 10, result="error")
    assert router.metric("router_mirror_requests_total", version="v2", outcome="unavailable") == 10


def test_mirror_percent_samples_a_share(setup):
    router, stable, mirror = setup((), ("--label", "yes"), 30)
    client = router.client()
    n = 400
    for _ in range(n):
        client.post()
    deadline = time.monotonic() + 10
    while router.metric("router_mirror_requests_total") != mirror.hits() and time.monotonic() < deadline:
        time.sleep(0.05)  # copies are fire-and-forget: wait until every sent copy is accounted for
    assert router.metric("router_mirror_requests_total", outcome="ok") == mirror.hits()
    # Binomial(400, 0.3): mean 120, sd 9.2; ±5 sd keeps a correct router's failure odds < 1e-6.
    assert abs(mirror.hits() - 120) <= 46
    assert router.metric("router_mirror_percent", version="v2") == 30
