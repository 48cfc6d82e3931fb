"""Server-side apply with force takes over whatever has the name: the adapter refuses to apply over
an object this ModelRollout does not control, and reconcile ends the rollout Invalid naming it."""

import copy

import pytest

from rollout_operator.adapters import TakeoverRefused
from rollout_operator.adapters.fakes import FakeWorkloads
from rollout_operator.adapters.kube import KubeApi, KubeError
from rollout_operator.adapters.kube_workloads import KubeWorkloads
from rollout_operator.adapters.manifests import Owner, ServerTemplate
from rollout_operator.reconcile import reconcile
from tests.support.reconcile_world import SPEC, T0, World

pytestmark = pytest.mark.unit

DEPLOY = "/apis/apps/v1/namespaces/ml/deployments"
SVC = "/api/v1/namespaces/ml/services"
OWNER = Owner("speech", "ml", "uid-1")
SERVER = ServerTemplate("speech-commands", "", "modelrollout/model-server:dev")


def test_an_object_someone_else_created_is_not_taken_over(kube):
    kube.put(
        SVC,
        {
            "metadata": {"name": "speech-v2", "namespace": "ml", "labels": {"team": "billing"}},
            "spec": {"selector": {"app": "billing"}},
        },
    )
    with pytest.raises(TakeoverRefused) as err:
        KubeWorkloads(KubeApi(kube.api_client())).ensure_version(OWNER, "v2", 1, SERVER)
    assert "Service ml/speech-v2 already exists and is not created by this operator" in str(err.value)
    assert kube.get(SVC, "speech-v2")["spec"]["selector"] == {"app": "billing"}  # untouched
    assert kube.get(DEPLOY, "speech-v2") is None


def test_an_object_another_rollout_controls_is_not_taken_over(kube):
    # rollout speech-canary / version v1 and rollout speech / version canary-v1 share a name.
    other = Owner("speech-canary", "ml", "uid-2")
    w = KubeWorkloads(KubeApi(kube.api_client()))
    w.ensure_version(other, "v1", 1, SERVER)
    with pytest.raises(TakeoverRefused) as err:
        w.ensure_version(OWNER, "canary-v1", 1, SERVER)
    assert "controlled by ModelRollout speech-canary" in str(err.value)
    owner_refs = kube.get(DEPLOY, "speech-canary-v1")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in owner_refs] == ["uid-2"]


def test_our_own_objects_are_applied_again(kube):
    w = KubeWorkloads(KubeApi(kube.api_client()))
    w.ensure_version(OWNER, "v2", 1, SERVER)
    w.ensure_version(OWNER, "v2", 3, SERVER)
    assert kube.get(DEPLOY, "speech-v2")["spec"]["replicas"] == 3


class Refusing(World):
    """The fake cluster, but the first version's apply fails as the real API server would."""

    def __init__(self, error, spec=SPEC):
        super().__init__(spec, workloads=RefusingWorkloads(error))


class RefusingWorkloads(FakeWorkloads):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def ensure_version(self, owner, version, *args, **kwargs):
        if version == "v1":
            raise self.error
        return super().ensure_version(owner, version, *args, **kwargs)


def test_a_takeover_refusal_ends_invalid_naming_the_object():
    w = Refusing(TakeoverRefused("Deployment", "ml", "speech-v1", {}))
    for _ in range(3):
        w.tick()
    assert w.status["phase"] == "Invalid"
    assert w.status["message"].startswith("spec.model.version: Deployment ml/speech-v1 already exists")
    assert w.adapters.events.reasons() == ["InvalidSpec"]  # once, not once per tick
    assert "traffic" not in w.status or not w.status["traffic"].get("stable")


def test_a_spec_kubernetes_rejects_downstream_ends_invalid_naming_the_field():
    # What the API server answers for spec.server.resources.requests.cpu = "lots".
    err = KubeError(
        422,
        'Deployment.apps "speech-v1" is invalid: spec.template.spec.containers[0]'
        '.resources.requests[cpu]: Invalid value: "lots": must be a quantity',
        causes=("spec.template.spec.containers[0].resources.requests[cpu]",),
    )
    w = Refusing(err)
    for _ in range(3):
        w.tick()
    assert w.status["phase"] == "Invalid"
    assert w.status["message"].startswith("spec.server.resources: rejected by the API server: ")
    assert "requests[cpu]" in w.status["message"]
    assert w.adapters.events.reasons() == ["InvalidSpec"]


def test_a_transport_error_still_retries_rather_than_ending_invalid():
    w = Refusing(KubeError(503, "etcd leader changed"))
    with pytest.raises(KubeError):
        reconcile(copy.deepcopy(w.obj), w.adapters, w.settings, T0)
    assert "status" not in w.obj
