"""Local dates of UTC instants in a group's time zone, by a table lookup (SPEC §5, §13).

Why: polars' `convert_time_zone` looks every instant up in the zone's rules, about 0.1 s per
million records, and every target's records take their local date. A zone's UTC offset is a
step function of the instant: the steps are worked out once per zone, by polars itself on an
hourly grid refined to the second (so both always agree), and each record then needs one binary
search and an addition. Instants outside the table's years take polars' own conversion.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import polars as pl

FIRST = datetime(1900, 1, 1, tzinfo=UTC)
END = datetime(2100, 1, 1, tzinfo=UTC)
_US = pl.Datetime("us", "UTC")


def local_date(ts: pl.Expr, tz: str) -> pl.Expr:
    """The local calendar date in `tz` of the UTC instants `ts` (as ``convert_time_zone``)."""
    if tz == "UTC":
        return ts.dt.convert_time_zone("UTC").dt.date()
    instants, offsets = offset_steps(tz)
    us = ts.dt.convert_time_zone("UTC").cast(_US).dt.epoch("us")
    inside = (us >= _epoch_us(FIRST)) & (us < _epoch_us(END))
    step = pl.lit(instants).search_sorted(us, side="right")
    fast = (us + pl.lit(offsets).gather(step)).cast(pl.Datetime("us")).dt.date()
    # Outside the table (rare: before 1900 or from 2100) the zone's rules decide, row by row;
    # the other rows are null there, which the conversion skips.
    slow = pl.when(~inside).then(ts).dt.convert_time_zone(tz).dt.date()
    return pl.when(inside).then(fast).otherwise(slow)


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@functools.cache
def offset_steps(tz: str) -> tuple[pl.Series, pl.Series]:
    """(instants, offsets): the UTC instants (µs since the epoch, ascending) from which `tz`'s
    offset changes between 1900 and 2100, and the offsets in µs: ``offsets[i]`` applies from
    ``instants[i-1]`` (``offsets[0]`` before the first step)."""
    hours = pl.datetime_range(FIRST, END, "1h", time_zone="UTC", eager=True)
    hourly = _offsets(hours, tz)
    changed = (hourly != hourly.shift(1)).fill_null(False)
    # Each change lies within the hour before the grid point where it shows: find its second.
    ends = hours.filter(changed)
    seconds = (
        pl.DataFrame({"_end": ends})
        .select(
            pl.datetime_ranges(
                pl.col("_end") - pl.duration(hours=1), pl.col("_end"), "1s", time_zone="UTC"
            ).alias("_at")
        )
        .explode("_at")["_at"]
    )
    fine = _offsets(seconds, tz)
    steps = (fine != fine.shift(1)) & (
        seconds.dt.epoch("us") - seconds.dt.epoch("us").shift(1) == 1_000_000
    )
    steps = steps.fill_null(False)
    instants = seconds.filter(steps).dt.epoch("us").rename("instant")
    offsets = pl.concat([hourly.head(1), fine.filter(steps)]).rename("offset")
    return instants, offsets


def _offsets(instants: pl.Series, tz: str) -> pl.Series:
    """UTC offset in µs of each instant in `tz`."""
    local = instants.dt.convert_time_zone(tz)
    return (
        local.dt.replace_time_zone(None).dt.epoch("us") - instants.dt.epoch("us")
    ).rename("offset")
