"""What every scoring step of one group needs: the group, its zone, the as-of day, the sources.

Also the small frame conventions shared by the scoring modules. Working columns start with an
underscore so that they never collide with export columns a rule may name:

- ``_cust``  customer id (the type it was loaded with)
- ``_ts``    the record's instant, ``Datetime(us, UTC)``
- ``_date``  its local date in the group's zone
- ``_k1``/``_k2`` the record key, for ties in time (text id, line number)
- ``_win``   window number: period index or cycle number
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import polars as pl

from pipeline.config import Config
from pipeline.definitions.model import Group
from pipeline.scoring import localtime

if TYPE_CHECKING:
    from pipeline.scoring.sharing import SharedFrames

DEC = pl.Decimal(38, 4)
UTC_TS = pl.Datetime("us", "UTC")
LOCAL_TS = pl.Datetime("us")
KEYS = ["_cust", "_win"]


def dec(value: object) -> pl.Expr:
    """A Decimal(38, 4) literal (never through float)."""
    return pl.lit(value).cast(DEC)


@dataclass(frozen=True)
class GroupContext:
    group: Group
    as_of: date
    config: Config
    sources: Mapping[str, pl.LazyFrame]
    frames: SharedFrames | None = None  # derived frames shared with other targets of the shard

    @property
    def tz(self) -> str:
        return self.group.time_zone or self.config.timezone

    @property
    def end_of_as_of(self) -> datetime:
        """The first instant after day D in the group's zone: records at or after it are ignored."""
        local = datetime.combine(self.as_of + timedelta(days=1), time(0), ZoneInfo(self.tz))
        return local.astimezone(ZoneInfo("UTC"))

    def local_date(self, ts: pl.Expr) -> pl.Expr:
        return localtime.local_date(ts, self.tz)

    def local_naive(self, ts: pl.Expr) -> pl.Expr:
        return ts.dt.convert_time_zone(self.tz).dt.replace_time_zone(None)

    def source(self, name: str) -> pl.LazyFrame:
        return self.sources[name]

    def derived(self, key: Hashable, build: Callable[[], pl.LazyFrame]) -> pl.LazyFrame:
        """The frame `build` makes from the sources, built once when several targets read it."""
        return build() if self.frames is None else self.frames.get(key, build)


def sorted_cum_sum(value: pl.Expr, keys: list[str]) -> pl.Expr:
    """Cumulative sum of `value` restarting at each group of `keys`, on rows sorted by `keys`.

    One global cumulative sum minus the sum before each group's first row: the same result as
    ``value.cum_sum().over(keys)`` without a window function over millions of tiny groups
    (about 70x faster at 5M rows). The caller guarantees the order (sort or
    ``maintain_order`` joins).
    """
    first = pl.lit(False)
    for k in keys:
        first = first | (pl.col(k) != pl.col(k).shift(1)).fill_null(True)
    total = value.cum_sum()
    before = pl.when(first).then(total - value).forward_fill()
    return total - before


def window_bounds(start: pl.Expr, end: pl.Expr) -> list[pl.Expr]:
    """Local timestamps of a date window: 00:00 of the first day, last instant of the last."""
    return [
        start.cast(LOCAL_TS).alias("window_start"),
        (end.cast(LOCAL_TS) + pl.duration(days=1) - pl.duration(microseconds=1)).alias(
            "window_end"
        ),
    ]


def date_status(start: pl.Expr, end: pl.Expr, as_of: date) -> pl.Expr:
    """SPEC §5: NOT_STARTED when start > D, RUNNING when start <= D < end, ENDED when end <= D."""
    d = pl.lit(as_of)
    return (
        pl.when(start > d)
        .then(pl.lit("NOT_STARTED"))
        .when(end <= d)
        .then(pl.lit("ENDED"))
        .otherwise(pl.lit("RUNNING"))
    )
