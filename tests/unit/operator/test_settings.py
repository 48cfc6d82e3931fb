"""Settings: defaults, env vars, flags overriding env, and actionable errors for bad values."""

import pytest

from rollout_operator.settings import OPTIONS, Settings, SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_without_flags_or_env():
    assert load_settings([], {}) == Settings()


def test_env_vars_are_read_and_flags_override_them():
    env = {
        "MODELROLLOUT_PORT": "9100",
        "MODELROLLOUT_TICK_INTERVAL": "0.5",
        "MODELROLLOUT_NAMESPACES": "team-a, team-b",
    }
    s = load_settings(["--port=9200", "--host=127.0.0.5"], env)
    assert s.port == 9200  # flag wins
    assert s.tick_interval == 0.5  # env
    assert s.namespaces == ("team-a", "team-b")
    assert s.host == "127.0.0.5"


def test_kube_timeout_defaults_to_30s_and_reads_its_env():
    assert Settings().kube_timeout == 30.0
    assert load_settings([], {"MODELROLLOUT_KUBE_TIMEOUT": "7.5"}).kube_timeout == 7.5


def test_every_option_has_a_kebab_flag_and_prefixed_env():
    for opt in OPTIONS:
        assert opt.flag == "--" + opt.name.replace("_", "-")
        assert opt.env == "MODELROLLOUT_" + opt.name.upper()
        assert hasattr(Settings(), opt.name)


@pytest.mark.parametrize(
    "argv, env, needle",
    [
        (["--port=0"], {}, "--port (--port / MODELROLLOUT_PORT): expected an integer between 1 and 65535, got '0'"),
        (["--port=http"], {}, "expected an integer, got 'http'"),
        (
            [],
            {"MODELROLLOUT_TICK_INTERVAL": "fast"},
            "MODELROLLOUT_TICK_INTERVAL (--tick-interval / MODELROLLOUT_TICK_INTERVAL): expected a number, got 'fast'",
        ),
        (["--prometheus-url=prometheus:9090"], {}, "expected an http(s):// URL"),
        (["--log-level=loud"], {}, "expected one of debug, info, warning, error, got 'loud'"),
        (["--namespaces=ok,Bad_NS"], {}, "invalid: Bad_NS"),
        (["--router-image= "], {}, "expected a non-empty image reference"),
        (["--host=not a host"], {}, "expected an IP address or host name"),
        (["--router-endpoints-source=dns"], {}, "expected endpointslices or pods, got 'dns'"),
        (
            ["--kube-timeout=0.5"],
            {},
            "--kube-timeout (--kube-timeout / MODELROLLOUT_KUBE_TIMEOUT): expected a "
            "number of seconds between 1 and 300, got '0.5'",
        ),
    ],
)
def test_bad_values_name_the_flag_env_and_expectation(argv, env, needle):
    with pytest.raises(SettingsError) as err:
        load_settings(argv, env)
    assert needle in str(err.value)


def test_model_server_resources_default_to_bounded_and_read_their_env():
    s = Settings()
    assert (
        s.model_server_cpu_request,
        s.model_server_memory_request,
        s.model_server_cpu_limit,
        s.model_server_memory_limit,
    ) == ("250m", "256Mi", "", "1Gi")
    s = load_settings(
        [], {"MODELROLLOUT_MODEL_SERVER_MEMORY_LIMIT": "2Gi", "MODELROLLOUT_MODEL_SERVER_CPU_REQUEST": "500m"}
    )
    assert (s.model_server_memory_limit, s.model_server_cpu_request) == ("2Gi", "500m")


@pytest.mark.parametrize(
    "flag",
    [
        "--model-server-cpu-request",
        "--model-server-memory-request",
        "--model-server-cpu-limit",
        "--model-server-memory-limit",
    ],
)
def test_a_bad_model_server_quantity_names_the_flag(flag):
    with pytest.raises(SettingsError) as err:
        load_settings([f"{flag}=1 GB"], {})
    assert f"{flag} ({flag} / MODELROLLOUT_" in str(err.value)
    assert "a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi" in str(err.value)


@pytest.mark.parametrize("flag", ["--model-server-cpu-request", "--model-server-memory-request"])
def test_model_server_requests_cannot_be_empty(flag):
    with pytest.raises(SettingsError) as err:
        load_settings([f"{flag}="], {})
    assert flag in str(err.value)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--model-server-memory-limit=128Mi"], "--model-server-memory"),  # default request 256Mi
        (["--model-server-cpu-request=2", "--model-server-cpu-limit=1500m"], "--model-server-cpu"),
        (["--router-memory-request=1Gi"], "--router-memory"),  # default limit 512Mi
        (["--router-cpu-limit=50m"], "--router-cpu"),  # default request 100m
    ],
)
def test_a_request_above_its_limit_is_refused_at_startup(args, flag):
    # The API server would refuse every Deployment built from these defaults, and each rollout
    # would end Invalid blaming spec.server.resources, which its author never set.
    with pytest.raises(SettingsError) as err:
        load_settings(args, {})
    assert f"{flag}-request (" in str(err.value) and f"is above {flag}-limit (" in str(err.value)


def test_a_request_equal_to_its_limit_is_accepted():
    s = load_settings(["--model-server-memory-limit=256Mi", "--router-cpu-limit=0.1"], {})
    assert (s.model_server_memory_limit, s.router_cpu_limit) == ("256Mi", "0.1")


def test_all_problems_are_reported_at_once():
    with pytest.raises(SettingsError) as err:
        load_settings(["--port=-1", "--max-workers=0"], {"MODELROLLOUT_PROMETHEUS_TIMEOUT": "0"})
    text = str(err.value)
    assert "--port" in text and "--max-workers" in text and "MODELROLLOUT_PROMETHEUS_TIMEOUT" in text


def test_empty_prometheus_url_and_namespaces_are_valid():
    s = load_settings(["--prometheus-url=", "--namespaces="], {})
    assert s.prometheus_url == "" and s.namespaces == ()
