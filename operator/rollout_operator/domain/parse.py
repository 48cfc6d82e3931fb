"""parse_spec: a ModelRollout's .spec (a plain mapping) -> RolloutSpec, or a SpecError naming
the field, what was wrong and what is expected. Mirrors every rule of the CRD schema, so the
operator reports what `kubectl apply` would have rejected; the typed field readers are at the end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, overload

from .durations import format_duration, parse_duration
from .names import check_namespace, check_rollout_name, check_version_name
from .notifications import NotificationError, NotificationRule, parse_rules
from .pod_policy import PodPolicy, check_args, check_env, resolve_image
from .sequential_gates import SEQUENTIAL_TEMPLATES
from .slices import SLICE_SUPPORT, check_groups_by
from .spec import (
    MAX_SLICES,
    SLICE_LABELS,
    SLICE_NAME_PATTERN,
    USER_STEP_KINDS,
    Analysis,
    AnalysisMode,
    AnalysisSpec,
    BlueGreenStrategy,
    CanaryStrategy,
    GatewayAPISpec,
    MetricSpec,
    ModelSpec,
    MonitoringSpec,
    OnNoData,
    Pause,
    Promote,
    Requests,
    RolloutSpec,
    RouterSpec,
    ServerSpec,
    SetMirror,
    SetWeight,
    ShadowStrategy,
    ShadowThen,
    SliceSpec,
    SpecError,
    Step,
    Strategy,
    TrafficRoutingSpec,
    expand_blue_green,
    expand_canary,
    expand_shadow,
)
from .templates import LATENCY_BOUNDS, PAIRWISE_TEMPLATES, TEMPLATES, TemplateError, check_query

# The model name is a KServe model name, a Prometheus label value and part of a URL path.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
# An HTTP header name is an RFC 7230 token.
HEADER_NAME_PATTERN = r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"
_HEADER_NAME_RE = re.compile(HEADER_NAME_PATTERN)
# http(s)://host[:port][/path], no credentials, query or fragment (they would be sent to, or
# hide, another server).
PROMETHEUS_ADDRESS_PATTERN = (
    r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?"
    r"(/[-A-Za-z0-9._~/]*)?$"
)
_PROMETHEUS_ADDRESS_RE = re.compile(PROMETHEUS_ADDRESS_PATTERN)
_SLICE_NAME_RE = re.compile(SLICE_NAME_PATTERN)
# A DNS-1123 subdomain: what Kubernetes allows as an object name.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_OBJECT_NAME_RE = re.compile(OBJECT_NAME_PATTERN)
# The operator ticks about once a second: checks cannot usefully run more often, and a
# rate() over less than a second holds at most one scrape.
MIN_INTERVAL = timedelta(seconds=1)
MIN_WINDOW = timedelta(seconds=1)
S = "spec"
MAX_MONITORING_GATES = 20  # as spec.analysis.metrics: bounds the queries of one round


def parse_spec(spec: Mapping[str, Any], *, name: str, namespace: str, policy: PodPolicy = PodPolicy()) -> RolloutSpec:
    """Validate and type a ModelRollout spec; raises SpecError on the first problem found.

    `policy` is the operator's say over pod-bound fields: default images, allowed registries,
    env and args (pod_policy.py); the parsed spec carries the resolved images."""
    if not isinstance(spec, Mapping):
        raise SpecError(S, "must be an object")
    check_rollout_name(name)
    check_namespace(namespace)
    model = _parse_model(spec, name)
    strategy, steps = _parse_strategy(spec)
    analysis = _parse_analysis(spec)
    _check_analysis_has_metrics(spec, analysis)
    _check_sequential_steps(spec, analysis, steps)
    return RolloutSpec(
        name=name,
        namespace=namespace,
        model=model,
        strategy=strategy,
        steps=steps,
        server=_parse_server(spec, policy),
        analysis=analysis,
        traffic_routing=_parse_traffic_routing(spec, policy),
        progress_deadline=read_duration(
            spec, "progressDeadline", S, positive=True, default=RolloutSpec.progress_deadline
        ),
        paused=read_bool(spec, "paused", S, default=False),
        requests=_parse_requests(spec),
        history_limit=read_int(spec, "historyLimit", S, default=10, lo=1, hi=100),
        notifications=_parse_notifications(spec),
        monitoring=_parse_monitoring(spec),
    )


def _parse_notifications(spec: Mapping[str, Any]) -> tuple[NotificationRule, ...]:
    """Receiver names only; whether the operator defines them is its business (a warning event)."""
    try:
        return parse_rules(spec.get("notifications"), f"{S}.notifications")
    except NotificationError as err:
        raise SpecError(err.field, err.message) from None


def _parse_model(spec: Mapping[str, Any], rollout: str) -> ModelSpec:
    d = read_map(spec, "model", S, required=True)
    assert d is not None
    path = f"{S}.model"
    version = read_str(d, "version", path, required=True)
    assert version is not None
    check_version_name(rollout, version, f"{path}.version")
    model_name = read_str(d, "name", path, required=True) or ""
    if not _MODEL_NAME_RE.match(model_name):
        raise SpecError(
            f"{path}.name",
            "must be letters, digits, '-', '_' and '.', starting and "
            f"ending with a letter or digit, got {show(model_name)}",
        )
    return ModelSpec(name=model_name, version=version, uri=read_str(d, "uri", path, default="", max_len=2048) or "")


def _parse_server(spec: Mapping[str, Any], policy: PodPolicy) -> ServerSpec:
    d = read_map(spec, "server", S) or {}
    path = f"{S}.server"
    resources = read_map(d, "resources", path) or {}
    return ServerSpec(
        image=resolve_image(read_str(d, "image", path, max_len=512), policy.server_image, policy, f"{path}.image"),
        replicas=read_int(d, "replicas", path, default=1, lo=1, hi=100) or 1,
        resources=dict(resources),
        env=check_env(read_list(d, "env", path), policy, f"{path}.env"),
        args=check_args(read_list(d, "args", path), policy, f"{path}.args"),
    )


def _parse_strategy(spec: Mapping[str, Any]) -> tuple[Strategy, tuple[Step, ...]]:
    d = read_map(spec, "strategy", S, required=True)
    assert d is not None
    path = f"{S}.strategy"
    kind = exactly_one(d, ("canary", "blueGreen", "shadow"), path, "strategy")
    body = read_map(d, kind, path) or {}
    here = f"{path}.{kind}"
    if kind == "canary":
        steps = _parse_steps(body, here, required=True)
        return CanaryStrategy(steps=steps), expand_canary(steps)
    if kind == "blueGreen":
        bg = BlueGreenStrategy(
            auto_promote=read_bool(body, "autoPromote", here, default=True),
            preview_duration=read_duration(body, "previewDuration", here),
            scale_down_delay=read_duration(body, "scaleDownDelay", here, default=BlueGreenStrategy.scale_down_delay),
            post_promotion_duration=read_duration(body, "postPromotionDuration", here),
            preview_replicas=read_int(body, "previewReplicas", here, lo=1, hi=100),
        )
        return bg, expand_blue_green(
            auto_promote=bg.auto_promote,
            preview_duration=bg.preview_duration,
            post_promotion_duration=bg.post_promotion_duration,
        )
    return _parse_shadow(body, here)


def _parse_shadow(body: Mapping[str, Any], here: str) -> tuple[Strategy, tuple[Step, ...]]:
    then = ShadowThen(read_enum(body, "then", here, tuple(t.value for t in ShadowThen), default="stop"))
    canary = read_map(body, "canary", here)
    if then is ShadowThen.CANARY and canary is None:
        raise SpecError(f"{here}.canary", "is required when then is canary (give its steps)")
    if then is not ShadowThen.CANARY and canary is not None:
        raise SpecError(f"{here}.canary", f"is only used when then is canary, not {then.value}")
    canary_steps = _parse_steps(canary, f"{here}.canary", required=True) if canary else ()
    shadow = ShadowStrategy(
        mirror_percent=read_int(body, "mirrorPercent", here, default=100, lo=1, hi=100) or 100,
        duration=read_duration(body, "duration", here, positive=True, default=ShadowStrategy.duration)
        or ShadowStrategy.duration,
        then=then,
        canary_steps=canary_steps,
    )
    return shadow, expand_shadow(
        mirror_percent=shadow.mirror_percent, duration=shadow.duration, then=then.value, canary_steps=canary_steps
    )


def _parse_steps(body: Mapping[str, Any], path: str, *, required: bool) -> tuple[Step, ...]:
    raw = read_list(body, "steps", path)
    if required and not raw:
        raise SpecError(f"{path}.steps", "must list at least one step")
    steps: list[Step] = []
    last_weight = 0
    for i, item in enumerate(raw):
        here = f"{path}.steps[{i}]"
        step = _parse_step(item, here)
        if isinstance(step, SetWeight):
            if step.weight < last_weight:
                raise SpecError(
                    f"{here}.setWeight",
                    f"must not decrease within a canary (previous setWeight is {last_weight}, got {step.weight})",
                )
            last_weight = step.weight
        if isinstance(step, Promote) and i != len(raw) - 1:
            raise SpecError(f"{here}.promote", "must be the last step")
        steps.append(step)
    return tuple(steps)


def _parse_step(item: Any, here: str) -> Step:
    if not isinstance(item, Mapping):
        raise SpecError(here, f"must be an object with one of {', '.join(USER_STEP_KINDS)}")
    kind = exactly_one(item, USER_STEP_KINDS, here, "step kind")
    if kind == "setWeight":
        return SetWeight(read_int(item, "setWeight", here, lo=0, hi=100) or 0)
    if kind == "promote":
        read_map(item, "promote", here)
        return Promote()
    body = read_map(item, kind, here) or {}
    inner = f"{here}.{kind}"
    if kind == "setMirror":
        return SetMirror(read_int(body, "percent", inner, lo=0, hi=100, required=True) or 0)
    if kind == "pause":
        return Pause(duration=read_duration(body, "duration", inner))
    if body.get("duration") is not None and body.get("checks") is not None:
        raise SpecError(inner, "must set at most one of duration, checks")
    return Analysis(
        duration=read_duration(body, "duration", inner, positive=True),
        checks=read_int(body, "checks", inner, lo=1, hi=1000),
    )


def _parse_analysis(spec: Mapping[str, Any]) -> AnalysisSpec | None:
    d = read_map(spec, "analysis", S)
    if d is None:
        return None
    path = f"{S}.analysis"
    prometheus = read_map(d, "prometheus", path) or {}
    mode = AnalysisMode(
        read_enum(d, "mode", path, tuple(m.value for m in AnalysisMode), default=AnalysisMode.THRESHOLD.value)
    )
    interval = read_duration(d, "interval", path, at_least=MIN_INTERVAL, default=AnalysisSpec.interval)
    metrics = [_parse_metric(m, f"{path}.metrics[{i}]") for i, m in enumerate(read_list(d, "metrics", path))]
    names = [m.name for m in metrics]
    for i, metric_name in enumerate(names):
        if metric_name in names[:i]:
            raise SpecError(f"{path}.metrics[{i}].name", f"must be unique, {metric_name!r} is used twice")
    if mode is AnalysisMode.SEQUENTIAL:
        _check_sequential_metrics(metrics, path)
    return AnalysisSpec(
        interval=interval or AnalysisSpec.interval,
        window=read_duration(d, "window", path, at_least=MIN_WINDOW, default=AnalysisSpec.window)
        or AnalysisSpec.window,
        prometheus_address=_parse_prometheus_address(prometheus, f"{path}.prometheus"),
        min_samples=read_int(d, "minSamples", path, default=50, lo=0) or 0,
        on_no_data=OnNoData(read_enum(d, "onNoData", path, tuple(o.value for o in OnNoData), default="hold")),
        failure_limit=read_int(d, "failureLimit", path, default=2, lo=1, hi=1000) or 2,
        inconclusive_limit=read_int(d, "inconclusiveLimit", path, default=10, lo=1, hi=1000) or 10,
        consecutive_error_limit=read_int(d, "consecutiveErrorLimit", path, default=4, lo=1, hi=1000) or 4,
        metrics=tuple(metrics),
        mode=mode,
        false_promotion_rate=_read_rate(d, "falsePromotionRate", path, AnalysisSpec.false_promotion_rate),
        false_rollback_rate=_read_rate(d, "falseRollbackRate", path, AnalysisSpec.false_rollback_rate),
        max_duration=read_duration(d, "maxDuration", path, at_least=MIN_INTERVAL, default=AnalysisSpec.max_duration)
        or AnalysisSpec.max_duration,
    )


def _parse_monitoring(spec: Mapping[str, Any]) -> MonitoringSpec | None:
    """spec.monitoring: gates like spec.analysis.metrics, but on the stable version alone, so
    only absolute thresholds (there is no candidate to compare with) and no template or query
    that reads the candidate."""
    d = read_map(spec, "monitoring", S)
    if d is None:
        return None
    path = f"{S}.monitoring"
    raw = read_list(d, "metrics", path)
    if not raw or len(raw) > MAX_MONITORING_GATES:
        raise SpecError(
            f"{path}.metrics",
            f"must list 1..{MAX_MONITORING_GATES} gates (monitoring with no gate would check nothing), got {len(raw)}",
        )
    metrics: list[MetricSpec] = []
    for i, item in enumerate(raw):
        here = f"{path}.metrics[{i}]"
        if isinstance(item, Mapping):
            for key in ("relativeTo", "maxIncrease", "maxDecrease"):
                if item.get(key) is not None:
                    raise SpecError(
                        f"{here}.{key}",
                        "monitoring judges the stable version alone, with no candidate to compare it "
                        "with: use an absolute threshold (min, max)",
                    )
        metric = _parse_metric(item, here)
        if metric.template in PAIRWISE_TEMPLATES:
            raise SpecError(
                f"{here}.template",
                f"{metric.template} compares a candidate with stable; monitoring has no candidate "
                "(use error-rate, unknown-rate, mean-confidence, accuracy, latency-p99, slow-requests or request-rate)",
            )
        if metric.query is not None and "{{candidate}}" in metric.query.replace(" ", ""):
            raise SpecError(
                f"{here}.query", "uses {{candidate}}, but monitoring has no candidate: use {{version}} (the stable one)"
            )
        if metric.name in (m.name for m in metrics):
            raise SpecError(f"{here}.name", f"must be unique, {metric.name!r} is used twice")
        metrics.append(metric)
    return MonitoringSpec(
        interval=read_duration(d, "interval", path, at_least=MIN_INTERVAL, default=MonitoringSpec.interval)
        or MonitoringSpec.interval,
        window=read_duration(d, "window", path, at_least=MIN_WINDOW, default=MonitoringSpec.window)
        or MonitoringSpec.window,
        min_samples=read_int(d, "minSamples", path, default=MonitoringSpec.min_samples, lo=0) or 0,
        on_no_data=OnNoData(read_enum(d, "onNoData", path, tuple(o.value for o in OnNoData), default="hold")),
        failure_limit=read_int(d, "failureLimit", path, default=MonitoringSpec.failure_limit, lo=1, hi=1000)
        or MonitoringSpec.failure_limit,
        metrics=tuple(metrics),
        rollback_within=read_duration(d, "rollbackWithin", path, at_least=MIN_INTERVAL),
    )


def _read_rate(d: Mapping[str, Any], key: str, path: str, default: float) -> float:
    """An error rate of the sequential mode: a probability in (0, 0.5]."""
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 0.5:
        raise SpecError(
            child(path, key),
            "must be a number in (0, 0.5] (the largest accepted chance "
            f"of that wrong verdict, e.g. 0.05), got {_show(value)}",
        )
    return float(value)


def _check_sequential_metrics(metrics: list[MetricSpec], path: str) -> None:
    """Sequential gates bound a share or a mean in [0, 1] from counts, so they need a template
    that counts events and trials and thresholds inside [0, 1]."""
    for i, m in enumerate(metrics):
        here = f"{path}.metrics[{i}]"
        if m.template not in SEQUENTIAL_TEMPLATES:
            field = f"{here}.template" if m.template is not None else f"{here}.query"
            got = f"template {m.template}" if m.template is not None else "a query"
            raise SpecError(
                field,
                "with mode sequential every gate needs a template that counts events "
                f"and trials ({', '.join(SEQUENTIAL_TEMPLATES)}), got {got}",
            )
        for key, value in (("min", m.min), ("max", m.max)):
            if value is not None and not 0 <= value <= 1:
                raise SpecError(
                    f"{here}.{key}", f"with mode sequential must be a share or mean in [0, 1], got {value:g}"
                )
        for key, value in (("maxIncrease", m.max_increase), ("maxDecrease", m.max_decrease)):
            if value is not None and value > 1:
                raise SpecError(f"{here}.{key}", f"with mode sequential must be at most 1, got {value:g}")


def _check_sequential_steps(spec: Mapping[str, Any], analysis: AnalysisSpec | None, steps: tuple[Step, ...]) -> None:
    """Sequential steps end on evidence: `checks` has no meaning there, and only analysis steps
    wait for a verdict, so there must be one."""
    if analysis is None or not analysis.is_sequential:
        return
    strategy = spec.get("strategy") or {}
    lists = [
        ("spec.strategy.canary", (strategy.get("canary") or {}).get("steps")),
        ("spec.strategy.shadow.canary", ((strategy.get("shadow") or {}).get("canary") or {}).get("steps")),
    ]
    for path, raw in lists:
        for i, item in enumerate(raw or []):
            body = item.get("analysis") if isinstance(item, Mapping) else None
            if isinstance(body, Mapping) and body.get("checks") is not None:
                raise SpecError(
                    f"{path}.steps[{i}].analysis.checks",
                    "not used with spec.analysis.mode "
                    "sequential (a step ends as soon as every gate is decided); set duration "
                    "for its longest wait instead",
                )
    if not any(isinstance(step, Analysis) for step in steps):
        raise SpecError(
            f"{S}.analysis.mode",
            "sequential needs an analysis step: only analysis steps "
            "wait for a verdict, so without one nothing would be decided before promotion",
        )


def _parse_metric(item: Any, here: str) -> MetricSpec:
    if not isinstance(item, Mapping):
        raise SpecError(here, "must be an object with name and template or query")
    name = read_str(item, "name", here, required=True, max_len=63) or ""
    source = exactly_one(item, ("template", "query"), here, "source")
    template = query = None
    if source == "template":
        template = read_enum(item, "template", here, tuple(TEMPLATES))
    else:
        query = read_str(item, "query", here, required=True, max_len=4096)
        try:
            check_query(query or "")
        except TemplateError as err:
            raise SpecError(f"{here}.query", str(err)) from None
    metric = MetricSpec(
        name=name,
        template=template,
        query=query,
        min=read_number(item, "min", here),
        max=read_number(item, "max", here),
        relative_to=read_enum(item, "relativeTo", here, ("stable",)),
        max_increase=read_number(item, "maxIncrease", here, lo=0),
        max_decrease=read_number(item, "maxDecrease", here, lo=0),
        min_samples=read_int(item, "minSamples", here, lo=0),
        bound=_read_bound(item, template, here),
        slices=_read_slices(item, template, query, here),
    )
    _check_thresholds(metric, here)
    return metric


def _read_slices(item: Mapping[str, Any], template: str | None, query: str | None, here: str) -> SliceSpec | None:
    """spec.analysis.metrics[].slices: a label the template's series carry (SLICE_SUPPORT), the
    listed values (slice names, unique, at most MAX_SLICES) or a cap `max` on the slices with
    data, not both. A user query is sliced only if it groups by the label itself."""
    d = read_map(item, "slices", here)
    if d is None:
        return None
    path = f"{here}.slices"
    label = read_enum(d, "label", path, SLICE_LABELS, default="slice") or "slice"
    if template is not None:
        supported = SLICE_SUPPORT.get(template, ())
        if not supported:
            able = ", ".join(SLICE_SUPPORT)
            raise SpecError(path, f"template {template} has no slice label on its series; slices work with {able}")
        if label not in supported:
            raise SpecError(
                f"{path}.label", f"template {template} supports slices by {' or '.join(supported)} only, got {label!r}"
            )
    else:
        try:
            check_groups_by(query or "", label)
        except TemplateError as err:
            raise SpecError(f"{here}.query", str(err)) from None
    values = _read_slice_values(d, path)
    if values and d.get("max") is not None:
        raise SpecError(f"{path}.max", "caps the slices found in the data; with values listed it is not used, drop it")
    limit = read_int(d, "max", path, default=SliceSpec.max, lo=1, hi=MAX_SLICES)
    return SliceSpec(label=label, values=values, max=limit)


def _read_slice_values(d: Mapping[str, Any], path: str) -> tuple[str, ...]:
    raw = d.get("values")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_SLICES:
        raise SpecError(f"{path}.values", f"must be a list of 1..{MAX_SLICES} slice names, got {_show(raw)}")
    for i, value in enumerate(raw):
        if not isinstance(value, str) or not _SLICE_NAME_RE.match(value):
            raise SpecError(
                f"{path}.values[{i}]",
                "must be a slice name as the model server writes it "
                f"(lower-case letters, digits, _ and -, 1..32 characters, starting with a letter or digit), got {_show(value)}",
            )
        if value in raw[:i]:
            raise SpecError(f"{path}.values[{i}]", f"must be unique, {value!r} is listed twice")
    return tuple(raw)


def _read_bound(item: Mapping[str, Any], template: str | None, here: str) -> float | None:
    """The template's `bound` argument: set exactly when the template takes it, and one of the
    latency histogram's bucket edges (the share slower than a bound is exact only at an edge)."""
    needs = template is not None and "bound" in TEMPLATES[template].arguments
    if item.get("bound") is None:
        if needs:
            raise SpecError(f"{here}.bound", f"is required with template {template} (seconds, one of {_edges()})")
        return None
    if not needs:
        raise SpecError(f"{here}.bound", "is used only with template slow-requests")
    value = read_number(item, "bound", here)
    if value not in LATENCY_BOUNDS:
        raise SpecError(
            f"{here}.bound",
            f"must be a bucket edge of speech_request_duration_seconds (seconds, one of {_edges()}), got {_show(value)}",
        )
    return value


