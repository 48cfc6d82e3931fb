"""The ModelRollouts the demo and e2e tests apply are valid specs that expand to the intended
steps (checked with the operator's own parser, so a contract change fails here, not mid-demo).
"""

from __future__ import annotations

import jsonschema
import pytest

from e2e import rollouts
from rollout_operator.domain.parse import parse_spec
from rollout_operator.domain.spec import Analysis, Promote, SetMirror, SetWeight, Stop

pytestmark = pytest.mark.unit

ALL = {
    "canary": rollouts.compute_canary("speech", "v2"),
    "shadow": rollouts.compute_shadow("speech", "v4"),
    "blue-green": rollouts.compute_blue_green("speech", "v2"),
    "slice-canary": rollouts.compute_slice_canary("speech", "v6"),
}


@pytest.mark.parametrize("kind", sorted(ALL))
def test_manifest_passes_the_crd_openapi_schema(kind):
    from tests.unit.test_crd_schema import schema  # the CRD tests' OpenAPI -> JSON Schema bridge

    jsonschema.Draft7Validator(schema()).validate(ALL[kind])


def _parse(manifest: dict):
    meta = manifest["metadata"]
    return parse_spec(manifest["spec"], name=meta["name"], namespace=meta["namespace"])


def test_canary_manifest_parses_to_20_then_50_then_promote():
    spec = _parse(rollouts.compute_canary("speech", "v2"))
    assert spec.model.version == "v2" and spec.model.uri == "builtin:v2"
    weights = [s.weight for s in spec.steps if isinstance(s, SetWeight)]
    assert weights == [20, 50]
    assert isinstance(spec.steps[-1], Promote)
    assert {m.name for m in spec.metrics} == {"error-rate", "p99-latency", "mean-confidence", "unknown-rate"}
    assert spec.analysis.min_samples == rollouts.DEMO_MIN_SAMPLES


def test_shadow_manifest_mirrors_everything_and_stops_without_promoting():
    spec = _parse(rollouts.compute_shadow("speech", "v4"))
    assert spec.steps[0] == SetMirror(100)
    assert isinstance(spec.steps[1], Analysis) and isinstance(spec.steps[-1], Stop)
    agreement = next(m for m in spec.metrics if m.template == "shadow-agreement")
    assert agreement.min == 0.9


def test_blue_green_manifest_has_no_relative_gate():
    spec = _parse(rollouts.compute_blue_green("speech", "v2"))
    assert spec.strategy.kind == "blueGreen"
    assert SetWeight(100) in spec.steps
    assert all(m.relative_to is None for m in spec.metrics)


@pytest.mark.parametrize("kind", sorted(ALL))
def test_model_servers_allow_list_the_load_generators_slices(kind):
    from speech_serving.loadgen import SLICES

    spec = _parse(ALL[kind])
    assert spec.server.args == (f"--slices={','.join(SLICES)}",)  # else its x-slice is counted as "other"


def test_slice_canary_has_aggregate_gates_and_a_per_slice_accuracy_gate():
    spec = _parse(rollouts.compute_slice_canary("speech", "v6"))
    assert spec.model.version == "v6" and [s.weight for s in spec.steps if isinstance(s, SetWeight)] == [20, 50]
    by_name = {m.name: m for m in spec.metrics}
    assert {n: m.slices for n, m in by_name.items()} == {
        "error-rate": None,
        "unknown-rate": None,
        "mix-accuracy": None,
        "accuracy": by_name["accuracy"].slices,
    }
    sliced = by_name["accuracy"]
    assert sliced.template == "accuracy" and sliced.relative_to == "stable" and sliced.slices.label == "slice"
    assert by_name["mix-accuracy"].template == "accuracy" and by_name["mix-accuracy"].relative_to == "stable"
