"""From counted records to a target's value per customer and window (SPEC §6.1, §13).

Every measure is expressed as a per-record *contribution* whose running sum, in time order (ties
by record key), is the running value: a sum adds the attribute, a distinct count adds 1 at the
first record of each bill or local date, a MIN/MAX block adds the change of the block's running
extreme, a return adds minus what it takes away. That one shape gives `value`, `achieved_at` and
`last_activity_at` for every measure with the same few vectorised operations.
"""

from __future__ import annotations

import polars as pl

from pipeline.definitions.model import Target, TargetEntity, TargetType
from pipeline.scoring.context import DEC, KEYS, sorted_cum_sum

ORDER = ["_cust", "_win", "_ts", "_k1", "_k2"]
CONTRIB_COLS = [*ORDER, "_contrib"]


def regular_contributions(counted: pl.LazyFrame, target: Target) -> pl.LazyFrame:
    """``counted``: regular records with ``_cust, _win, _ts, _k1, _k2, _bill, _date, _attr`` and
    (for aggregate windows) ``start_date``. Returns ``CONTRIB_COLS``."""
    ttype = target.type
    ext = target.extended_field
    if ext is not None and ext.aggregate_window is not None:
        c = counted.sort(ORDER)
        return _block_extremes(c, ext.aggregate_window.window_type, ext.aggregate_window.days)
    if ttype is TargetType.VISIT or (
        ttype is TargetType.COUNT and target.entity is TargetEntity.LINEITEM
    ):
        # The first record of each local date (VISIT) or bill (LINEITEM COUNT) in the window, in
        # time order; a struct key avoids a window function over millions of tiny groups.
        what = "_date" if ttype is TargetType.VISIT else "_bill"
        c = counted.sort(ORDER)
        contrib = pl.struct(*KEYS, what).is_first_distinct().cast(pl.Int32)
    elif ttype is TargetType.COUNT:
        c, contrib = counted, pl.lit(1)
    else:
        c, contrib = counted, pl.col("_attr").fill_null(0)
    return c.select(*ORDER, contrib.cast(DEC).alias("_contrib"))


def _block_extremes(c: pl.LazyFrame, window_type: str, days: int) -> pl.LazyFrame:
    """Sum over blocks of `days` days (from the window's start) of each block's MIN or MAX."""
    block = ((pl.col("_date") - pl.col("start_date")).dt.total_days().floordiv(max(days, 1))).alias(
        "_block"
    )
    c = c.with_columns(block)
    over = [*KEYS, "_block"]
    extreme = (
        pl.col("_attr").cum_max() if window_type.upper() == "MAX" else pl.col("_attr").cum_min()
    )
    c = c.with_columns(extreme.over(over).alias("_run"))
    c = c.with_columns(pl.col("_run").forward_fill().over(over).alias("_run"))
    prev = pl.col("_run").shift(1).over(over)
    contrib = (
        pl.when(pl.col("_run").is_null())
        .then(pl.lit(0).cast(DEC))
        .when(prev.is_null())
        .then(pl.col("_run"))
        .otherwise(pl.col("_run") - prev)
    )
    return c.select(*ORDER, contrib.cast(DEC).alias("_contrib"))


def progress(
    base: pl.LazyFrame, contributions: pl.LazyFrame, by_window: pl.Expr | None = None
) -> pl.LazyFrame:
    """Join a target's windows (``base``: ``_cust, _win, target_value, _balance`` and window
    columns) with its contributions into value / achieved / achieved_at / last_activity_at.

    `by_window` may give the target value as an expression of ``_win`` alone, when values and
    balances do not depend on the customer (no enrolment rows): then no record is joined with
    its customer's window row before aggregation.

    One pass over the records sorted by (customer, window, time): running values by segment
    sums, then the last row of each window carries its measure, last activity and the first
    instant the target was reached, so no group_by is needed.
    """
    if by_window is None:
        rows = contributions.join(
            base.select(*KEYS, "target_value", "_balance"), on=KEYS, how="inner"
        )
    else:
        rows = contributions.with_columns(
            by_window.cast(DEC).alias("target_value"), pl.lit(0).cast(DEC).alias("_balance")
        )
    hit = (pl.col("_running") >= pl.col("target_value")).fill_null(False)
    first_hit = hit & (sorted_cum_sum(hit.cast(pl.Int32), KEYS) == 1)
    last = (
        (pl.col("_cust") != pl.col("_cust").shift(-1))
        | (pl.col("_win") != pl.col("_win").shift(-1))
    ).fill_null(True)
    reached_us = sorted_cum_sum(
        pl.when(first_hit).then(pl.col("_ts").dt.epoch("us")).otherwise(0), KEYS
    )
    ever_hit = sorted_cum_sum(first_hit.cast(pl.Int32), KEYS) > 0
    agg = (
        rows.sort(ORDER)
        .with_columns(
            (pl.col("_balance") + sorted_cum_sum(pl.col("_contrib"), KEYS)).alias("_running")
        )
        .with_columns(reached_us.alias("_reached_us"), ever_hit.alias("_ever"), last.alias("_last"))
        .filter(pl.col("_last"))
        .select(
            *KEYS,
            (pl.col("_running") - pl.col("_balance")).alias("_measure"),
            pl.col("_ts").alias("last_activity_at"),
            pl.when(pl.col("_ever"))
            .then(pl.from_epoch(pl.col("_reached_us"), time_unit="us").dt.replace_time_zone("UTC"))
            .alias("_reached"),
        )
    )
    value = (pl.col("_balance") + pl.col("_measure").fill_null(0)).cast(DEC)
    achieved = (
        pl.col("target_value").is_not_null() & (pl.col("value") >= pl.col("target_value"))
    ).fill_null(False)
    # No record was needed when the opening balance already meets the target (SPEC §13).
    needed = pl.col("_balance") < pl.col("target_value")
    return (
        base.join(agg, on=KEYS, how="left")
        .with_columns(value.alias("value"))
        .with_columns(achieved.alias("achieved"))
        .with_columns(
            pl.when(pl.col("achieved") & needed)
            .then(pl.col("_reached"))
            .otherwise(None)
            .alias("achieved_at")
        )
    )