def _edges() -> str:
    return ", ".join(f"{edge:g}" for edge in LATENCY_BOUNDS)


def _check_thresholds(m: MetricSpec, here: str) -> None:
    if m.min is not None and m.max is not None and m.min > m.max:
        raise SpecError(f"{here}.min", f"must be <= max ({m.min:g} > {m.max:g})")
    relative = m.max_increase is not None or m.max_decrease is not None
    if m.relative_to and not relative:
        raise SpecError(f"{here}.relativeTo", "needs maxIncrease or maxDecrease")
    if relative and not m.relative_to:
        raise SpecError(f"{here}.relativeTo", "must be 'stable' when maxIncrease or maxDecrease is set")
    if m.relative_to and m.template in PAIRWISE_TEMPLATES:
        raise SpecError(
            f"{here}.relativeTo", f"cannot be used with {m.template}, which already compares candidate with stable"
        )
    if m.min is None and m.max is None and not relative:
        raise SpecError(here, "needs a threshold: min, max, or relativeTo with maxIncrease/maxDecrease")


def _parse_prometheus_address(d: Mapping[str, Any], path: str) -> str | None:
    address = read_str(d, "address", path, max_len=2048) or None
    if address is not None and not _PROMETHEUS_ADDRESS_RE.match(address):
        raise SpecError(
            f"{path}.address",
            f"must be http(s)://host[:port][/path] without credentials, query or fragment, got {show(address)}",
        )
    return address


