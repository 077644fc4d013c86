"""Windows (SPEC §5): fixed calendar periods shared by everyone, or cycles per customer.

Both kinds end up as a frame of windows with ``_win`` (period or cycle number), ``ref_code``,
``start_date``/``end_date`` (local, inclusive), ``window_start``/``window_end`` (local
timestamps) and ``status`` as of D; and a way to put each record (``_cust``, ``_date``) into its
window with a lookup or a join, never a Python loop over records.
"""

from __future__ import annotations

import functools
from datetime import date

import polars as pl

from pipeline.definitions.model import EvaluationType, Period
from pipeline.scoring.context import GroupContext, date_status, window_bounds


def fixed_periods(ctx: GroupContext) -> pl.LazyFrame:
    """Every period of a FIXED group (started or not), one row each."""
    periods = ctx.group.periods
    frame = pl.LazyFrame(
        {
            "_win": [p.index for p in periods],
            "ref_code": [p.ref_code for p in periods],
            "start_date": [p.start for p in periods],
            "end_date": [p.end for p in periods],
        },
        schema={
            "_win": pl.Int32,
            "ref_code": pl.String,
            "start_date": pl.Date,
            "end_date": pl.Date,
        },
    )
    return _decorate(frame, ctx)


def _decorate(frame: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    return frame.with_columns(
        *window_bounds(pl.col("start_date"), pl.col("end_date")),
        date_status(pl.col("start_date"), pl.col("end_date"), ctx.as_of).alias("status"),
    )


def assign_fixed(records: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    """Add ``_win`` to records by their local ``_date``; records outside every period drop.

    By a table of the period of each day from the first period's start: one gather per record.
    Why: a hash join of the records with every day of every period cost ~3.5x as much (1.5 M
    records: 44 against 12 ms), once per target of every FIXED group."""
    first, table = _period_of_day(ctx.group.periods)
    day = pl.col("_date").cast(pl.Int32) - first
    return (
        records.filter((day >= 0) & (day < table.len()))
        .with_columns(pl.lit(table).gather(day).alias("_win"))
        .filter(pl.col("_win").is_not_null())
    )


@functools.lru_cache(maxsize=256)
def _period_of_day(periods: tuple[Period, ...]) -> tuple[int, pl.Series]:
    """(first, table): ``table[d - first]`` is the number of the period holding the day whose
    number (days since 1970-01-01) is d, null between periods (which never overlap); empty
    without periods."""
    first = min((p.start for p in periods), default=date(1970, 1, 1))
    days = (max(p.end for p in periods) - first).days + 1 if periods else 0
    spans = pl.DataFrame(
        {
            "_win": [p.index for p in periods],
            "_from": [(p.start - first).days for p in periods],
            "_to": [(p.end - first).days + 1 for p in periods],
        },
        schema={"_win": pl.Int32, "_from": pl.Int32, "_to": pl.Int32},
    )
    every = spans.select("_win", pl.int_ranges("_from", "_to").alias("_day")).explode("_day")
    table = pl.repeat(None, days, dtype=pl.Int32, eager=True).scatter(
        every["_day"], every["_win"]
    )
    return (first - date(1970, 1, 1)).days, table.rename("_win")


@functools.cache
def _months_table() -> tuple[pl.Series, pl.Series]:
    """First day and length of every month of years 1..9999, indexed by year * 12 + month - 13."""
    firsts = pl.date_range(date(1, 1, 1), date(9999, 12, 1), "1mo", eager=True)
    lengths = firsts.dt.month_end().dt.day().cast(pl.Int32)
    return firsts, lengths


def cycle_start(anchor: pl.Expr, k: pl.Expr, ctx: GroupContext) -> pl.Expr:
    """Start of cycle k: anchor + (k-1)·L; month steps always counted from the first start, so
    31 Jan monthly gives 31 Jan, 29 Feb, 31 Mar (SPEC §5).

    Months by arithmetic on the month number and a lookup of that month's first day and length
    (the day clamped to it, as `dt.offset_by` does): about 3x cheaper than formatting an offset
    string per row."""
    days, months = ctx.group.window_length
    if months:
        index = (
            anchor.dt.year().cast(pl.Int32) * 12
            + anchor.dt.month().cast(pl.Int32)
            - 13
            + (k.cast(pl.Int32) - 1) * months
        )
        firsts, lengths = _months_table()
        day = pl.min_horizontal(anchor.dt.day().cast(pl.Int32), pl.lit(lengths).gather(index))
        return pl.lit(firsts).gather(index) + pl.duration(days=day - 1)
    return anchor + pl.duration(days=(k - 1) * days)


def cycles(anchors: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    """Cycles of a CYCLIC group per customer, from ``anchors`` (``_cust``, ``_anchor`` date, and
    optional ``unenrolled_at``): only cycles that have started by D, not after the group's end."""
    n = ctx.group.max_cycles
    frame = anchors.with_columns(pl.int_ranges(1, n + 1, dtype=pl.Int32).alias("_win")).explode(
        "_win"
    )
    frame = frame.with_columns(
        cycle_start(pl.col("_anchor"), pl.col("_win"), ctx).alias("start_date"),
        (cycle_start(pl.col("_anchor"), pl.col("_win") + 1, ctx) - pl.duration(days=1)).alias(
            "end_date"
        ),
        pl.lit(None, dtype=pl.String).alias("ref_code"),
    ).filter(pl.col("start_date") <= pl.lit(ctx.as_of))
    if ctx.group.end_date is not None:
        frame = frame.filter(pl.col("start_date") <= pl.lit(ctx.group.end_date))
    return _decorate(frame.drop("_anchor"), ctx)


def _cycle_number(ctx: GroupContext) -> pl.Expr:
    """The cycle holding ``_date``, by arithmetic on ``_anchor`` (0 before the anchor)."""
    days, months = ctx.group.window_length
    if months:
        elapsed = (
            (pl.col("_date").dt.year() - pl.col("_anchor").dt.year()) * 12
            + pl.col("_date").dt.month().cast(pl.Int32)
            - pl.col("_anchor").dt.month().cast(pl.Int32)
        )
        k0 = (elapsed.floordiv(months) + 1).cast(pl.Int32)
        k = (
            pl.when(cycle_start(pl.col("_anchor"), k0, ctx) > pl.col("_date"))
            .then(k0 - 1)
            .otherwise(k0)
        )
    else:
        k = (pl.col("_date") - pl.col("_anchor")).dt.total_days().floordiv(days) + 1
    return pl.when(pl.col("_date") < pl.col("_anchor")).then(0).otherwise(k).cast(pl.Int32)


def assign_cycles(
    records: pl.LazyFrame,
    cycle_frame: pl.LazyFrame,
    anchors: pl.LazyFrame,
    ctx: GroupContext,
    *,
    offset: int = 0,
) -> pl.LazyFrame:
    """Add ``_win`` (the cycle holding the record's date, plus `offset`) and keep only records
    whose cycle exists: started by D, within the cycle count and the group's dates.

    `offset=1` gives carry-mode placement: the next cycle (cycle 1 before the first)."""
    if "_cycles" in anchors.collect_schema().names():
        # A customer's cycles are always 1..n (each cut below is monotone in the cycle
        # number), so "the cycle exists" is a range test, not a join with the cycle frame.
        r = records.join(anchors.select("_cust", "_anchor", "_cycles"), on="_cust", how="inner")
        r = r.with_columns((_cycle_number(ctx) + offset).alias("_win"))
        return r.filter((pl.col("_win") >= 1) & (pl.col("_win") <= pl.col("_cycles"))).drop(
            "_anchor", "_cycles"
        )
    r = records.join(anchors.select("_cust", "_anchor"), on="_cust", how="inner")
    r = r.with_columns((_cycle_number(ctx) + offset).alias("_win")).drop("_anchor")
    return r.join(cycle_frame.select("_cust", "_win"), on=["_cust", "_win"], how="inner")


def assign_next_fixed(records: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    """Carry mode: the first period starting after the record's date."""
    starts = (
        fixed_periods(ctx)
        .filter(pl.col("start_date") <= pl.lit(ctx.as_of))
        .select("_win", pl.col("start_date").alias("_next_start"))
        .sort("_next_start")
    )
    r = records.with_columns((pl.col("_date") + pl.duration(days=1)).alias("_probe")).sort("_probe")
    return (
        r.join_asof(starts, left_on="_probe", right_on="_next_start", strategy="forward")
        .filter(pl.col("_win").is_not_null())
        .drop("_probe", "_next_start")
    )


def is_fixed(ctx: GroupContext) -> bool:
    return ctx.group.evaluation_type is EvaluationType.FIXED
