"""The real router binary against real HTTP backends on loopback; the split and endpoints come
from --static-config (the same structures the Kubernetes watch fills; the watch itself is tested
in tests/integration/test_router_k8s.py)."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.router_fixtures import (
    Backend,
    RouterProcess,
    free_port,
    start_backend,
    start_router,
    weights,
    write_static,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit


@pytest.fixture
def backends():
    started: list[Backend] = []

    def start(version: str, *extra: str) -> Backend:
        b = start_backend(version, *extra)
        started.append(b)
        return b

    yield start
    for b in started:
        if b.proc.poll() is None:
            b.kill()


@pytest.fixture
def routers():
    started: list[RouterProcess] = []

    def start(*args, **kwargs) -> RouterProcess:
        r = start_router(*args, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def run_parallel(router: RouterProcess, n: int, threads: int = 4, headers_of=lambda i: {}, path="/v1/models/m:predict"):
    """Sends n requests over `threads` keep-alive connections; returns the responses in order."""
    local = threading.local()

    def one(i: int):
        if not hasattr(local, "client"):
            local.client = router.client()
        return local.client.post(path, headers=headers_of(i))

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def test_split_ratio_is_within_binomial_bounds(router_bin, backends, routers, tmp_path):
    v1, v2 = backends("v1"), backends("v2")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 80, "v2"), {"v1": [v1.addr], "v2": [v2.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()
    n = 1000
    responses = run_parallel(router, n)
    assert all(r.status == 200 for r in responses)
    on_candidate = sum(r.headers["x-model-version"] == "v2" for r in responses)
    # Each request is an independent Bernoulli(0.2) draw, so the count is Binomial(1000, 0.2):
    # mean 200, sd 12.6. Five sd (±63) fails a correct router with probability < 1e-6, yet
    # catches any real bias (e.g. weights read as 70/30 would give ~300).
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs(on_candidate - n * 0.2) <= 5 * sd, on_candidate
    # Every response says truthfully who answered, and the backends agree with the headers.
    assert v2.hits() == on_candidate and v1.hits() == n - on_candidate
    roles = {(r.headers["x-model-version"], r.headers["x-modelrollout-role"]) for r in responses}
    assert roles == {("v1", "stable"), ("v2", "candidate")}
    assert router.metric("router_requests_total", version="v2", role="candidate", outcome="ok") == on_candidate
    assert router.metric("router_traffic_weight", version="v1", role="stable") == 80
    assert router.metric("router_traffic_weight", version="v2", role="candidate") == 20


def test_sticky_header_keeps_each_key_on_one_version(router_bin, backends, routers, tmp_path):
    v1, v2 = backends("v1"), backends("v2")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 50, "v2"), {"v1": [v1.addr], "v2": [v2.addr]}, sticky="x-user-id")
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()
    keys = [f"user-{i}" for i in range(60)]
    responses = run_parallel(router, 60 * 6, headers_of=lambda i: {"x-user-id": keys[i % 60]})
    seen: dict[str, set[str]] = {}
    for i, r in enumerate(responses):
        seen.setdefault(keys[i % 60], set()).add(r.headers["x-model-version"])
    assert all(len(v) == 1 for v in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    # With 60 keys at 50/50, all keys on one side would happen with probability 2^-59.
    assert {next(iter(v)) for v in seen.values()} == {"v1", "v2"}


def test_weight_change_applies_without_dropping_in_flight_requests(router_bin, backends, routers, tmp_path):
    release = tmp_path / "release-v1"
    v1, v2 = backends("v1", "--hold-until", str(release)), backends("v2")
    cfg = tmp_path / "split.json"
    eps = {"v1": [v1.addr], "v2": [v2.addr]}
    write_static(cfg, weights("v1", 100), eps)
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()
    with ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(router.client().post) for _ in range(8)]
        # v1 counts a request on arrival and holds it until released
        wait_for(lambda: v1.hits() >= 8, "8 requests held by v1", timeout=10, every=0.01)
        assert v1.hits() == 8 and not any(f.done() for f in in_flight)
        write_static(cfg, weights("v1", 0, "v2"), eps)
        router.wait_metric("router_traffic_weight", 100, version="v2", role="candidate")
        after = [router.client().post() for _ in range(20)]
        assert not any(f.done() for f in in_flight), "v1's requests are still held across the switch"
        release.touch()
        answered = [f.result() for f in in_flight]
    assert [r.status for r in answered] == [200] * 8
    assert {r.headers["x-model-version"] for r in answered} == {"v1"}
    assert {r.headers["x-model-version"] for r in after} == {"v2"}
    assert {r.headers["x-modelrollout-role"] for r in after} == {"candidate"}


def test_backend_killed_mid_load_fails_only_what_it_had_received(router_bin, backends, routers, tmp_path):
    """Requests the killed backend had already been sent get a 502 naming the version and are
    not re-sent elsewhere: they may have run, and one POST must reach one backend (issue 12).
    That is at most one per connection the router had open to it (one per client thread).
    Every later request finds the connection refused (never sent), is retried on the other
    endpoint and answered."""
    a, b = backends("v1"), backends("v1")
    cfg = tmp_path / "split.json"
    # The dead endpoint stays listed, as it would in an EndpointSlice that has not caught up.
    write_static(cfg, weights("v1", 100), {"v1": [a.addr, b.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}", "--eject-duration=30s")
    router.wait_ready()
    results = []
    killer = threading.Timer(0.3, a.kill)
    killer.start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        results += run_parallel(router, 40, threads=4)
    killer.join()
    assert a.proc.poll() is not None and len(results) > 100
    failed = [r for r in results if r.status != 200]
    assert len(failed) <= 4, [r.status for r in failed]
    assert all(r.status == 502 and "could not reach version v1" in r.json()["error"] for r in failed)
    assert [r.status for r in run_parallel(router, 40, threads=4) if r.status != 200] == []
    assert router.metric("router_upstream_retries_total", version="v1") >= 1
    assert any(
        rec.get("msg") == "endpoint failed, ejected" and rec.get("endpoint") == a.addr for rec in router.log_records()
    )


def test_model_4xx_is_passed_through_and_not_retried(router_bin, backends, routers, tmp_path):
    a, b = backends("v1", "--status", "422"), backends("v1", "--status", "422")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [a.addr, b.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()
    r = router.client().post()
    assert r.status == 422 and r.json() == {"error": "v1 refuses: bad input"}
    assert a.hits() + b.hits() == 1
    assert router.metric("router_upstream_retries_total") == 0
    assert router.metric("router_requests_total", version="v1", outcome="client_error") == 1


def test_backend_version_header_passes_through_else_is_set(router_bin, backends, routers, tmp_path):
    own = backends("v1", "--version-header", "v1-build-7")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [own.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()
    body = b'{"instances": [{"audio_b64": "AAAA"}]}'
    r = router.client().post(body=body)
    assert r.headers["x-model-version"] == "v1-build-7" and r.headers["x-modelrollout-role"] == "stable"
    assert r.json()["echo_bytes"] == len(body)  # the body reached the model unchanged
    assert router.metric("router_request_bytes_total", version="v1") == len(body)
    assert router.metric("router_response_bytes_total", version="v1") == len(r.body)


def test_oversized_request_is_rejected_with_413(router_bin, backends, routers, tmp_path):
    v1 = backends("v1")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [v1.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}", "--max-request-bytes=1000")
    router.wait_ready()
    r = router.client().post(body=b"x" * 1001)
    assert r.status == 413
    assert "--max-request-bytes=1000" in r.json()["error"]
    assert router.client().post(body=b"x" * 1000).status == 200
    assert v1.hits() == 1
    assert router.metric("router_rejected_total", reason="too_large") == 1


def test_slow_uploads_do_not_lock_out_other_clients(router_bin, backends, routers, tmp_path):
    """Issue 12: 120 uploads stalled mid-body held all 100 slots of --max-concurrency=100 and
    everyone else got 503. Bodies are now read before a slot is taken."""
    v1 = backends("v1")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [v1.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}", "--max-concurrency=100")
    router.wait_ready()
    stalled = []
    try:
        for _ in range(120):
            sock = socket.create_connection(("127.0.0.1", router.port))
            sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: speech\r\nContent-Length: 1000\r\n\r\n{")
            stalled.append(sock)
        router.wait_metric("router_buffered_request_bytes", 120 * 1000)  # all 120 are being read
        r = router.client().post()
        assert r.status == 200, r.body
        assert router.metric("router_in_flight_requests") == 0
    finally:
        for sock in stalled:
            sock.close()
    assert v1.hits() == 1


def test_model_repository_api_is_not_forwarded(router_bin, backends, routers, tmp_path):
    """Issue 12: POST /v2/repository/models/<m>/unload went through the router to the model."""
    v1 = backends("v1")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [v1.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()
    for path in ["/v2/repository/models/m/unload", "/v2/models/m/%2e%2e/%2e%2e/repository/models/m/unload"]:
        r = router.client().post(path)
        assert r.status in (400, 404) and path in r.json()["error"], (path, r.status, r.body)
    assert v1.hits() == 0
    assert router.metric("router_rejected_total", reason="bad_request") == 2


def test_timeout_gives_504_and_names_the_flag(router_bin, backends, routers, tmp_path):
    v1 = backends("v1", "--delay", "2")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [v1.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}", "--request-timeout=200ms")
    router.wait_ready()
    r = router.client().post()
    assert r.status == 504 and "--request-timeout=200ms" in r.json()["error"]
    assert router.metric("router_rejected_total", reason="timeout") == 1
    assert router.metric("router_requests_total", version="v1", outcome="unavailable") == 1


def test_concurrency_limit_gives_503_with_message(router_bin, backends, routers, tmp_path):
    v1 = backends("v1", "--delay", "1")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [v1.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}", "--max-concurrency=2")
    router.wait_ready()
    responses = run_parallel(router, 6, threads=6)
    codes = sorted(r.status for r in responses)
    assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) <= {200, 503}
    rejected = [r for r in responses if r.status == 503]
    assert all("--max-concurrency=2" in r.json()["error"] for r in rejected)
    assert router.metric("router_rejected_total", reason="overloaded") == len(rejected)


def test_api_server_unavailable_at_start_routes_all_to_stable(router_bin, backends, routers, tmp_path):
    v1, v2 = backends("v1"), backends("v2")
    cfg = tmp_path / "endpoints.json"
    write_static(cfg, endpoints={"v1": [v1.addr], "v2": [v2.addr]})  # no traffic: it must come from the API
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dead",
                "clusters": [{"name": "dead", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
            }
        )
    )
    router = routers(
        router_bin,
        tmp_path,
        f"--static-config={cfg}",
        "--initial-sync-timeout=500ms",
        env={"KUBECONFIG": str(kubeconfig), "ROUTER_STABLE_VERSION": "v1"},
    )
    router.wait_ready()
    responses = run_parallel(router, 50)
    assert {(r.status, r.headers["x-model-version"]) for r in responses} == {(200, "v1")}
    assert v2.hits() == 0
    assert router.metric("router_traffic_weight", version="v1", role="stable") == 100
    assert any(rec.get("source") == "safe-default" for rec in router.log_records())
    assert any(
        rec.get("level") == "WARN" and "could not read the ModelRollout status" in rec.get("msg", "")
        for rec in router.log_records()
    )


def test_without_stable_version_it_stays_unready_rather_than_guess(router_bin, backends, routers, tmp_path):
    v1 = backends("v1")
    cfg = tmp_path / "endpoints.json"
    write_static(cfg, endpoints={"v1": [v1.addr]})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dead",
                "clusters": [{"name": "dead", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
            }
        )
    )
    router = routers(
        router_bin,
        tmp_path,
        f"--static-config={cfg}",
        "--initial-sync-timeout=200ms",
        env={"KUBECONFIG": str(kubeconfig)},
    )
    time.sleep(1.0)
    assert not router.is_ready()
    r = router.client().post()
    assert r.status == 503 and "no traffic split yet" in r.json()["error"]
    assert v1.hits() == 0


def test_invalid_flags_and_config_name_the_field(router_bin, tmp_path):
    out = subprocess.run([str(router_bin), "--rollout=speech", "--max-concurrency=-1"], capture_output=True, text=True)
    assert out.returncode == 2 and "--max-concurrency: expected an integer >= 1, got -1" in out.stderr
    out = subprocess.run(
        [str(router_bin), "--rollout=speech"], capture_output=True, text=True, env={"ROUTER_REQUEST_TIMEOUT": "fast"}
    )
    assert out.returncode == 2 and "ROUTER_REQUEST_TIMEOUT (flag --request-timeout)" in out.stderr
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"traffic": {"stable": {"version": "v1", "weight": 90}}, "endpoints": {}}))
    out = subprocess.run(
        [str(router_bin), "--rollout=speech", f"--static-config={cfg}", f"--port={free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "stable.weight + candidate.weight must be 100, got 90" in out.stderr


def test_metric_contract_names_are_exported(router_bin, backends, routers, tmp_path):
    v1, v2 = backends("v1", "--segments", "yes@0.1-0.6"), backends("v2", "--segments", "yes@0.1-0.6")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 50, "v2", mirror=("v2", 100)), {"v1": [v1.addr], "v2": [v2.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()
    run_parallel(router, 20)
    stable_requests = router.metric("router_requests_total", role="stable")
    router.wait_metric("router_mirror_requests_total", stable_requests)
    router.wait_metric("router_shadow_segment_comparisons_total", stable_requests, result="agree")
    names = {name for name, _ in router.metrics()}
    for name in [
        "router_requests_total",
        "router_request_duration_seconds_bucket",
        "router_request_bytes_total",
        "router_response_bytes_total",
        "router_in_flight_requests",
        "router_rejected_total",
        "router_upstream_retries_total",
        "router_traffic_weight",
        "router_mirror_percent",
        "router_mirror_requests_total",
        "router_mirror_dropped_total",
        "router_shadow_comparisons_total",
        "router_shadow_confidence_delta_bucket",
        "router_shadow_segment_comparisons_total",
        "router_panic_routing",
    ]:
        assert name in names, name
    labels = {n: dict(lbls) for (n, lbls) in router.metrics() if n.startswith("router_")}
    assert set(labels["router_requests_total"]) == {"rollout", "version", "role", "outcome"}
    assert set(labels["router_shadow_comparisons_total"]) == {
        "rollout",
        "stable_version",
        "candidate_version",
        "result",
    }
    assert set(labels["router_shadow_segment_comparisons_total"]) == {
        "rollout",
        "stable_version",
        "candidate_version",
        "result",
    }
    assert set(labels["router_mirror_percent"]) == {"rollout", "version"}
    assert set(labels["router_panic_routing"]) == {"rollout", "version"}


def test_panic_routing_serves_a_not_ready_endpoint_until_one_is_ready(router_bin, backends, routers, tmp_path):
    slow = backends("v1")
    cfg = tmp_path / "split.json"
    # v1's only pod fails its readiness probe (slow, not dead): listed, but not ready.
    write_static(cfg, weights("v1", 100), {"v1": []}, not_ready={"v1": [slow.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}")
    router.wait_ready()  # serving from a not-ready endpoint counts as ready (docs/router.md)
    assert "panic routing" in router.client().request("GET", "/readyz").json()["reason"]
    responses = run_parallel(router, 20)
    assert {(r.status, r.json()["served_by"]) for r in responses} == {(200, "v1")}
    assert slow.hits() == 20
    assert router.metric("router_panic_routing", version="v1") == 1
    assert router.metric("router_requests_total", version="v1", outcome="ok") == 20
    fresh = backends("v1")
    write_static(cfg, weights("v1", 100), {"v1": [fresh.addr]}, not_ready={"v1": [slow.addr]})
    router.wait_metric("router_panic_routing", 0, version="v1")
    assert {r.status for r in run_parallel(router, 20)} == {200}
    assert fresh.hits() == 20 and slow.hits() == 20  # only the ready endpoint once there is one
    assert router.client().request("GET", "/readyz").json()["reason"] == "ok"
    msgs = [rec["msg"] for rec in router.log_records() if rec.get("version") == "v1" and "panic" in rec.get("msg", "")]
    assert msgs == [
        "panic routing: no ready endpoints, routing to not-ready ones (--panic-routing)",
        "panic routing ended: ready endpoints are back",
    ]


def test_panic_routing_off_keeps_the_503_naming_the_version(router_bin, backends, routers, tmp_path):
    slow = backends("v1")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": []}, not_ready={"v1": [slow.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}", "--panic-routing=false")
    router.wait_listening()  # the static file is applied before the router listens
    readyz = router.client().request("GET", "/readyz")
    assert readyz.status == 503 and "no ready endpoints for stable version v1" in readyz.json()["reason"]
    r = router.client().post()
    assert r.status == 503
    assert "no ready endpoints for version v1 (Service speech-v1 has none)" in r.json()["error"]
    assert "--panic-routing=false" in r.json()["error"]
    assert slow.hits() == 0
    assert router.metric("router_panic_routing", version="v1") == 0


def test_sigterm_lets_in_flight_requests_finish_then_exits_cleanly(router_bin, backends, routers, tmp_path):
    v1 = backends("v1", "--delay", "1")
    cfg = tmp_path / "split.json"
    write_static(cfg, weights("v1", 100), {"v1": [v1.addr]})
    router = routers(router_bin, tmp_path, f"--static-config={cfg}", "--shutdown-delay=3s", "--shutdown-grace=10s")
    router.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(router.client().post)
        wait_for(lambda: v1.hits() >= 1, "the request held by v1", timeout=10, every=0.01)
        router.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not router.is_ready(), "the router to turn unready", timeout=10, every=0.01)
        # Unready but still serving during --shutdown-delay, so the Service can drop it first.
        readyz = router.client().request("GET", "/readyz")
        assert readyz.status == 503 and readyz.json()["reason"] == "shutting down"
        answer = pending.result()
    assert answer.status == 200 and answer.json()["served_by"] == "v1"
    assert router.proc.wait(timeout=15) == 0
    assert any(rec.get("msg") == "shutting down" for rec in router.log_records())
