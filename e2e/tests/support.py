"""Shared steps of the e2e rollout tests: apply a manifest and wait for it to settle, deploy the
first version, check who answered the load generator, run the kubectl plugin."""

from __future__ import annotations

from e2e import rollouts, scenario
from tests.support.waiting import wait_for

NAME = "speech"
HEALTHY_TIMEOUT = 240  # first model-server start: onnxruntime + VAD load, readiness probe
ROLLOUT_TIMEOUT = 360
# The user in the testbed's admin kubeconfig; the plugin records it as who asked.
KUBECONFIG_USER = "testbed"


def apply_and_wait(cluster, api, manifest, phases, timeout=ROLLOUT_TIMEOUT):
    """Apply, wait until the rollout of this version settles, and check it settled in `phases`."""
    scenario.apply_manifest(cluster, manifest)
    ns, version = manifest["metadata"]["namespace"], manifest["spec"]["model"]["version"]
    generation = scenario.fetch_rollout(api, ns, NAME)["metadata"]["generation"]
    obj = scenario.wait_for_rollout(
        api,
        ns,
        NAME,
        scenario.is_settled(version, generation),
        f"{version} to settle (generation {generation})",
        timeout,
    )
    status = obj["status"]
    assert status["phase"] in phases, (
        f"{version} settled in {status['phase']}, expected {'/'.join(phases)}: {status.get('message')}\n"
        + scenario.describe_state(api, ns, NAME, obj)
    )
    return obj


def deploy_first(cluster, api, namespace, version="v1"):
    obj = apply_and_wait(
        cluster, api, rollouts.compute_canary(NAME, version, namespace=namespace), ["Healthy"], HEALTHY_TIMEOUT
    )
    assert obj["status"]["stableVersion"] == version
    assert obj["status"]["traffic"]["stable"] == {"version": version, "weight": 100}
    return obj


def assert_answered_only_by(totals: dict, version: str, when: str) -> None:
    """Two separate properties, so a failure says which broke: no other version's answer
    reached users, and no user request failed (the load generator files failures under
    "unknown" since no version answered them)."""
    answered = {v for v, t in totals.items() if t["requests"] > t["errors"]}
    assert answered == {version}, f"{when}: users got answers from {answered}: {totals}"
    failed = sum(t["errors"] for t in totals.values())
    assert failed == 0, f"{when}: {failed} user requests failed: {totals}"


def metric(status: dict, name: str) -> dict:
    return next(m for m in status["analysis"]["metrics"] if m["name"] == name)


def plugin(cluster, namespace: str, command: str, *args: str) -> str:
    """`kubectl modelrollout <command> speech -n <namespace> [args]`; its stdout."""
    return scenario.run_tool(
        cluster, cluster.kubectl, "modelrollout", command, NAME, "-n", namespace, *args, timeout=120
    ).stdout


def operator_leader_pod(api, pods, timeout_s: float = 60.0):
    """The operator pod that holds the leader Lease (the chart runs two; only the leader runs
    kopf), among `pods`. Right after an install both may still be standing by: waits until
    the Lease names one of them; the only running pod when there is no Lease at all."""
    from kubernetes import client

    running = [p for p in pods if p.metadata.deletion_timestamp is None]
    names = {p.metadata.name: p for p in running}
    holders: list[str] = []

    def leader():
        try:
            lease = client.CoordinationV1Api(api).read_namespaced_lease(scenario.RELEASE, scenario.OPERATOR_NAMESPACE)
        except client.ApiException as err:
            if err.status != 404:
                raise
            (only,) = running  # no leader election: one replica
            return only
        holders.append((lease.spec.holder_identity or "").rsplit("_", 1)[0])
        return names.get(holders[-1])

    return wait_for(
        leader,
        f"the leader Lease to name one of {sorted(names)}",
        timeout=timeout_s,
        every=0.5,
        describe=lambda: f"it names {holders[-1] if holders else None!r}",
    )
