"""Drift distances between two histograms on the same buckets: the population stability index and
the Jensen-Shannon distance, with the per-bucket terms that explain them.

Histograms arrive the way Prometheus stores them: cumulative counts per upper edge (`le`), the last
edge usually +Inf. A reference histogram comes from a model card, a live one from a query window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The share an empty bucket gets in the population stability index instead of 0 (ln 0 is undefined).
# Only empty buckets change; the other shares stay count / total, so the smoothed shares add up to
# slightly more than 1 when a bucket is empty. 1e-4 is the customary floor: an empty bucket against
# one with share s adds (s - 1e-4) * ln(s / 1e-4), e.g. 0.1 * 6.9 = 0.69 at s = 0.1.
PSI_EPSILON = 1e-4

# A bucket is (its upper edge, the cumulative count up to that edge). The edge may be a number or
# Prometheus' `le` text ("0.25", "+Inf").
Bucket = tuple[float | str, float]


class DriftError(ValueError):
    """Two histograms cannot be compared; the message names the histogram, the bucket and what was wrong."""


@dataclass(frozen=True)
class BucketTerm:
    """One bucket's part of a distance: its upper edge, both shares (after smoothing) and its term."""

    le: float
    reference_share: float
    live_share: float
    term: float


@dataclass(frozen=True)
class Distance:
    """A distance between a reference and a live histogram, the per-bucket terms it is the sum of
    (for Jensen-Shannon the terms add up to the divergence, whose square root is the distance) and
    the number of observations behind each side."""

    value: float
    terms: tuple[BucketTerm, ...]
    reference_count: float
    live_count: float


def compute_bucket_counts(buckets: Sequence[Bucket], name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(upper edges, per-bucket counts) from cumulative `le` buckets; DriftError if they are not a histogram."""
    if not buckets:
        raise DriftError(f"{name}: no buckets; expected cumulative (le, count) pairs")
    edges = tuple(_parse_edge(le, name, i) for i, (le, _) in enumerate(buckets))
    cumulative = tuple(_parse_count(count, name, edges[i]) for i, (_, count) in enumerate(buckets))
    for i in range(1, len(edges)):
        if not edges[i] > edges[i - 1]:
            raise DriftError(
                f"{name}: bucket edges must increase, got le={edges[i]:g} after le={edges[i - 1]:g} (bucket {i})"
            )
        if cumulative[i] < cumulative[i - 1]:
            raise DriftError(
                f"{name}: cumulative counts must not decrease, got {cumulative[i]:g} at le={edges[i]:g} after "
                f"{cumulative[i - 1]:g} at le={edges[i - 1]:g}"
            )
    if cumulative[-1] <= 0:
        raise DriftError(f"{name}: the histogram is empty (count 0 up to le={edges[-1]:g}); a distance needs data")
    counts = (cumulative[0],) + tuple(cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative)))
    return edges, counts


def _parse_edge(le: float | str, name: str, index: int) -> float:
    try:
        edge = float(le)
    except (TypeError, ValueError):
        raise DriftError(f"{name}: bucket {index} has le={le!r}; expected a number or '+Inf'") from None
    if math.isnan(edge):
        raise DriftError(f"{name}: bucket {index} has le=NaN; expected a number or '+Inf'")
    return edge


def _parse_count(count: float, name: str, edge: float) -> float:
    if isinstance(count, bool) or not isinstance(count, (int, float)) or not math.isfinite(count):
        raise DriftError(f"{name}: count at le={edge:g} is {count!r}; expected a finite number >= 0")
    if count < 0:
        raise DriftError(f"{name}: count at le={edge:g} is {count:g}; expected a finite number >= 0")
    return float(count)


def _shares(reference: Sequence[Bucket], live: Sequence[Bucket]) -> tuple[tuple[float, ...], list[float], list[float]]:
    edges, ref_counts = compute_bucket_counts(reference, "reference histogram")
    live_edges, live_counts = compute_bucket_counts(live, "live histogram")
    if live_edges != edges:
        raise DriftError(
            f"the histograms have different buckets: reference le={_edge_list(edges)}, live le={_edge_list(live_edges)}; "
            "both must use the same edges"
        )
    ref_total, live_total = sum(ref_counts), sum(live_counts)
    return edges, [c / ref_total for c in ref_counts], [c / live_total for c in live_counts]


def _edge_list(edges: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{e:g}" for e in edges) + "]"


def compute_psi(reference: Sequence[Bucket], live: Sequence[Bucket], epsilon: float = PSI_EPSILON) -> Distance:
    """Population stability index: sum over buckets of (live - reference) * ln(live / reference), on
    shares where an empty bucket's 0 is replaced by `epsilon`. 0 = same shape; by convention below
    0.1 is stable, 0.1-0.25 a moderate shift, above 0.25 a large one."""
    if not 0 < epsilon < 1:
        raise DriftError(f"epsilon: expected a share between 0 and 1 (exclusive), got {epsilon!r}")
    edges, ref_shares, live_shares = _shares(reference, live)
    terms = []
    for le, e_raw, a_raw in zip(edges, ref_shares, live_shares, strict=True):
        e, a = e_raw or epsilon, a_raw or epsilon
        terms.append(BucketTerm(le, e, a, (a - e) * math.log(a / e)))
    return Distance(sum(t.term for t in terms), tuple(terms), _total(reference), _total(live))


def compute_js_distance(reference: Sequence[Bucket], live: Sequence[Bucket]) -> Distance:
    """Jensen-Shannon distance: the square root of the JS divergence in bits, 0 (same) to 1 (disjoint).
    Needs no smoothing: an empty bucket contributes 0 * log 0 = 0. Each term is the bucket's part of
    the divergence, (p log2(p/m) + q log2(q/m)) / 2 with m = (p + q) / 2."""
    edges, ref_shares, live_shares = _shares(reference, live)
    terms = []
    for le, p, q in zip(edges, ref_shares, live_shares, strict=True):
        m = (p + q) / 2
        term = (_plogp_over(p, m) + _plogp_over(q, m)) / 2
        terms.append(BucketTerm(le, p, q, term))
    divergence = max(0.0, sum(t.term for t in terms))  # rounding can dip a hair below 0 for equal shapes
    return Distance(math.sqrt(divergence), tuple(terms), _total(reference), _total(live))


def _plogp_over(p: float, m: float) -> float:
    return p * math.log2(p / m) if p > 0 else 0.0


def _total(buckets: Sequence[Bucket]) -> float:
    return float(buckets[-1][1])
