"""Durations and timestamps as the ModelRollout API writes them.

Durations are strings like "30s" or "10m" (the CRD pattern); timestamps are RFC3339 UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Longer than any step, deadline or window needs; also keeps timedelta and timestamp arithmetic
# (now + duration) far from overflow.
MAX_DURATION = timedelta(days=366)


def parse_duration(text: str) -> timedelta:
    """Parse "500ms", "30s", "10m" or "2h"; raise ValueError naming what was expected."""
    if not isinstance(text, str) or not _DURATION_RE.match(text):
        raise ValueError(f"must be a duration like 30s, 5m, 1h or 500ms, got {text!r}")
    match = _DURATION_RE.match(text)
    assert match is not None
    unit = match.group(1)
    digits = text[: -len(unit)]
    if len(digits) > 12 or int(digits) * _UNIT_SECONDS[unit] > MAX_DURATION.total_seconds():
        raise ValueError(f"must be at most {MAX_DURATION.days * 24}h, got {text!r}")
    return timedelta(seconds=int(digits) * _UNIT_SECONDS[unit])


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the largest exact unit (the inverse of parse_duration)."""
    millis = round(value.total_seconds() * 1000)
    for unit, factor in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % factor == 0:
            return f"{millis // factor}{unit}"
    return f"{millis}ms" if millis else "0s"


def format_promql_duration(value: timedelta) -> str:
    """PromQL range selectors take the same unit letters as the API."""
    return format_duration(value)


def to_rfc3339(value: datetime | None) -> str | None:
    """UTC, second precision, trailing Z (what kubectl and Kubernetes conditions use)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: object) -> datetime | None:
    """Tolerant parse of a stored timestamp; an unreadable value reads as absent."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def truncate_to_second(value: datetime) -> datetime:
    """Status timestamps are stored at second precision; decide() keeps the same precision
    so that a status read back from the API server equals the one it wrote."""
    return value.replace(microsecond=0)
