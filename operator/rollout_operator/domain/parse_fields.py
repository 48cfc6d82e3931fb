"""Typed field readers for parse_spec: each names the JSON path and what was expected.

They mirror the CRD schema so the operator reports what `kubectl apply` would have rejected.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping

from .durations import format_duration, parse_duration
from .spec import SpecError

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


def read_str(d: Mapping[str, Any], key: str, path: str, *, default: str | None = None,
             required: bool = False, max_len: int = 253) -> str | None:
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


def read_int(d: Mapping[str, Any], key: str, path: str, *, default: int | None = None,
             lo: int | None = None, hi: int | None = None, required: bool = False) -> int | None:
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


def read_duration(d: Mapping[str, Any], key: str, path: str, *,
                  default: timedelta | None = None, positive: bool = False,
                  at_least: timedelta | None = None) -> timedelta | None:
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


def read_enum(d: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...], *,
              default: str | None = None) -> str | None:
    value = d.get(key)
    if value is None:
        return default
    if value not in allowed:
        raise SpecError(child(path, key), f"must be one of {', '.join(allowed)}, got {_show(value)}")
    return value


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