def _check_analysis_has_metrics(spec: Mapping[str, Any], analysis: AnalysisSpec | None) -> None:
    """An analysis stage with no metric would pass without checking anything."""
    if analysis is not None and analysis.metrics:
        return
    strategy = spec.get("strategy") or {}
    need = "needs spec.analysis.metrics: with no metric it would pass without checking anything"
    if strategy.get("shadow") is not None:
        raise SpecError(
            f"{S}.strategy.shadow", need + " (a shadow is judged only by its gates, e.g. the shadow-agreement template)"
        )
    blue_green = strategy.get("blueGreen")
    for key in ("previewDuration", "postPromotionDuration"):
        if isinstance(blue_green, Mapping) and blue_green.get(key) is not None:
            raise SpecError(
                f"{S}.strategy.blueGreen.{key}", need + " (leave it unset for a plain switch without analysis)"
            )
    for path, body in (
        (f"{S}.strategy.canary", strategy.get("canary")),
        (f"{S}.strategy.shadow.canary", (strategy.get("shadow") or {}).get("canary")),
    ):
        for i, step in enumerate((body or {}).get("steps") or []):
            if isinstance(step, Mapping) and step.get("analysis") is not None:
                raise SpecError(f"{path}.steps[{i}].analysis", need)


def _parse_traffic_routing(spec: Mapping[str, Any], policy: PodPolicy) -> TrafficRoutingSpec:
    d = read_map(spec, "trafficRouting", S)
    if d is None:
        return TrafficRoutingSpec(
            router=RouterSpec(image=policy.router_image, network_policies=policy.network_policies)
        )
    path = f"{S}.trafficRouting"
    kind = exactly_one(d, ("router", "gatewayAPI"), path, "traffic provider")
    body = read_map(d, kind, path) or {}
    here = f"{path}.{kind}"
    if kind == "router":
        sticky = read_str(body, "stickyHeader", here, max_len=128) or None
        if sticky is not None and not _HEADER_NAME_RE.match(sticky):
            raise SpecError(
                f"{here}.stickyHeader",
                "must be an HTTP header name (an RFC 7230 token: "
                f"letters, digits and !#$%&'*+-.^_`|~), got {show(sticky)}",
            )
        return TrafficRoutingSpec(
            router=RouterSpec(
                sticky_header=sticky,
                replicas=read_int(body, "replicas", here, default=1, lo=1, hi=20) or 1,
                image=resolve_image(
                    read_str(body, "image", here, max_len=512), policy.router_image, policy, f"{here}.image"
                ),
                network_policies=policy.network_policies,
            )
        )
    http_route = read_str(body, "httpRoute", here, required=True) or ""
    if not _OBJECT_NAME_RE.match(http_route):
        # It becomes part of the REST path the operator reads and patches.
        raise SpecError(
            f"{here}.httpRoute",
            f"must be a Kubernetes object name (lowercase letters, digits, '-' and '.'), got {show(http_route)}",
        )
    return TrafficRoutingSpec(
        router=None,
        gateway_api=GatewayAPISpec(
            http_route=http_route, port=read_int(body, "port", here, default=8080, lo=1, hi=65535) or 8080
        ),
    )


