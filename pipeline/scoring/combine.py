"""The group condition (SPEC §8): a window is achieved when ALL its targets are, or ANY n.

`combine` turns a group's `target_progress` rows into its `period_achievements` rows; the DEFAULT,
STREAK, CAPPING, UNIFIED and PERIOD_AGNOSTIC paths all use it.
"""

from __future__ import annotations

import polars as pl

from pipeline.definitions.model import TrackingType
from pipeline.scoring.context import LOCAL_TS, UTC_TS, GroupContext, sorted_cum_sum
from pipeline.scoring.results import PERIOD_ACHIEVEMENTS


def combine(
    ctx: GroupContext, progress: pl.DataFrame, parts: list[pl.DataFrame] | None = None
) -> pl.DataFrame:
    """period_achievements: ALL (DEFAULT, STREAK, CAPPING, UNIFIED ALL) or ANY n (SPEC §8).

    `parts`, when given, are `progress` per target; when they hold the same (customer, window)
    rows in the same order (every target measured on the group's one grid, as `score_group`
    makes them), the targets are combined row by row instead of by a group_by.
    """
    g = ctx.group
    total = len(g.targets)
    need = (
        g.combination_count
        if (g.tracking_type is TrackingType.UNIFIED and g.combination_type == "ANY")
        else total
    )
    keys = ["customer_id", "period_index", "ref_code", "window_start", "window_end", "status"]
    if progress.height == 0:
        cust = progress.schema.get("customer_id", pl.Int64)
        return pl.DataFrame(
            schema={
                "group_id": pl.Int64,
                "customer_id": cust,
                "period_index": pl.Int32,
                "ref_code": pl.String,
                "window_start": LOCAL_TS,
                "window_end": LOCAL_TS,
                "status": pl.String,
                "achieved": pl.Boolean,
                "achieved_at": UTC_TS,
                "targets_achieved": pl.Int32,
                "targets_total": pl.Int32,
            }
        )
    if total > 1 and parts is not None and _aligned(parts):
        return _combine_aligned(g.group_id, parts, need)
    if total == 1:
        # One target: the window's condition is the target's; no grouping needed.
        agg = progress.select(
            *keys,
            pl.col("achieved").cast(pl.Int32).alias("targets_achieved"),
            pl.col("achieved_at").alias("_nth"),
        )
    else:
        # Group on the two narrow keys only; the window columns follow them.
        by = ["customer_id", "period_index"]
        agg = progress.group_by(by).agg(
            *(pl.col(k).first() for k in keys[2:]),
            pl.col("achieved").sum().cast(pl.Int32).alias("targets_achieved"),
            # ALL: the last achievement (nulls, "no record needed", are the earliest).
            pl.col("achieved_at").max().alias("_nth"),
        )
        if need < total:
            # ANY n: the n-th earliest achievement, by a counter over sorted rows.
            nth = (
                progress.filter(pl.col("achieved"))
                .sort([*by, "achieved_at"], nulls_last=False)
                .with_columns(
                    sorted_cum_sum(pl.repeat(1, pl.len(), dtype=pl.Int32), by).alias("_n")
                )
                .filter(pl.col("_n") == need)
                .select(*by, pl.col("achieved_at").alias("_nth"))
            )
            agg = agg.drop("_nth").join(nth, on=by, how="left")
    achieved = pl.col("targets_achieved") >= need
    return agg.select(
        pl.lit(g.group_id, dtype=pl.Int64).alias("group_id"),
        *keys,
        achieved.alias("achieved"),
        pl.when(achieved).then(pl.col("_nth")).otherwise(None).cast(UTC_TS).alias("achieved_at"),
        pl.col("targets_achieved"),
        pl.lit(total, dtype=pl.Int32).alias("targets_total"),
    ).select(PERIOD_ACHIEVEMENTS)


def _aligned(parts: list[pl.DataFrame]) -> bool:
    """Whether every target's rows are the same (customer, window) rows in the same order."""
    keys = parts[0].select("customer_id", "period_index")
    return all(
        p.height == keys.height and p.select("customer_id", "period_index").equals(keys)
        for p in parts[1:]
    )


def _combine_aligned(group_id: int, parts: list[pl.DataFrame], need: int) -> pl.DataFrame:
    """`combine` on row-aligned targets: counts and instants side by side, no grouping.

    ALL: the latest achievement. ANY n: the n-th earliest among the achieved targets, where an
    achievement without an instant ("no record needed") sorts first, as in the grouped path.
    """
    total = len(parts)
    wide = parts[0].select(
        "customer_id", "period_index", "ref_code", "window_start", "window_end", "status"
    )
    wide = wide.with_columns(
        *(p["achieved"].alias(f"__a{i}") for i, p in enumerate(parts)),
        *(p["achieved_at"].alias(f"__t{i}") for i, p in enumerate(parts)),
    )
    count = pl.sum_horizontal(pl.col(f"__a{i}").cast(pl.Int32) for i in range(total))
    if need >= total:
        nth = pl.max_horizontal(pl.col(f"__t{i}") for i in range(total))
    else:
        # Achieved targets' instants as epoch µs (no instant: the smallest Int64); the n-th
        # smallest is a value with fewer than n smaller ones and at least n not larger.
        floor = pl.lit(-(2**63), dtype=pl.Int64)
        stamps = [
            pl.when(pl.col(f"__a{i}")).then(pl.coalesce(pl.col(f"__t{i}").dt.epoch("us"), floor))
            for i in range(total)
        ]
        picks = []
        for v in stamps:
            below = pl.sum_horizontal((w < v).fill_null(False).cast(pl.Int32) for w in stamps)
            upto = pl.sum_horizontal((w <= v).fill_null(False).cast(pl.Int32) for w in stamps)
            picks.append(pl.when((below < need) & (upto >= need)).then(v))
        at = pl.min_horizontal(picks)
        nth = (
            pl.when(at != floor).then(pl.from_epoch(at, time_unit="us")).dt.replace_time_zone("UTC")
        )
    achieved = pl.col("targets_achieved") >= need
    return (
        wide.lazy()
        .with_columns(count.cast(pl.Int32).alias("targets_achieved"), nth.alias("_nth"))
        .select(
            pl.lit(group_id, dtype=pl.Int64).alias("group_id"),
            "customer_id",
            "period_index",
            "ref_code",
            "window_start",
            "window_end",
            "status",
            achieved.alias("achieved"),
            pl.when(achieved)
            .then(pl.col("_nth"))
            .otherwise(None)
            .cast(UTC_TS)
            .alias("achieved_at"),
            pl.col("targets_achieved"),
            pl.lit(total, dtype=pl.Int32).alias("targets_total"),
        )
        .collect()
    )
