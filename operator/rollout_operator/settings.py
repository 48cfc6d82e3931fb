"""The operator's settings: one frozen object built from kebab-case flags and MODELROLLOUT_* env vars.

Every setting has a documented default; `load_settings` validates all of them at startup and
raises `SettingsError` with one actionable line per bad value (flag, env var, what was expected).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import yaml
from kubernetes.utils.quantity import parse_quantity

from .adapters.manifests import PodSettings
from .domain.notifications import NotificationConfig, NotificationError, parse_notification_config
from .domain.pod_policy import DEFAULT_ALLOWED_ARGS, DEFAULT_ROUTER_IMAGE, DEFAULT_SERVER_IMAGE, PodPolicy

ENV_PREFIX = "MODELROLLOUT_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists each with its flag and env var."""


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings; per-rollout choices live in the ModelRollout spec instead."""

    # Address the health (/healthz, /readyz) and metrics (/metrics) server binds to.
    host: str = "127.0.0.1"
    # Port of that server; probes and Prometheus scrape it.
    port: int = 8080
    # Namespaces to watch; empty means every namespace (cluster-wide RBAC needed then).
    namespaces: tuple[str, ...] = ()
    # How often (seconds) each rollout's timer wakes; the domain decides whether anything is due.
    tick_interval: float = 1.0
    # Prometheus used when a rollout's spec.analysis.prometheus.address is empty; empty = none.
    prometheus_url: str = ""
    # Per-query timeout (seconds) for Prometheus; a timeout is an error measurement, not a crash.
    prometheus_timeout: float = 10.0
    # Total seconds per Kubernetes API call (connect, send, headers, body): a late call fails the
    # tick, which is retried. Above the API server's admission-webhook timeouts (10 s default,
    # 30 s at most each) so a slow webhook is not mistaken for a hung server. Also kopf's own
    # request timeout (handlers/rollouts.py).
    kube_timeout: float = 30.0
    # Image of the built-in traffic router Deployment when spec.trafficRouting.router.image is empty.
    router_image: str = DEFAULT_ROUTER_IMAGE
    # Where the built-in router finds backends: `endpointslices` (default) or `pods` (ready pods by
    # label; needed where EndpointSlices cannot hold pod IPs, e.g. the loopback testbed).
    router_endpoints_source: str = "endpointslices"
    # Model-server image used when spec.server.image is empty.
    model_server_image: str = DEFAULT_SERVER_IMAGE
    # Image prefixes (registry, optionally a path) every pod image must start with; empty = any.
    allowed_image_registries: tuple[str, ...] = ()
    # Let spec.server.env use valueFrom (secretKeyRef, configMapKeyRef, ...); off: literal values only.
    allow_env_value_from: bool = False
    # Model-server flags (without --) a spec may pass in spec.server.args as --flag=value.
    model_server_allowed_args: tuple[str, ...] = DEFAULT_ALLOWED_ARGS
    # UID (and GID) every router and model-server container runs as (non-root; the images' user).
    pod_run_as_user: int = PodSettings.run_as_user
    # The router's resources: requests always, limits when non-empty (Kubernetes quantities).
    router_cpu_request: str = PodSettings.router_cpu_request
    router_memory_request: str = PodSettings.router_memory_request
    # Empty: no CPU limit (throttling would add latency to every request through the router).
    router_cpu_limit: str = PodSettings.router_cpu_limit
    router_memory_limit: str = PodSettings.router_memory_limit
    # ClusterRole (installed by the chart) each router's RoleBinding refers to; the operator
    # creates only the binding, never a Role.
    router_cluster_role: str = PodSettings.router_cluster_role
    # Model-server resources when a rollout's spec.server.resources is empty (a spec that sets
    # them keeps exactly its own): requests always, limits when non-empty. No CPU limit by default,
    # as for the router; the memory limit bounds every model server (PodSettings says why 1Gi).
    model_server_cpu_request: str = PodSettings.server_cpu_request
    model_server_memory_request: str = PodSettings.server_memory_request
    model_server_cpu_limit: str = PodSettings.server_cpu_limit
    model_server_memory_limit: str = PodSettings.server_memory_limit
    # One NetworkPolicy per rollout with the built-in router: model-server pods admit only the
    # rollout's router and Prometheus; the router admits clients on its port.
    network_policies: bool = True
    # Which pods are Prometheus for those policies: a namespace label selector (empty = every
    # namespace) and a pod label selector, both `key=value,...`.
    prometheus_namespace_selector: str = ""
    prometheus_pod_selector: str = "app.kubernetes.io/name=prometheus"
    # Threads kopf runs our (synchronous) reconciles in; bounds concurrent API/Prometheus calls.
    max_workers: int = 16
    # Log level of the operator process.
    log_level: str = "info"
    # Field manager name used for server-side apply and status patches (shows in managedFields).
    field_manager: str = "modelrollout-operator"
    # Leader election (handlers/leadership.py): replicas compete for one coordination.k8s.io
    # Lease and only its holder reconciles. Off: this process reconciles alone (one replica only).
    leader_election: bool = False
    # Namespace and name of that Lease; the chart passes the release namespace.
    leader_election_namespace: str = ""
    leader_election_lease: str = "modelrollout-operator"
    # This replica's name in the Lease (the chart passes the pod name); a random suffix per
    # process is always added, so a restarted process never mistakes the old one's Lease for its own.
    leader_election_identity: str = ""
    # Seconds: a standby takes an unrenewed Lease after lease duration; a leader that could not
    # renew for renew deadline stops; both look every retry period (retry < renew < duration).
    leader_election_lease_duration: float = 15.0
    leader_election_renew_deadline: float = 10.0
    leader_election_retry_period: float = 2.0
    # Webhook notifications of decisions (docs/operator.md#notifications): a JSON or YAML file with
    # `receivers` and `defaultReceivers` (the chart renders it from its values); empty = none.
    notifications_file: str = ""
    # Notifications waiting for an attempt or a retry, over all receivers; beyond, the oldest is dropped.
    notification_queue_size: int = 1000
    # Threads sending them; each attempt holds one for at most its receiver's timeoutSeconds.
    notification_workers: int = 2
    # Attempts per notification (5xx, 408, 429, timeouts and connection errors are retried).
    notification_max_attempts: int = 5
    # What notifications_file holds, read and checked at startup (not a flag of its own).
    notifications: NotificationConfig = NotificationConfig()

    def pod_policy(self) -> PodPolicy:
        """The domain's view of the pod-bound settings: images, what specs may set, and whether
        rollouts with the built-in router get NetworkPolicies (decided there, like the images)."""
        return PodPolicy(
            server_image=self.model_server_image,
            router_image=self.router_image,
            allowed_registries=self.allowed_image_registries,
            allow_env_value_from=self.allow_env_value_from,
            allowed_args=self.model_server_allowed_args,
            network_policies=self.network_policies,
        )

    def pod_settings(self) -> PodSettings:
        """What the manifests need for every pod, PDB and NetworkPolicy the operator creates."""
        return PodSettings(
            run_as_user=self.pod_run_as_user,
            router_cpu_request=self.router_cpu_request,
            router_memory_request=self.router_memory_request,
            router_cpu_limit=self.router_cpu_limit,
            router_memory_limit=self.router_memory_limit,
            router_cluster_role=self.router_cluster_role,
            server_cpu_request=self.model_server_cpu_request,
            server_memory_request=self.model_server_memory_request,
            server_cpu_limit=self.model_server_cpu_limit,
            server_memory_limit=self.model_server_memory_limit,
            prometheus_namespace_labels=compute_match_labels(self.prometheus_namespace_selector),
            prometheus_pod_labels=compute_match_labels(self.prometheus_pod_selector),
        )


@dataclass(frozen=True)
class _Option:
    name: str  # attribute on Settings; flag is --name-with-dashes
    help: str
    parse: Callable[[str], object]
    check: Callable[[object], str | None]  # returns an "expected ..." message when invalid

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _is_host(value: object) -> str | None:
    text = str(value)
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", text):
        return None
    return "an IP address or host name (e.g. 0.0.0.0, 127.0.0.1, $(POD_IP))"


def _in_range(lo: float, hi: float, kind: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if lo <= value <= hi else f"{kind} between {lo:g} and {hi:g}"  # type: ignore[operator]

    return check


def _is_url(value: object) -> str | None:
    if value == "":
        return None
    parsed = urlparse(str(value))
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return None
    return "an http(s):// URL such as http://prometheus.monitoring:9090, or empty"


def _non_empty(value: object) -> str | None:
    return None if str(value).strip() else "a non-empty image reference"


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _quantity(optional: bool) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if (optional and value == "") or _QUANTITY.match(str(value)):
            return None
        return "a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi" + (", or empty" if optional else "")

    return check


def compute_match_labels(selector: str) -> dict[str, str]:
    """`key=value,...` -> matchLabels; ValueError names the first bad part."""
    labels: dict[str, str] = {}
    for part in _names(selector):
        key, sep, value = part.partition("=")
        if not sep or not _LABEL_KEY.match(key.strip()) or not _LABEL_VALUE.match(value.strip()):
            raise ValueError(part)
        labels[key.strip()] = value.strip()
    return labels


def _selector(value: object) -> str | None:
    try:
        compute_match_labels(str(value))
        return None
    except ValueError as bad:
        return f"a label selector key=value[,key=value] (bad part: {bad})"


def _parsed_names(value: object) -> tuple[str, ...]:
    """The value `_names` parsed for a comma-separated option; anything else is a wiring bug in OPTIONS."""
    if not isinstance(value, tuple) or not all(isinstance(n, str) for n in value):
        raise TypeError(f"a comma-separated option's check got {value!r}; its parser must be _names")
    return value


def _image_prefixes(value: object) -> str | None:
    bad = [p for p in _parsed_names(value) if not re.fullmatch(r"[a-z0-9][a-z0-9._:/-]*", p)]
    return (
        f"comma-separated image prefixes such as registry.example.com/ml (invalid: {', '.join(bad)})" if bad else None
    )


def _flag_names(value: object) -> str | None:
    bad = [n for n in _parsed_names(value) if not re.fullmatch(r"[a-z][a-z0-9-]*", n)]
    return f"comma-separated flag names without -- such as max-batch (invalid: {', '.join(bad)})" if bad else None


def _dns_subdomain(value: object) -> str | None:
    ok = re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", str(value))
    return None if ok else "a ClusterRole name (lowercase letters, digits, '-', '.')"


def _dns_labels(value: object) -> str | None:
    bad = [n for n in _parsed_names(value) if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", n)]
    return f"comma-separated namespace names (invalid: {', '.join(bad)})" if bad else None


OPTIONS: tuple[_Option, ...] = (
    _Option("host", "bind address of the health and metrics server", str, _is_host),
    _Option("port", "port of the health and metrics server", int, _in_range(1, 65535, "an integer")),
    _Option("namespaces", "comma-separated namespaces to watch (empty: all)", _names, _dns_labels),
    _Option(
        "tick_interval",
        "seconds between reconcile ticks per rollout",
        float,
        _in_range(0.1, 300, "a number of seconds"),
    ),
    _Option("prometheus_url", "default Prometheus URL for rollouts that name none", str, _is_url),
    _Option(
        "prometheus_timeout",
        "seconds before a Prometheus query counts as an error",
        float,
        _in_range(0.1, 300, "a number of seconds"),
    ),
    _Option(
        "kube_timeout",
        "total seconds per Kubernetes API call before the tick fails and is retried",
        float,
        _in_range(1, 300, "a number of seconds"),
    ),
    _Option("router_image", "image of the built-in traffic router", str, _non_empty),
    _Option(
        "router_endpoints_source",
        "where the router finds backends: endpointslices|pods",
        str.lower,
        lambda v: None if v in ("endpointslices", "pods") else "endpointslices or pods",
    ),
    _Option("model_server_image", "model-server image when spec.server.image is empty", str, _non_empty),
    _Option(
        "allowed_image_registries",
        "comma-separated image prefixes pod images must start with (empty: any)",
        _names,
        _image_prefixes,
    ),
    _Option(
        "allow_env_value_from",
        "let spec.server.env use valueFrom (secrets, config maps): true|false",
        _bool,
        lambda _: None,
    ),
    _Option(
        "model_server_allowed_args", "comma-separated model-server flags spec.server.args may set", _names, _flag_names
    ),
    _Option(
        "pod_run_as_user",
        "UID/GID of router and model-server containers",
        int,
        _in_range(1, 2**31 - 1, "a non-root UID"),
    ),
    _Option("router_cpu_request", "CPU request of each router container", str, _quantity(False)),
    _Option("router_memory_request", "memory request of each router container", str, _quantity(False)),
    _Option("router_cpu_limit", "CPU limit of each router container (empty: none)", str, _quantity(True)),
    _Option("router_memory_limit", "memory limit of each router container (empty: none)", str, _quantity(True)),
    _Option("router_cluster_role", "ClusterRole each router's RoleBinding refers to", str, _dns_subdomain),
    _Option(
        "model_server_cpu_request", "CPU request of model servers whose spec sets no resources", str, _quantity(False)
    ),
    _Option(
        "model_server_memory_request",
        "memory request of model servers whose spec sets no resources",
        str,
        _quantity(False),
    ),
    _Option(
        "model_server_cpu_limit",
        "CPU limit of model servers whose spec sets no resources (empty: none)",
        str,
        _quantity(True),
    ),
    _Option(
        "model_server_memory_limit",
        "memory limit of model servers whose spec sets no resources (empty: none)",
        str,
        _quantity(True),
    ),
    _Option(
        "network_policies",
        "create a NetworkPolicy per rollout with the built-in router: true|false",
        _bool,
        lambda _: None,
    ),
    _Option(
        "prometheus_namespace_selector",
        "namespace labels of Prometheus for NetworkPolicies (key=value,...; empty: every namespace)",
        str,
        _selector,
    ),
    _Option("prometheus_pod_selector", "pod labels of Prometheus for NetworkPolicies (key=value,...)", str, _selector),
    _Option("max_workers", "threads running reconciles concurrently", int, _in_range(1, 512, "an integer")),
    _Option("leader_election", "compete for a Lease; only its holder reconciles: true|false", _bool, lambda _: None),
    _Option(
        "leader_election_namespace",
        "namespace of the leader election Lease",
        str,
        lambda v: None if not v else _dns_labels((v,)),
    ),
    _Option("leader_election_lease", "name of the leader election Lease", str, _dns_subdomain),
    _Option("leader_election_identity", "this replica's name in the Lease (empty: the host name)", str, lambda _: None),
    _Option(
        "leader_election_lease_duration",
        "seconds an unrenewed Lease stays its holder's",
        float,
        _in_range(1, 600, "a number of seconds"),
    ),
    _Option(
        "leader_election_renew_deadline",
        "seconds a leader keeps leading without a renewal",
        float,
        _in_range(0.5, 600, "a number of seconds"),
    ),
    _Option(
        "leader_election_retry_period",
        "seconds between Lease reads and renewals",
        float,
        _in_range(0.1, 300, "a number of seconds"),
    ),
    _Option("notifications_file", "JSON/YAML file of webhook receivers (empty: none)", str, lambda _: None),
    _Option(
        "notification_queue_size",
        "notifications queued at most; the oldest is dropped beyond",
        int,
        _in_range(1, 100_000, "an integer"),
    ),
    _Option("notification_workers", "threads sending notifications", int, _in_range(1, 16, "an integer")),
    _Option("notification_max_attempts", "attempts per notification", int, _in_range(1, 20, "an integer")),
    _Option(
        "log_level",
        "one of " + "|".join(LOG_LEVELS),
        str.lower,
        lambda v: None if v in LOG_LEVELS else "one of " + ", ".join(LOG_LEVELS),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The `modelrollout-operator` argument parser; values stay strings until validation."""
    parser = argparse.ArgumentParser(
        prog="modelrollout-operator",
        description="Kubernetes operator for ModelRollout resources. Every flag also reads "
        f"an environment variable {ENV_PREFIX}<FLAG_IN_UPPER_SNAKE_CASE>.",
    )
    for opt in OPTIONS:
        default = getattr(Settings(), opt.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(
            opt.flag, dest=opt.name, default=None, help=f"{opt.help} (env {opt.env}, default {shown!r})"
        )
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags override env vars override defaults; raises SettingsError listing every bad value."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    problems: list[str] = []
    for opt in OPTIONS:
        raw = getattr(args, opt.name)
        source = opt.flag
        if raw is None and opt.env in environ:
            raw, source = environ[opt.env], opt.env
        if raw is None:
            continue
        try:
            value = opt.parse(raw)
            problem = opt.check(value)
        except ValueError:
            value, problem = None, _expected(opt)
        if problem:
            problems.append(f"{source} ({opt.flag} / {opt.env}): expected {problem}, got {raw!r}")
            continue
        values[opt.name] = value
    settings = Settings(**values) if not problems else None  # type: ignore[arg-type]
    if settings is not None:
        policy = settings.pod_policy()
        for name, image in (
            ("--model-server-image", settings.model_server_image),
            ("--router-image", settings.router_image),
        ):
            if not policy.is_allowed_image(image):
                problems.append(
                    f"{name}: {image!r} is not under --allowed-image-registries "
                    f"({', '.join(settings.allowed_image_registries)}); every rollout "
                    "without its own image would be Invalid"
                )
    if settings is not None:
        problems.extend(compute_request_limit_problems(settings))
        problems.extend(compute_election_problems(settings))
        if settings.notifications_file:
            try:
                settings = replace(settings, notifications=load_notifications(settings.notifications_file))
            except SettingsError as err:
                problems.append(str(err))
    if problems or settings is None:
        raise SettingsError("invalid operator settings:\n  " + "\n  ".join(problems))
    return settings


def compute_request_limit_problems(settings: Settings) -> list[str]:
    """A request above its limit: the API server would refuse every Deployment built from these
    defaults, and each rollout would end Invalid blaming a spec field its author never set."""
    problems = []
    for prefix in ("router", "model_server"):
        for resource in ("cpu", "memory"):
            request = getattr(settings, f"{prefix}_{resource}_request")
            limit = getattr(settings, f"{prefix}_{resource}_limit")
            if limit and parse_quantity(request) > parse_quantity(limit):
                flag = "--" + f"{prefix}_{resource}".replace("_", "-")
                problems.append(
                    f"{flag}-request ({request}) is above {flag}-limit ({limit}): a request must not exceed its limit"
                )
    return problems


def compute_election_problems(settings: Settings) -> list[str]:
    """Timings that would let a standby start before the old leader stops, or no Lease namespace."""
    if not settings.leader_election:
        return []
    problems = []
    if not settings.leader_election_namespace:
        problems.append(
            "--leader-election-namespace: empty; with --leader-election=true name the "
            "namespace of the Lease (the chart passes the release namespace)"
        )
    retry, renew = settings.leader_election_retry_period, settings.leader_election_renew_deadline
    duration = settings.leader_election_lease_duration
    if not retry < renew < duration:
        problems.append(
            f"--leader-election-retry-period ({retry:g}) < --leader-election-renew-deadline "
            f"({renew:g}) < --leader-election-lease-duration ({duration:g}) must hold: a "
            "leader must stop before a standby may take its Lease"
        )
    return problems


MAX_NOTIFICATIONS_FILE = 1 << 20


def load_notifications(path: str) -> NotificationConfig:
    """Reads --notifications-file; each receiver's `headersDir` (a mounted Secret: one file per
    header, named after it) becomes its headers. SettingsError names the field that is wrong."""
    where = f"--notifications-file ({path})"
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_NOTIFICATIONS_FILE + 1)
        if len(text) > MAX_NOTIFICATIONS_FILE:
            raise SettingsError(f"{where}: larger than {MAX_NOTIFICATIONS_FILE} bytes")
        doc = yaml.safe_load(text) or {}
    except OSError as err:
        raise SettingsError(f"{where}: cannot read it: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SettingsError(f"{where}: not valid JSON or YAML: {str(err)[:200]}") from None
    try:
        if isinstance(doc, dict) and isinstance(doc.get("receivers"), list):
            doc = {**doc, "receivers": [_with_headers(r, f"receivers[{i}]") for i, r in enumerate(doc["receivers"])]}
        return parse_notification_config(doc)
    except NotificationError as err:
        raise SettingsError(f"{where}: {err}") from None


def _with_headers(receiver: object, path: str) -> object:
    """The receiver with `headersDir` read into `headers` (file name -> content, one line)."""
    if not isinstance(receiver, dict) or "headersDir" not in receiver:
        return receiver
    rest = {k: v for k, v in receiver.items() if k != "headersDir"}
    directory = Path(str(receiver["headersDir"]))
    headers = dict(rest.get("headers") or {})
    try:
        # A mounted Secret also holds ..data and timestamped directories: only its regular files count.
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            headers[entry.name] = entry.read_bytes()[:8192].decode("utf-8", "replace").rstrip("\r\n")
    except OSError as err:
        raise NotificationError(f"{path}.headersDir", f"cannot read {directory}: {err.strerror or err}") from None
    return {**rest, "headers": headers}


def _expected(opt: _Option) -> str:
    """What a parse failure should have looked like, derived from the option's parser."""
    kinds = {int: "an integer", float: "a number", _bool: "true or false"}
    return kinds.get(opt.parse, "a valid value")