def _parse_requests(spec: Mapping[str, Any]) -> Requests:
    d = read_map(spec, "requests", S) or {}
    path = f"{S}.requests"
    return Requests(
        **{
            attr: read_int(d, key, path, default=0, lo=0) or 0
            for attr, key in (
                ("promote", "promote"),
                ("promote_full", "promoteFull"),
                ("abort", "abort"),
                ("retry", "retry"),
            )
        },
        by=read_str(d, "by", path, default="", max_len=253) or "",
    )


# Typed field readers: each names the JSON path and what was expected.

_MISSING = object()


def child(path: str, key: str) -> str:
    return f"{path}.{key}"


def read_map(d: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> Mapping[str, Any] | None:
    value = d.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise SpecError(child(path, key), "is required")
        return None
    if not isinstance(value, Mapping):
        raise SpecError(child(path, key), f"must be an object, got {_show(value)}")
    return value


def read_list(d: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(child(path, key), f"must be a list, got {_show(value)}")
    return value


def read_str(
    d: Mapping[str, Any], key: str, path: str, *, default: str | None = None, required: bool = False, max_len: int = 253
) -> str | None:
    value = d.get(key)
    if value is None:
        if required:
            raise SpecError(child(path, key), "is required")
        return default
    if not isinstance(value, str):
        raise SpecError(child(path, key), f"must be a string, got {_show(value)}")
    if required and not value:
        raise SpecError(child(path, key), "must not be empty")
    if len(value) > max_len:
        raise SpecError(child(path, key), f"must be at most {max_len} characters")
    return value


@overload
def read_int(
    d: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: int,
    lo: int | None = None,
    hi: int | None = None,
    required: bool = False,
) -> int: ...
@overload
def read_int(
    d: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: None = None,
    lo: int | None = None,
    hi: int | None = None,
    required: bool = False,
) -> int | None: ...
def read_int(
    d: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: int | None = None,
    lo: int | None = None,
    hi: int | None = None,
    required: bool = False,
) -> int | None:
    value = d.get(key)
    if value is None:
        if required:
            raise SpecError(child(path, key), "is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise SpecError(child(path, key), f"must be an integer{_range(lo, hi)}, got {_show(value)}")
        value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SpecError(child(path, key), f"must be an integer{_range(lo, hi)}, got {value}")
    return value


def read_number(d: Mapping[str, Any], key: str, path: str, *, lo: float | None = None) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        bound = f" >= {lo:g}" if lo is not None else ""
        raise SpecError(child(path, key), f"must be a number{bound}, got {_show(value)}")
    if lo is not None and value < lo:
        raise SpecError(child(path, key), f"must be a number >= {lo:g}, got {value}")
    return float(value)


def read_bool(d: Mapping[str, Any], key: str, path: str, *, default: bool) -> bool:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(child(path, key), f"must be true or false, got {_show(value)}")
    return value


@overload
def read_duration(
    d: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: timedelta,
    positive: bool = False,
    at_least: timedelta | None = None,
) -> timedelta: ...
@overload
def read_duration(
    d: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: None = None,
    positive: bool = False,
    at_least: timedelta | None = None,
) -> timedelta | None: ...
def read_duration(
    d: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: timedelta | None = None,
    positive: bool = False,
    at_least: timedelta | None = None,
) -> timedelta | None:
    value = d.get(key)
    if value is None:
        return default
    try:
        parsed = parse_duration(value)
    except ValueError as err:
        raise SpecError(child(path, key), str(err)) from None
    if positive and parsed <= timedelta(0):
        raise SpecError(child(path, key), f"must be greater than 0, got {value!r}")
    if at_least is not None and parsed < at_least:
        raise SpecError(child(path, key), f"must be at least {format_duration(at_least)}, got {value!r}")
    return parsed


def read_enum(
    d: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...], *, default: str | None = None
) -> str | None:
    value = d.get(key)
    if value is None:
        return default
    if value not in allowed:
        raise SpecError(child(path, key), f"must be one of {', '.join(allowed)}, got {_show(value)}")
    return str(value)


def exactly_one(d: Mapping[str, Any], keys: tuple[str, ...], path: str, what: str) -> str:
    present = [k for k in keys if d.get(k) is not None]
    if len(present) != 1:
        got = ", ".join(present) if present else "none"
        raise SpecError(path, f"must set exactly one {what} of {', '.join(keys)}, got {got}")
    return present[0]


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    return ""


def show(value: Any) -> str:
    """A value as an error message quotes it: repr, cut to 60 characters."""
    return _show(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
