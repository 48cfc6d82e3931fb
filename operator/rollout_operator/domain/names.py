"""The names of the objects a ModelRollout owns, and the rules that keep them valid and distinct.

One place for both: the builders in adapters/manifests.py call these, parse_spec checks them.
"""

from __future__ import annotations

import re

from .spec import SpecError

# A Service name must be a DNS-1035 label: lowercase alphanumerics and '-', starting with a
# letter, at most 63 characters. The router's Service is named after the rollout.
DNS_LABEL_MAX = 63
ROLLOUT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
VERSION_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PREVIEW_SUFFIX = "preview"
ROUTER_ACCOUNT_SUFFIX = "router"
# `<rollout>-preview` is the blue-green preview Service: a version of that name would share it,
# and users of that version would be sent to the candidate.
RESERVED_VERSIONS = frozenset({PREVIEW_SUFFIX})
# `<rollout>-preview` must fit a DNS label too.
ROLLOUT_NAME_MAX = DNS_LABEL_MAX - len(PREVIEW_SUFFIX) - 1
_ROLLOUT_RE = re.compile(ROLLOUT_NAME_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)


def compute_router_name(rollout: str) -> str:
    """The router's Deployment and Service: the model's front door."""
    return rollout


def compute_version_name(rollout: str, version: str) -> str:
    """`<rollout>-<version>`: the Deployment and the Service of one model version."""
    return f"{rollout}-{version}"


def compute_preview_name(rollout: str) -> str:
    """The blue-green preview Service (test traffic to the candidate)."""
    return f"{rollout}-{PREVIEW_SUFFIX}"


def compute_router_account_name(rollout: str) -> str:
    """The router's ServiceAccount, Role and RoleBinding."""
    return f"{rollout}-{ROUTER_ACCOUNT_SUFFIX}"


def check_rollout_name(name: str) -> None:
    """metadata.name names the router's Service, so it must be a DNS-1035 label with room
    for the `-preview` suffix."""
    if not isinstance(name, str) or not _ROLLOUT_RE.match(name) or len(name) > ROLLOUT_NAME_MAX:
        raise SpecError(
            "metadata.name",
            f"must be a DNS-1035 label of at most {ROLLOUT_NAME_MAX} "
            "characters (lowercase letters, digits and '-', starting with a letter; it "
            f"names the router's Service and <name>-{PREVIEW_SUFFIX}), got {name!r}",
        )


def check_namespace(namespace: str) -> None:
    """The API server only stores namespaces that are DNS-1123 labels; anything else (e.g. an
    empty one from a hand-built body) would leave every query without its namespace matcher."""
    if not isinstance(namespace, str) or not _VERSION_RE.match(namespace) or len(namespace) > DNS_LABEL_MAX:
        raise SpecError("metadata.namespace", f"must be a DNS-1123 label, got {namespace!r}")


def check_version_name(rollout: str, version: str, field: str) -> None:
    """`<rollout>-<version>` must be a DNS label and distinct from every other name we derive."""
    budget = DNS_LABEL_MAX - len(rollout) - 1
    if not _VERSION_RE.match(version) or len(version) > budget:
        raise SpecError(
            field,
            f"must be lowercase letters, digits and '-' "
            f"(a DNS label part, at most {max(budget, 0)} characters here), got {version!r}",
        )
    if version in RESERVED_VERSIONS:
        raise SpecError(
            field,
            f"must not be {version!r}: {compute_preview_name(rollout)} is the "
            "blue-green preview Service; pick another version name",
        )
