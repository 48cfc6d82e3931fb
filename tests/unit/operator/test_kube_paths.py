"""REST paths are built from names that come from specs: none may address another object."""

import pytest

from rollout_operator.adapters.kube import HTTP_ROUTES, SERVICES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "name",
    [
        "../../../../../../api/v1/namespaces/default/services/kubernetes",
        "..",
        ".",
        "route?dryRun=All",
        "a#b",
        "a%2Fb",
        "x/y",
    ],
)
def test_a_name_that_is_a_path_is_refused(name):
    with pytest.raises(ValueError, match="not a Kubernetes object name"):
        HTTP_ROUTES.path("models", name)
    with pytest.raises(ValueError, match="not a Kubernetes object name"):
        SERVICES.path(name)


def test_ordinary_names_make_ordinary_paths():
    assert (
        HTTP_ROUTES.path("models", "speech.route", "status")
        == "/apis/gateway.networking.k8s.io/v1/namespaces/models/httproutes/speech.route/status"
    )
