"""The operator's settings: one frozen object built from kebab-case flags and MODELROLLOUT_* env vars.

Every setting has a documented default; `load_settings` validates all of them at startup and
raises `SettingsError` with one actionable line per bad value (flag, env var, what was expected).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence
from urllib.parse import urlparse

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
    # Image of the built-in traffic router Deployment.
    router_image: str = "modelrollout/router:dev"
    # Where the built-in router finds backends: `endpointslices` (default) or `pods` (ready pods by
    # label; needed where EndpointSlices cannot hold pod IPs, e.g. the loopback testbed).
    router_endpoints_source: str = "endpointslices"
    # Model-server image used when spec.server.image is empty.
    model_server_image: str = "modelrollout/model-server:dev"
    # Threads kopf runs our (synchronous) reconciles in; bounds concurrent API/Prometheus calls.
    max_workers: int = 16
    # Log level of the operator process.
    log_level: str = "info"
    # Field manager name used for server-side apply and status patches (shows in managedFields).
    field_manager: str = "modelrollout-operator"


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


def _dns_labels(value: object) -> str | None:
    bad = [n for n in value if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", n)]  # type: ignore[union-attr]
    return f"comma-separated namespace names (invalid: {', '.join(bad)})" if bad else None


OPTIONS: tuple[_Option, ...] = (
    _Option("host", "bind address of the health and metrics server", str, _is_host),
    _Option("port", "port of the health and metrics server", int, _in_range(1, 65535, "an integer")),
    _Option("namespaces", "comma-separated namespaces to watch (empty: all)", _names, _dns_labels),
    _Option("tick_interval", "seconds between reconcile ticks per rollout", float,
            _in_range(0.1, 300, "a number of seconds")),
    _Option("prometheus_url", "default Prometheus URL for rollouts that name none", str, _is_url),
    _Option("prometheus_timeout", "seconds before a Prometheus query counts as an error", float,
            _in_range(0.1, 300, "a number of seconds")),
    _Option("router_image", "image of the built-in traffic router", str, _non_empty),
    _Option("router_endpoints_source", "where the router finds backends: endpointslices|pods", str.lower,
            lambda v: None if v in ("endpointslices", "pods") else "endpointslices or pods"),
    _Option("model_server_image", "model-server image when spec.server.image is empty", str, _non_empty),
    _Option("max_workers", "threads running reconciles concurrently", int, _in_range(1, 512, "an integer")),
    _Option("log_level", "one of " + "|".join(LOG_LEVELS), str.lower,
            lambda v: None if v in LOG_LEVELS else "one of " + ", ".join(LOG_LEVELS)),
)


def build_parser() -> argparse.ArgumentParser:
    """The `modelrollout-operator` argument parser; values stay strings until validation."""
    parser = argparse.ArgumentParser(
        prog="modelrollout-operator",
        description="Kubernetes operator for ModelRollout resources. Every flag also reads "
                    f"an environment variable {ENV_PREFIX}<FLAG_IN_UPPER_SNAKE_CASE>.")
    for opt in OPTIONS:
        default = getattr(Settings(), opt.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(opt.flag, dest=opt.name, default=None,
                            help=f"{opt.help} (env {opt.env}, default {shown!r})")
    return parser


def load_settings(argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
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
    if problems:
        raise SettingsError("invalid operator settings:\n  " + "\n  ".join(problems))
    return Settings(**values)  # type: ignore[arg-type]


def _expected(opt: _Option) -> str:
    """What a parse failure should have looked like, derived from the option's parser."""
    kinds = {int: "an integer", float: "a number"}
    return kinds.get(opt.parse, "a valid value")  # type: ignore[call-overload]
