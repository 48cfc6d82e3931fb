"""ModelRollout manifests the demo and the e2e tests apply: canary, shadow, blue-green and a
per-slice canary over the shipped speech models, with intervals shortened for a local run (stated as such).
"""

from __future__ import annotations

import copy
from typing import Any

MODEL_NAME = "speech-commands"
DEMO_NAMESPACE = "speech-demo"

# Shortened for the demo and the e2e tests: Prometheus scrapes every 2 s in the testbed, so a
# 30 s window and a 5 s check interval see enough data. Production values are minutes.
DEMO_ANALYSIS_INTERVAL = "5s"
DEMO_ANALYSIS_WINDOW = "30s"
DEMO_MIN_SAMPLES = 20

# The load generator's slices (speech_serving.loadgen.SLICES), allow-listed at the model servers
# so their `x-slice` header becomes the `slice` label (anything else would be counted as `other`).
DEMO_SLICES = ("clean", "young", "noisy", "other_mic", "silence")
SERVER_ARGS = [f"--slices={','.join(DEMO_SLICES)}"]

# The gates, written against the metric contract. Each is chosen for what it catches:
# v3 (a broken training run) answers "_unknown_" with low confidence -> mean-confidence and
# unknown-rate fail; v4 (labels off by one) is confident and error-free -> only shadow
# agreement catches it.
CANARY_GATES: list[dict[str, Any]] = [
    {"name": "error-rate", "template": "error-rate", "max": 0.02},
    {"name": "p99-latency", "template": "latency-p99", "max": 1.0},
    {"name": "mean-confidence", "template": "mean-confidence", "min": 0.5},
    {"name": "unknown-rate", "template": "unknown-rate", "relativeTo": "stable", "maxIncrease": 0.2},
]
SHADOW_GATES: list[dict[str, Any]] = [
    {"name": "shadow-agreement", "template": "shadow-agreement", "min": 0.9},
    {"name": "error-rate", "template": "error-rate", "max": 0.02},
    {"name": "mean-confidence", "template": "mean-confidence", "min": 0.5},
]

# v6 is better than v2 on the demo's mix and clearly worse on young voices: every aggregate gate
# passes (accuracy from the load's feedback among them), only the per-slice accuracy gate sees it.
# The sliced gate is the one named `accuracy`, so its verdict reads `accuracy[young] ...`.
SLICE_GATES: list[dict[str, Any]] = [
    {"name": "error-rate", "template": "error-rate", "max": 0.02},
    {"name": "unknown-rate", "template": "unknown-rate", "relativeTo": "stable", "maxIncrease": 0.2},
    {"name": "mix-accuracy", "template": "accuracy", "relativeTo": "stable", "maxDecrease": 0.05},
    {
        "name": "accuracy",
        "template": "accuracy",
        "relativeTo": "stable",
        "maxDecrease": 0.1,
        "slices": {"label": "slice"},  # every slice with data (the five above), at most the default max
    },
]

CANARY_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"analysis": {"checks": 2}},
    {"setWeight": 50},
    {"analysis": {"checks": 2}},
    {"promote": {}},
]


def compute_analysis(gates: list[dict[str, Any]], prometheus: str | None = None) -> dict[str, Any]:
    """spec.analysis with the demo's shortened interval/window (None: the operator's default
    Prometheus, set by the chart's operator.prometheusUrl)."""
    analysis: dict[str, Any] = {
        "interval": DEMO_ANALYSIS_INTERVAL,
        "window": DEMO_ANALYSIS_WINDOW,
        "minSamples": DEMO_MIN_SAMPLES,
        "onNoData": "hold",
        "failureLimit": 2,
        "inconclusiveLimit": 30,
        "metrics": copy.deepcopy(gates),
    }
    if prometheus:
        analysis["prometheus"] = {"address": prometheus}
    return analysis


def compute_rollout(
    name: str,
    version: str,
    strategy: dict[str, Any],
    *,
    namespace: str = DEMO_NAMESPACE,
    gates: list[dict[str, Any]] | None = None,
    prometheus: str | None = None,
    progress_deadline: str = "5m",
    sticky_header: str | None = None,
) -> dict[str, Any]:
    """A full ModelRollout for `version` of the shipped speech model."""
    router: dict[str, Any] = {"stickyHeader": sticky_header} if sticky_header else {}
    return {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": MODEL_NAME, "version": version, "uri": f"builtin:{version}"},
            "server": {"replicas": 1, "args": list(SERVER_ARGS)},
            "strategy": strategy,
            "analysis": compute_analysis(CANARY_GATES if gates is None else gates, prometheus),
            "trafficRouting": {"router": router},
            "progressDeadline": progress_deadline,
        },
    }


def compute_canary(name: str, version: str, **kw: Any) -> dict[str, Any]:
    """Canary 20% -> analysis -> 50% -> analysis -> promote."""
    return compute_rollout(name, version, {"canary": {"steps": copy.deepcopy(CANARY_STEPS)}}, **kw)


def compute_slice_canary(name: str, version: str, **kw: Any) -> dict[str, Any]:
    """The canary steps under SLICE_GATES: aggregate gates plus accuracy per slice of the load."""
    kw.setdefault("gates", SLICE_GATES)
    return compute_canary(name, version, **kw)


def compute_shadow(name: str, version: str, *, duration: str = "45s", then: str = "stop", **kw: Any) -> dict[str, Any]:
    """Mirror every request to `version` for `duration` under the shadow gates."""
    kw.setdefault("gates", SHADOW_GATES)
    return compute_rollout(name, version, {"shadow": {"mirrorPercent": 100, "duration": duration, "then": then}}, **kw)


def compute_blue_green(
    name: str, version: str, *, preview: str = "20s", post_promotion: str = "20s", auto_promote: bool = True, **kw: Any
) -> dict[str, Any]:
    """Preview at full scale, analysis, (approval if not `auto_promote`), atomic switch,
    post-promotion bake."""
    kw.setdefault("gates", [g for g in CANARY_GATES if "relativeTo" not in g])
    return compute_rollout(
        name,
        version,
        {
            "blueGreen": {
                "autoPromote": auto_promote,
                "previewDuration": preview,
                "scaleDownDelay": "10s",
                "postPromotionDuration": post_promotion,
            }
        },
        **kw,
    )
