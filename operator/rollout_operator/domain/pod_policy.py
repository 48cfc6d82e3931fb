"""What a rollout author may put into the pods the operator creates, and the images used when a
spec names none: the one place images are resolved and pod-bound spec fields are vetted.

A ModelRollout author can often create ModelRollouts but not Pods or read Secrets. Everything
from spec.server (and the router image) lands in pods the operator creates under its own
identity, so the fields are restricted to what a model server needs: see docs/operator.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .spec import SpecError

# The operator's built-in images (settings.py takes its --*-image defaults from here).
DEFAULT_SERVER_IMAGE = "modelrollout/model-server:dev"
DEFAULT_ROUTER_IMAGE = "modelrollout/router:dev"

# Model-server flags a spec may pass in spec.server.args: tuning of the speech server's own
# limits and threads. --host/--port/--model-* are the operator's (it sets them per version).
DEFAULT_ALLOWED_ARGS = (
    "max-clip-seconds",
    "max-request-bytes",
    "max-batch",
    "inference-threads",
    "ort-threads",
    "log-level",
    "slice-header",  # issue 15: the request slice header and its allow-list (bounded label values)
    "slices",
)
OPERATOR_ARGS = ("host", "port", "model-name", "model-version", "model-uri")

# Env names that change which code runs or what the operator set, not how a model is served:
# the dynamic loader (LD_PRELOAD), the interpreter (PYTHONPATH, PYTHONSTARTUP), PATH, the
# kubelet's service-discovery variables, the operator's own POD_IP and the server's
# SPEECH_SERVER_HOST/PORT/MODEL_* that its flags set.
RESERVED_ENV_PREFIXES = (
    "LD_",
    "PYTHON",
    "PATH",
    "KUBERNETES_",
    "POD_",
    "MODELROLLOUT_",
    "SPEECH_SERVER_HOST",
    "SPEECH_SERVER_PORT",
    "SPEECH_SERVER_MODEL_",
)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ARG_PATTERN = r"^--([a-z][a-z0-9-]*)=(.*)$"  # one argument each: no "--flag value" pairs
IMAGE_PATTERN = r"^[a-z0-9][a-z0-9._/:@-]*$"
# Called with fullmatch: the CRD's patterns (same text) accept no newline anywhere.
_ENV_NAME_RE, _ARG_RE, _IMAGE_RE = (re.compile(p) for p in (ENV_NAME_PATTERN, ARG_PATTERN, IMAGE_PATTERN))


@dataclass(frozen=True)
class PodPolicy:
    """The operator's flags behind pod-bound spec fields (Settings.pod_policy() builds it)."""

    server_image: str = DEFAULT_SERVER_IMAGE  # when spec.server.image is empty
    router_image: str = DEFAULT_ROUTER_IMAGE  # when spec.trafficRouting.router.image is empty
    # Image prefixes (registry host, optionally with a path) images must start with; empty = any.
    allowed_registries: tuple[str, ...] = ()
    allow_env_value_from: bool = False  # env valueFrom (secretKeyRef, configMapKeyRef, ...)
    allowed_args: tuple[str, ...] = DEFAULT_ALLOWED_ARGS  # flag names without the leading --
    network_policies: bool = True  # NetworkPolicies for rollouts with the built-in router

    def is_allowed_image(self, image: str) -> bool:
        """True when no allow-list is set or `image` lies under one of its prefixes."""
        return not self.allowed_registries or any(
            image.startswith(prefix.rstrip("/") + "/") for prefix in self.allowed_registries
        )


def resolve_image(given: str | None, default: str, policy: PodPolicy, path: str) -> str:
    """The spec's image, or the operator's default when the spec leaves it empty; vetted."""
    image = given or default
    if given and not _IMAGE_RE.fullmatch(given):
        raise SpecError(
            path, f"must be an image reference (lowercase registry/name[:tag][@digest], no spaces), got {given!r}"
        )
    if not policy.is_allowed_image(image):
        raise SpecError(
            path,
            f"image {image!r} is not under an allowed registry "
            f"({', '.join(policy.allowed_registries)}; operator flag "
            "--allowed-image-registries)",
        )
    return image


def check_env(env: list[Any], policy: PodPolicy, path: str) -> tuple[dict[str, Any], ...]:
    """Literal name/value pairs; valueFrom only when the operator allows it."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(env):
        here = f"{path}[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise SpecError(here, "must be an object with a string name")
        name = item["name"]
        if not _ENV_NAME_RE.fullmatch(name):
            raise SpecError(f"{here}.name", f"must be letters, digits and '_' not starting with a digit, got {name!r}")
        reserved = [p for p in RESERVED_ENV_PREFIXES if name.upper().startswith(p)]
        if reserved:
            raise SpecError(
                f"{here}.name",
                f"{name!r} starts with the reserved prefix {reserved[0]!r} "
                f"(reserved: {', '.join(RESERVED_ENV_PREFIXES)}); use another name",
            )
        unknown = sorted(set(item) - {"name", "value", "valueFrom"})
        if unknown:
            raise SpecError(here, f"may only set name, value and valueFrom, not {', '.join(unknown)}")
        if "valueFrom" in item and not policy.allow_env_value_from:
            raise SpecError(
                f"{here}.valueFrom",
                "is not allowed: give a literal value (secrets and "
                "config maps reach pods only when the operator runs with "
                "--allow-env-value-from)",
            )
        if "value" in item and not isinstance(item["value"], str):
            raise SpecError(f"{here}.value", f"must be a string, got {item['value']!r}")
        out.append(dict(item))
    return tuple(out)


def check_args(args: list[Any], policy: PodPolicy, path: str) -> tuple[str, ...]:
    """`--flag=value` arguments whose flag is on the operator's allow-list."""
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            raise SpecError(f"{path}[{i}]", f"must be a string, got {arg!r}")
    allowed = ", ".join(f"--{a}" for a in policy.allowed_args) or "none"
    for i, arg in enumerate(args):
        match = _ARG_RE.fullmatch(arg)
        if not match:
            raise SpecError(f"{path}[{i}]", f"must be --flag=value (one argument each), got {arg!r}")
        flag = match.group(1)
        if flag in OPERATOR_ARGS:
            raise SpecError(
                f"{path}[{i}]", f"--{flag} is set by the operator for every version; allowed flags: {allowed}"
            )
        if flag not in policy.allowed_args:
            raise SpecError(
                f"{path}[{i}]",
                f"--{flag} is not an allowed model-server flag; allowed: "
                f"{allowed} (operator flag --model-server-allowed-args)",
            )
    return tuple(args)
