"""kubectl-modelrollout: argument errors, the patches each intent builds, and runs against a stub API."""

import pytest

from rollout_operator.adapters.kube import KubeApi
from rollout_operator.cli import CliError, Identity, compute_intent_patch, compute_status_text, parse_args, run
from tests.support.stub_kube import StubKube

pytestmark = pytest.mark.unit

MROS = "/apis/modelrollout.dev/v1alpha1/namespaces/ml/modelrollouts"
OBJ = {
    "metadata": {"name": "speech", "namespace": "ml", "resourceVersion": "7"},
    "spec": {"model": {"name": "m", "version": "v2"}, "requests": {"promote": 2, "by": "bob"}},
}
WHO = Identity("ml", "alice")


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "the following arguments are required: COMMAND"),
        (["status"], "the following arguments are required: NAME"),
        (["launch", "speech"], "invalid choice: 'launch'"),
        (["promote", "Speech_1"], "NAME 'Speech_1' is not a valid object name"),
        (["abort", "speech", "-n", "Bad NS"], "--namespace 'Bad NS' is not a valid namespace name"),
        (["-n", "Bad_NS", "abort", "speech"], "--namespace 'Bad_NS' is not a valid namespace name"),
        (["status", "speech", "--watch", "--interval=0"], "--interval must be > 0 seconds"),
        (["pause", "speech", "--full"], "unrecognized arguments: --full"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    "intent, spec_patch",
    [
        ("promote", {"requests": {"promote": 3, "by": "alice"}}),
        ("promote-full", {"requests": {"promoteFull": 1, "by": "alice"}}),
        ("abort", {"requests": {"abort": 1, "by": "alice"}}),
        ("retry", {"requests": {"retry": 1, "by": "alice"}}),
        ("pause", {"paused": True, "requests": {"by": "alice"}}),
        ("resume", {"paused": False, "requests": {"by": "alice"}}),
    ],
)
def test_each_intent_is_one_spec_patch_with_a_precondition(intent, spec_patch):
    patch = compute_intent_patch(OBJ, intent, "alice")
    assert patch == {"metadata": {"resourceVersion": "7"}, "spec": spec_patch}
    assert "annotations" not in patch["metadata"]  # GitOps-safe: no annotation bumping


def test_a_corrupt_counter_is_reported_with_its_field():
    bad = {**OBJ, "spec": {"requests": {"abort": "many"}}}
    with pytest.raises(CliError, match=r"spec.requests.abort is 'many'; expected a non-negative integer"):
        compute_intent_patch(bad, "abort", "alice")


@pytest.fixture
def cluster():
    with StubKube() as kube:
        kube.put(
            MROS,
            {
                **OBJ,
                "status": {
                    "phase": "Paused",
                    "currentStep": "2/4 pause",
                    "stableVersion": "v1",
                    "candidateVersion": "v2",
                    "traffic": {
                        "stable": {"version": "v1", "weight": 90},
                        "candidate": {"version": "v2", "weight": 10},
                    },
                    "analysis": {
                        "lastVerdict": "Pass",
                        "metrics": [
                            {
                                "name": "error-rate",
                                "threshold": "<= 0.01",
                                "value": 0.002,
                                "samples": 480,
                                "verdict": "Pass",
                            }
                        ],
                    },
                    "history": [{"version": "v1", "outcome": "Promoted", "reason": "Completed", "by": "carol"}],
                },
            },
        )
        kube.put(
            "/api/v1/namespaces/ml/events",
            {
                "metadata": {"name": "speech.1"},
                "type": "Normal",
                "reason": "Paused",
                "message": "waiting for promote",
                "lastTimestamp": "2026-03-01T12:00:00Z",
                "involvedObject": {"kind": "ModelRollout", "name": "speech"},
            },
        )
        yield kube


def _run(kube, argv):
    out: list[str] = []
    code = run(parse_args(argv), KubeApi(kube.api_client()), WHO, out.append, sleep=lambda _: None)
    return code, "\n".join(out)


def test_promote_bumps_the_counter_and_records_who(cluster):
    code, text = _run(cluster, ["promote", "speech"])
    assert code == 0 and "promote requested by alice" in text
    assert cluster.get(MROS, "speech")["spec"]["requests"] == {"promote": 3, "by": "alice"}
    code, _ = _run(cluster, ["promote", "speech", "--full"])
    assert cluster.get(MROS, "speech")["spec"]["requests"]["promoteFull"] == 1
    assert cluster.get(MROS, "speech")["spec"]["model"] == {"name": "m", "version": "v2"}  # untouched


