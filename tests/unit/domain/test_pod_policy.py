"""What reaches pods: images resolved once (spec or the operator's default), registries, env and
args restricted by the operator's PodPolicy, with errors naming the field and the flag."""

import copy

import pytest

from rollout_operator.domain import EnsureRouter, EnsureVersion, Phase, PodPolicy, SpecError, parse_spec
from tests.support.domain_sim import CANARY, World

pytestmark = pytest.mark.unit

OURS = PodPolicy(server_image="registry.example/ml/model-server:7", router_image="registry.example/ml/router:7")


def parse(spec, policy=OURS):
    return parse_spec(spec, name="speech", namespace="models", policy=policy)


def server(**fields):
    spec = copy.deepcopy(CANARY)
    spec["server"] = {**spec.get("server", {}), **fields}
    return spec


def rejected(spec, policy=OURS):
    with pytest.raises(SpecError) as err:
        parse(spec, policy)
    return err.value


def test_an_unset_image_is_the_operators_and_travels_in_the_actions():
    spec = copy.deepcopy(CANARY)
    spec.get("server", {}).pop("image", None)
    spec.pop("trafficRouting", None)  # no trafficRouting at all: the router still gets ours
    parsed = parse(spec)
    assert parsed.server.image == "registry.example/ml/model-server:7"
    assert parsed.traffic_routing.router.image == "registry.example/ml/router:7"
    routed = parse({**spec, "trafficRouting": {"router": {}}})
    assert routed.traffic_routing.router.image == "registry.example/ml/router:7"


def test_the_decided_image_is_the_one_in_ensure_version_and_ensure_router():
    world = World(server(image="registry.example/ml/model-server:8"))
    world.run_until_phase(Phase.HEALTHY)
    actions = world.tick().actions
    versions = [a for a in actions if isinstance(a, EnsureVersion)]
    assert versions and {a.image for a in versions} == {"registry.example/ml/model-server:8"}
    (router,) = [a for a in actions if isinstance(a, EnsureRouter)]
    assert router.image == "modelrollout/router:dev"  # the built-in default (World's policy)


def test_a_spec_image_wins_and_empty_means_default():
    assert parse(server(image="registry.example/ml/model-server:8")).server.image.endswith(":8")
    assert parse(server(image="")).server.image == OURS.server_image


@pytest.mark.parametrize("image", ["Registry.example/x:1", "reg.example/x:1 --privileged", "reg/x\n:1", "-reg/x"])
def test_malformed_images_are_rejected(image):
    err = rejected(server(image=image))
    assert err.field == "spec.server.image" and "image reference" in err.message


def test_allowed_registries_confine_spec_and_router_images():
    policy = PodPolicy(
        server_image="registry.example/ml/model-server:7",
        router_image="registry.example/ml/router:7",
        allowed_registries=("registry.example/ml",),
    )
    assert parse(server(image="registry.example/ml/other:1"), policy).server.image
    err = rejected(server(image="docker.io/evil/miner:1"), policy)
    assert err.field == "spec.server.image"
    assert "registry.example/ml" in err.message and "--allowed-image-registries" in err.message
    # A prefix must end at a path boundary: registry.example/mlx is not registry.example/ml.
    assert rejected(server(image="registry.example/mlx/x:1"), policy).field == "spec.server.image"
    spec = {**copy.deepcopy(CANARY), "trafficRouting": {"router": {"image": "evil.example/router:1"}}}
    assert rejected(spec, policy).field == "spec.trafficRouting.router.image"


def test_literal_env_is_passed_through():
    parsed = parse(server(env=[{"name": "SPEECH_SERVER_MAX_BATCH", "value": "8"}, {"name": "EMPTY"}]))
    assert parsed.server.env == ({"name": "SPEECH_SERVER_MAX_BATCH", "value": "8"}, {"name": "EMPTY"})


SECRET = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}


def test_secret_env_needs_the_operator_flag():
    err = rejected(server(env=[SECRET]))
    assert err.field == "spec.server.env[0].valueFrom"
    assert "--allow-env-value-from" in err.message and "literal value" in err.message
    for source in ({"configMapKeyRef": {"name": "c", "key": "k"}}, {"fieldRef": {"fieldPath": "metadata.name"}}):
        assert rejected(server(env=[{"name": "X", "valueFrom": source}])).field == "spec.server.env[0].valueFrom"
    allowing = PodPolicy(allow_env_value_from=True)
    assert parse(server(env=[SECRET]), allowing).server.env == (SECRET,)


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("LD_PRELOAD", "LD_"),
        ("PYTHONPATH", "PYTHON"),
        ("pythonstartup", "PYTHON"),
        ("PATH", "PATH"),
        ("KUBERNETES_SERVICE_HOST", "KUBERNETES_"),
        ("POD_IP", "POD_"),
        ("SPEECH_SERVER_PORT", "SPEECH_SERVER_PORT"),
        ("SPEECH_SERVER_MODEL_URI", "SPEECH_SERVER_MODEL_"),
    ],
)
def test_reserved_env_names_are_rejected_naming_the_prefix(name, prefix):
    err = rejected(server(env=[{"name": "OK", "value": "1"}, {"name": name, "value": "x"}]))
    assert err.field == "spec.server.env[1].name"
    assert repr(prefix) in err.message and "use another name" in err.message


@pytest.mark.parametrize(
    "item, field, needle",
    [
        ({"name": "MY-VAR", "value": "1"}, "spec.server.env[0].name", "letters, digits and '_'"),
        ({"name": "9LIVES", "value": "1"}, "spec.server.env[0].name", "not starting with a digit"),
        ({"name": "A", "value": 3}, "spec.server.env[0].value", "must be a string"),
        ({"name": "A", "value": "1", "valueFromm": {}}, "spec.server.env[0]", "not valueFromm"),
        ({"value": "1"}, "spec.server.env[0]", "string name"),
    ],
)
def test_malformed_env_is_rejected(item, field, needle):
    err = rejected(server(env=[item]))
    assert err.field == field and needle in err.message, str(err)


def test_allowed_args_pass_and_others_are_refused():
    assert parse(server(args=["--max-batch=8", "--log-level=debug"])).server.args == (
        "--max-batch=8",
        "--log-level=debug",
    )
    err = rejected(server(args=["--max-batch=8", "--model-uri=file:///etc/shadow"]))
    assert err.field == "spec.server.args[1]" and "set by the operator" in err.message
    err = rejected(server(args=["--debug-shell=1"]))
    assert err.field == "spec.server.args[0]" and "--max-batch" in err.message
    assert "--model-server-allowed-args" in err.message
    err = rejected(server(args=["--max-batch", "8"]))
    assert err.field == "spec.server.args[0]" and "--flag=value" in err.message
    assert rejected(server(args=["--max-batch=8\n--port=1"])).field == "spec.server.args[0]"
    assert parse(server(args=["--debug-shell=1"]), PodPolicy(allowed_args=("debug-shell",))).server.args
