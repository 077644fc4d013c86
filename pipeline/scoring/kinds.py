"""What each group kind adds on top of measured windows (SPEC §8, §9 reward kinds).

DEFAULT and UNIFIED earn TARGET_ACHIEVED (and UNIFIED_ACHIEVED) rewards; STREAK runs and levels;
CAPPING splits points rows at the cap; leaderboards rank a DEFAULT group's windows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from pipeline.definitions.model import TrackingType
from pipeline.scoring.context import DEC, GroupContext

if TYPE_CHECKING:
    from pipeline.definitions.model import Group
    from pipeline.scoring.engine import GroupPlan
    from pipeline.scoring.results import GroupScore

REWARD_COLUMNS = [
    "kind",
    "group_id",
    "group_name",
    "name",
    "customer_id",
    "period_index",
    "ref_code",
    "window_start",
    "window_end",
    "value",
    "target_value",
    "achieved_at",
]


def apply(ctx: GroupContext, out: GroupScore, plan: GroupPlan | None) -> None:
    """Add the group kind's tables and rewards to `out` (`plan` is needed for CAPPING only)."""
    g = ctx.group
    kind = g.tracking_type
    if kind in (TrackingType.DEFAULT, TrackingType.UNIFIED):
        out.rewards.append(target_rewards(ctx, out.progress))
    if kind is TrackingType.UNIFIED:
        need = g.combination_count if g.combination_type == "ANY" else len(g.targets)
        out.rewards.append(
            out.achievements.filter(pl.col("achieved")).select(
                pl.lit("UNIFIED_ACHIEVED").alias("kind"),
                pl.col("group_id"),
                pl.lit(g.name).alias("group_name"),
                pl.lit(g.name).alias("name"),
                pl.col("customer_id"),
                pl.col("period_index"),
                pl.col("ref_code"),
                pl.col("window_start"),
                pl.col("window_end"),
                pl.col("targets_achieved").cast(DEC).alias("value"),
                pl.lit(need).cast(DEC).alias("target_value"),
                pl.col("achieved_at"),
            )
        )
    if kind is TrackingType.STREAK:
        from pipeline.scoring.streaks import streak_tables

        runs, progress, levels = streak_tables(out.achievements, g)
        out.extra["streak_runs"] = runs
        out.extra["streak_progress"] = progress
        if levels.height:
            out.rewards.append(
                levels.with_columns(
                    pl.lit("STREAK_LEVEL_ACHIEVED").alias("kind"),
                    pl.lit(g.name).alias("group_name"),
                    pl.col("value").cast(DEC),
                    pl.col("target_value").cast(DEC),
                ).select(REWARD_COLUMNS)
            )
    if kind is TrackingType.CAPPING:
        from pipeline.scoring.capping import capping_tables

        assert plan is not None, "CAPPING groups never share measured rows"
        caps, adjustments = [], []
        for t in g.targets:
            points = (
                plan.counted[t.target_id]
                .select(
                    pl.col("_cust").alias("customer_id"),
                    pl.col("_win").cast(pl.Int32).alias("period_index"),
                    pl.col("_k1").alias("points_id"),
                    pl.col("_ts").alias("awarded_at"),
                    pl.col("_attr").fill_null(0).cast(DEC).alias("points"),
                )
                .collect()
            )
            cap = out.progress.filter(pl.col("target_id") == t.target_id).select(
                "customer_id", "period_index", pl.col("target_value").alias("cap")
            )
            c, a = capping_tables(points, cap, g.group_id, t.target_id)
            caps.append(c)
            adjustments.append(a)
        out.extra["capping"] = pl.concat(caps, how="vertical_relaxed")
        out.extra["capping_adjustments"] = pl.concat(adjustments, how="vertical_relaxed")
    if g.leaderboard_enabled:
        out.extra["leaderboard"] = group_leaderboard(g, out.progress)


def group_leaderboard(g: Group, progress: pl.DataFrame) -> pl.DataFrame:
    """Leaderboard rows of one group from its target_progress rows: every customer with a
    counted record, per target and window (the Dask driver re-ranks merged shards with this)."""
    from pipeline.scoring.leaderboard import leaderboard_table

    boards = []
    for t in g.targets:
        rows = progress.filter(
            (pl.col("group_id") == g.group_id)
            & (pl.col("target_id") == t.target_id)
            & pl.col("last_activity_at").is_not_null()
        ).select("customer_id", "period_index", "value", "last_activity_at")
        boards.append(leaderboard_table(rows, g.group_id, t.target_id))
    return pl.concat(boards, how="vertical_relaxed")


def target_rewards(ctx: GroupContext, progress: pl.DataFrame) -> pl.DataFrame:
    """TARGET_ACHIEVED: one per achieved target window (DEFAULT, UNIFIED, PERIOD_AGNOSTIC)."""
    names = pl.DataFrame(
        {
            "target_id": [t.target_id for t in ctx.group.targets],
            "name": [t.name for t in ctx.group.targets],
        },
        schema={"target_id": pl.Int64, "name": pl.String},
    )
    return (
        progress.filter(pl.col("achieved"))
        .join(names, on="target_id", how="left")
        .with_columns(
            pl.lit("TARGET_ACHIEVED").alias("kind"),
            pl.lit(ctx.group.name).alias("group_name"),
        )
        .select(REWARD_COLUMNS)
    )
