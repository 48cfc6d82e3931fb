"""A request's slice (from the configured header and the allow-list) and the request id it may echo.

The gate (app.py) decides both once per inference request, from the raw ASGI headers; the model reads the decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NO_SLICE = "none"  # the request had no slice header
OTHER_SLICE = "other"  # a slice header with anything but one allow-listed value
RESERVED_SLICES = (NO_SLICE, OTHER_SLICE)
SLICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MAX_SLICES = 16
MAX_SLICE_BYTES = 32
REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# RFC 9110 token characters: what a header name may be made of.
HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the server itself reads or writes: a slice header of one of these names would be rewritten by the gate.
RESERVED_HEADERS = frozenset(
    {
        "content-length",
        "content-type",
        "transfer-encoding",
        "host",
        "inference-header-content-length",
        "x-request-id",
        "x-model-version",
        "x-predictions",
        "x-model-labels",
    }
)


@dataclass(frozen=True)
class SlicePolicy:
    """The slice header (lower-case) and the allow-listed slice names; built from validated settings."""

    header: str = "x-slice"
    allowed: tuple[str, ...] = ()

    @property
    def values(self) -> tuple[str, ...]:
        """Every slice label value a request can get: the allow-list, then `none` and `other`."""
        return (*self.allowed, *RESERVED_SLICES)

    def compute_slice(self, values: list[bytes]) -> str:
        """The slice of a request whose slice header carried `values` (one entry per occurrence)."""
        if not values:
            return NO_SLICE
        if len(values) > 1 or len(values[0]) > MAX_SLICE_BYTES:  # two headers are ambiguous, not a choice
            return OTHER_SLICE
        name = values[0].lower().decode("latin-1")
        return name if name in self.allowed else OTHER_SLICE

    def compute_request_labels(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes | None]:
        """The request's slice and the request id to echo (None unless exactly one valid id was sent)."""
        header = self.header.encode()
        slice_values, ids = [], []
        for name, value in headers:
            if name == header:
                slice_values.append(value)
            elif name == REQUEST_ID_HEADER:
                ids.append(value)
        request_id = ids[0] if len(ids) == 1 and REQUEST_ID.fullmatch(ids[0]) else None
        return self.compute_slice(slice_values), request_id

    def compute_normalized_headers(self, headers: list[tuple[bytes, bytes]], slice_: str) -> list[tuple[bytes, bytes]]:
        """The request headers with the slice header replaced by the decided slice (absent for `none`).

        KServe hands the model `dict(headers)`, which keeps the first of repeated headers on v2 and the last
        on v1; after this the model reads the gate's decision, the same on both protocols and both paths.
        """
        header = self.header.encode()
        kept = [(name, value) for name, value in headers if name != header]
        return kept if slice_ == NO_SLICE else [*kept, (header, slice_.encode())]

    def compute_model_slice(self, headers: dict[str, str] | None) -> str:
        """The slice as the model sees it in KServe's header dict, after the gate normalised it."""
        value = (headers or {}).get(self.header)
        return NO_SLICE if value is None else self.compute_slice([value.encode("latin-1", "replace")])


def compute_slice_problem(header: str, slices: tuple[str, ...]) -> tuple[str, str] | None:
    """(flag, what was expected) for the first invalid slice setting, or None when both are valid."""
    if not HEADER_TOKEN.fullmatch(header) or header.lower() in RESERVED_HEADERS:
        return "--slice-header", (
            "an HTTP header name (letters, digits and !#$%&'*+.^_`|~-) that the server does not use itself "
            f"(not one of {', '.join(sorted(RESERVED_HEADERS))})"
        )
    expected = (
        f"a comma-separated list of at most {MAX_SLICES} distinct slice names, each matching "
        f"{SLICE_NAME.pattern} and not {' or '.join(RESERVED_SLICES)} (those are given to requests outside the list)"
    )
    bad = [s for s in slices if not SLICE_NAME.fullmatch(s) or s in RESERVED_SLICES]
    if bad or len(slices) > MAX_SLICES or len(set(slices)) != len(slices):
        return "--slices", expected + (f"; {bad[0]!r} is not one" if bad else "")
    return None
