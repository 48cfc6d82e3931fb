"""Pure translation of a pod's first container into a local process: argv and environment.

Follows kubelet semantics where it matters: `$(VAR)` expansion (with `$$` escaping) in env
values and args, downward-API fieldRefs, ConfigMap/Secret key references and envFrom.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

# (kind, namespace, name) -> object dict or None if absent; injected so this module stays pure.
Lookup = Callable[[str, str, str], "dict | None"]


class ContainerConfigError(ValueError):
    """The container cannot start as specified (shown as CreateContainerConfigError)."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known vars substituted, `$$` -> `$`, unknown left as is."""

    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR.sub(repl, text)


def _field_ref(pod: dict, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return simple[path] or ""
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    raise ContainerConfigError(f"env fieldRef.fieldPath {path!r} is not supported by the testbed pod runner")


def _key_ref(ref: dict, kind: str, ns: str, lookup: Lookup) -> str | None:
    obj = lookup(kind, ns, ref.get("name", ""))
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f"{kind} {ns}/{ref.get('name')!r} not found")
    if kind == "Secret":
        raw = (obj.get("data") or {}).get(ref["key"])
        value = None if raw is None else base64.b64decode(raw).decode()
    else:
        value = (obj.get("data") or {}).get(ref["key"])
    if value is None and not optional:
        raise ContainerConfigError(f"{kind} {ns}/{ref.get('name')} has no key {ref.get('key')!r}")
    return value


def _env_from(container: dict, ns: str, lookup: Lookup) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = src.get(key)
            if ref is None:
                continue
            obj = lookup(kind, ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f"envFrom {kind} {ns}/{ref.get('name')!r} not found")
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode() if kind == "Secret" else v
    return env


def compute_container_env(pod: dict, container: dict, lookup: Lookup) -> dict[str, str]:
    """The container's environment as the kubelet would build it (envFrom, then env in order)."""
    ns = pod["metadata"]["namespace"]
    env = _env_from(container, ns, lookup)
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand_vars(item.get("value", ""), env)
            continue
        src = item["valueFrom"]
        if "fieldRef" in src:
            env[name] = _field_ref(pod, src["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in src:
            value = _key_ref(src["configMapKeyRef"], "ConfigMap", ns, lookup)
            if value is not None:
                env[name] = value
        elif "secretKeyRef" in src:
            value = _key_ref(src["secretKeyRef"], "Secret", ns, lookup)
            if value is not None:
                env[name] = value
        else:
            raise ContainerConfigError(
                f"env {name}: valueFrom {sorted(src)} is not supported by the testbed pod runner "
                "(supported: fieldRef, configMapKeyRef, secretKeyRef)"
            )
    return env


def compute_argv(entrypoint: list[str], container: dict, env: dict[str, str]) -> list[str]:
    """Image entrypoint (or the container's `command`) followed by `args`, both var-expanded."""
    command = container.get("command")
    head = [expand_vars(c, env) for c in command] if command else list(entrypoint)
    return head + [expand_vars(a, env) for a in container.get("args") or []]
