"""Bucket grids of the downsampled metric view (pure arithmetic, no ClickHouse)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from query_api.repository import Grid
from schemas.metrics import ROLLUP_SHIFTS

INT64 = st.integers(-(2**63), 2**63 - 1)


@given(a=INT64, b=INT64, n=st.integers(1, 10_000), axis=st.sampled_from(["step", "time"]))
def test_a_grid_cuts_its_range_into_n_contiguous_buckets_of_near_equal_width(
    a: int, b: int, n: int, axis: str
) -> None:
    lo, hi = min(a, b), max(a, b)
    n = min(n, hi - lo + 1)  # the API never asks for more buckets than x values
    g = Grid.of(axis, lo, hi, n)  # type: ignore[arg-type]
    bounds = [g.bounds(i) for i in range(n)]
    assert bounds[0][0] == lo
    assert bounds[-1][1] == hi
    assert all(s <= e for s, e in bounds)  # none empty
    assert all(bounds[i + 1][0] == bounds[i][1] + 1 for i in range(n - 1))
    widths = [e - s + 1 for s, e in bounds[1:-1]]  # the end buckets may be clipped
    if g.level is None:
        assert max(widths, default=0) - min(widths, default=0) <= 1
        return
    size = 1 << ROLLUP_SHIFTS[g.level]
    assert axis == "step"
    # every inner edge is a block boundary, and a bucket spans at least 15 whole blocks
    assert all(s % size == 0 for s, _ in bounds[1:])
    assert (hi - lo + 1) / n >= 16 * size
    assert min(widths, default=15 * size) >= 15 * size
    assert max(widths, default=0) - min(widths, default=0) <= size
    # the largest level that still gives 16 blocks a bucket
    if g.level + 1 < len(ROLLUP_SHIFTS):
        assert (hi - lo + 1) / n < 16 << ROLLUP_SHIFTS[g.level + 1]


def test_long_step_ranges_read_the_rollup_level_that_fits_and_time_never_does() -> None:
    assert Grid.of("step", 0, 999_999, 1000).level == 0  # 1,000 steps a bucket: 32-step blocks
    assert Grid.of("step", 0, 511_999, 1000).level == 0  # 512: the first width served
    assert Grid.of("step", 0, 510_999, 1000).level is None
    assert Grid.of("step", 0, 9_999_999, 1000).level == 1  # 10,000 steps: 512-step blocks
    assert Grid.of("step", 0, 999_999_999, 1000).level == 2
    assert Grid.of("time", 0, 999_999_999, 1000).level is None
    g = Grid.of("step", 0, 999_999, 1000)
    assert [g.bounds(b) for b in (0, 1, 999)] == [(0, 1023), (1024, 2015), (999_008, 999_999)]