def test_conflicting_writer_is_retried_on_fresh_data(cluster):
    real = cluster.handle
    raced: list[int] = []

    def racing(method, path, ctype, body):
        if method == "PATCH" and not raced:  # another user bumps abort just before our write lands
            raced.append(1)
            obj = cluster.objects[path.split("?")[0]]
            obj["spec"]["requests"]["abort"] = 1
            obj["metadata"]["resourceVersion"] = "500"
        return real(method, path, ctype, body)

    cluster.handle = racing
    _run(cluster, ["abort", "speech"])
    assert cluster.get(MROS, "speech")["spec"]["requests"]["abort"] == 2  # not 1: no lost update


def test_missing_rollout_is_a_clear_error(cluster):
    with pytest.raises(CliError, match=r'modelrollout "nope" not found in namespace "ml"'):
        _run(cluster, ["abort", "nope"])


def test_status_shows_phase_weights_gates_and_events(cluster):
    code, text = _run(cluster, ["status", "speech"])
    assert code == 0
    assert "Phase:     Paused" in text
    assert "stable v1 90%, candidate v2 10%" in text
    gate_line = next(line for line in text.splitlines() if "error-rate" in line)
    assert "0.002" in gate_line and "<= 0.01" in gate_line and "480" in gate_line and "Pass" in gate_line
    assert "waiting for promote" in text


def test_history_lists_outcomes_newest_first(cluster):
    _, text = _run(cluster, ["history", "speech"])
    assert text.splitlines()[1].split()[:3] == ["v1", "Promoted", "Completed"]
    assert "carol" in text


def test_status_of_a_never_reconciled_rollout():
    text = compute_status_text({"metadata": {"name": "a", "namespace": "b"}}, [])
    assert "Pending (not reconciled yet)" in text and "Traffic:   none yet" in text


@pytest.mark.parametrize(
    "argv", [["-n", "ml", "status", "speech"], ["status", "speech", "-n", "ml"], ["status", "-n", "ml", "speech"]]
)
def test_namespace_flag_works_before_or_after_the_subcommand(argv):
    args = parse_args(argv)
    assert (args.namespace, args.command, args.name) == ("ml", "status", "speech")


def test_namespace_defaults_to_none_when_not_given_anywhere():
    assert parse_args(["abort", "speech"]).namespace is None


def test_bad_namespace_after_the_subcommand_is_still_rejected(capsys):
    with pytest.raises(SystemExit):
        parse_args(["pause", "speech", "-n", "Bad_NS"])
    assert "--namespace 'Bad_NS' is not a valid namespace name" in capsys.readouterr().err


def test_status_shows_each_slice_of_a_per_slice_gate_under_it():
    young = {"name": "young", "verdict": "Fail", "value": 0.6, "stableValue": 0.9, "samples": 212}
    young["message"] = "0.6 < stable-0.05 = 0.85 (n=212)"
    clean = {"name": "clean", "verdict": "Pass", "value": 0.98, "stableValue": 0.95, "samples": 400, "message": "ok"}
    gate = {"name": "accuracy", "threshold": ">= stable-0.05", "verdict": "Fail", "value": 0.6, "stableValue": 0.9}
    gate.update(samples=612, slices=[clean, young])
    obj = {"metadata": {"name": "speech", "namespace": "models"}, "status": {"analysis": {"metrics": [gate]}}}
    lines = compute_status_text(obj, []).splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("accuracy "))
    assert lines[at + 1].split() == ["[clean]", "0.98", "0.95", "400", "Pass"]  # a pass: no message
    assert lines[at + 2].split()[:5] == ["[young]", "0.6", "0.9", "212", "Fail"]
    assert lines[at + 2].endswith("Fail  0.6 < stable-0.05 = 0.85 (n=212)")
    plain = {"name": "errors", "threshold": "<= 0.01", "verdict": "Pass", "value": 0.001, "samples": 10}
    unsliced = {"metadata": obj["metadata"], "status": {"analysis": {"metrics": [plain]}}}
    assert "[" not in compute_status_text(unsliced, []).split("GATE")[1]
