"""PERIOD_AGNOSTIC groups (SPEC §5, §13): per customer, a cycle closes at the record that reaches
the target; the next qualifying record opens the next cycle; nothing carries over.

Where a cycle ends depends on where the previous one ended, so cycles are found one at a time:
the loop is over cycle numbers (at most 100), and each pass is vectorised over every customer and
record still unassigned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from pipeline.definitions.model import TargetEntity, TargetType
from pipeline.scoring import enrolment, records
from pipeline.scoring.context import DEC, LOCAL_TS, UTC_TS, GroupContext

if TYPE_CHECKING:
    from pipeline.scoring.engine import GroupScore

ORDER = ["_cust", "_ts", "_k1", "_k2"]


def _stream(ctx: GroupContext) -> pl.DataFrame:
    """The target's counted regular records and returns, in time order (ties by record key)."""
    from pipeline.scoring.engine import _limit

    g = ctx.group
    target = g.targets[0]
    reg = _limit(records.regular_records(ctx, target), ctx).filter(pl.col("_pass"))
    if g.start_date is not None:
        reg = reg.filter(pl.col("_date") >= pl.lit(g.start_date))
    if g.end_date is not None:
        reg = reg.filter(pl.col("_date") <= pl.lit(g.end_date))
    cols = ["_cust", "_ts", "_k1", "_k2", "_date", "_bill", "_amount", "_regular"]
    reg = reg.with_columns(pl.col("_attr").alias("_amount"), pl.lit(True).alias("_regular")).select(
        cols
    )
    parts = [reg]
    if records.has_returns(ctx, target):
        rets = _limit(records.return_records(ctx, target), ctx)
        if g.start_date is not None:
            rets = rets.filter(pl.col("_date") >= pl.lit(g.start_date))
        if g.end_date is not None:
            rets = rets.filter(pl.col("_date") <= pl.lit(g.end_date))
        bills = reg.select(pl.col("_bill").alias("_parent")).unique()
        known = rets.filter(pl.col("_parent").is_not_null())
        if target.entity is TargetEntity.LINEITEM:
            known = known.filter(pl.col("_rule"))
        known = known.join(bills, on="_parent", how="inner")
        parentless = rets.filter(pl.col("_parent").is_null() & pl.col("_pass"))
        for r in (known, parentless):
            parts.append(
                r.with_columns(
                    pl.col("_k1").alias("_bill"),
                    (-pl.col("_red")).alias("_amount"),
                    pl.lit(False).alias("_regular"),
                ).select(cols)
            )
    return pl.concat(parts, how="vertical_relaxed").sort(ORDER).collect()


def _contribution(target_type: TargetType, entity: TargetEntity, ext_window: bool) -> pl.Expr:
    """Per-record contribution within one cycle (rows of that cycle, in order)."""
    if target_type is TargetType.VISIT:
        return (
            (pl.col("_regular") & pl.col("_date").is_first_distinct().over("_cust"))
            .cast(pl.Int32)
            .cast(DEC)
        )
    if target_type is TargetType.COUNT:
        if entity is TargetEntity.LINEITEM:
            return (
                (pl.col("_regular") & pl.col("_bill").is_first_distinct().over("_cust"))
                .cast(pl.Int32)
                .cast(DEC)
            )
        return pl.col("_regular").cast(pl.Int32).cast(DEC)
    return pl.col("_amount").fill_null(0).cast(DEC)


def _cycle_targets(ctx: GroupContext, custs: pl.DataFrame, k: int) -> pl.DataFrame:
    base = custs.lazy().with_columns(
        pl.lit(k, dtype=pl.Int32).alias("_win"), pl.lit(None, dtype=pl.String).alias("ref_code")
    )
    rows = enrolment.attach_target_values(base, ctx, ctx.group.targets[0])
    return (
        rows.with_columns(
            (pl.col("_balance_any").fill_null(0) if k == 1 else pl.lit(0))
            .cast(DEC)
            .alias("_balance")
        )
        .drop("_balance_any")
        .collect()
    )


def score_agnostic(ctx: GroupContext) -> GroupScore:
    from pipeline.scoring import kinds
    from pipeline.scoring.engine import GroupScore, combine

    g = ctx.group
    target = g.targets[0]
    stream = _stream(ctx)
    contribution = _contribution(target.type, target.entity, False)
    remaining = stream
    cycles: list[pl.DataFrame] = []
    for k in range(1, g.max_cycles + 1):
        if remaining.height == 0:
            break
        # The cycle opens at the customer's first remaining regular record; earlier returns
        # find no open cycle and are dropped.
        opened = remaining.with_columns(pl.col("_regular").cum_sum().over("_cust").alias("_seen"))
        opened = opened.filter(pl.col("_seen") > 0).drop("_seen")
        if opened.height == 0:
            break
        custs = opened.select("_cust").unique()
        tv = _cycle_targets(ctx, custs, k)
        if g.user_created:
            tv = tv.filter(pl.col("target_value").is_not_null())
        cur = opened.join(tv.select("_cust", "target_value", "_balance"), on="_cust", how="inner")
        cur = cur.with_columns(contribution.alias("_contrib"))
        cur = cur.with_columns(
            (pl.col("_balance") + pl.col("_contrib").cum_sum().over("_cust")).alias("_running")
        )
        reached = pl.col("target_value").is_not_null() & (
            pl.col("_running") >= pl.col("target_value")
        )
        # Rows up to and including the first that reaches the target belong to this cycle.
        cur = cur.with_columns(
            (reached.cast(pl.Int32).cum_sum().over("_cust") - reached.cast(pl.Int32)).alias(
                "_before"
            )
        )
        in_cycle = cur.filter(pl.col("_before") == 0)
        cycles.append(
            in_cycle.group_by("_cust").agg(
                pl.lit(k, dtype=pl.Int32).alias("_win"),
                pl.col("_ts").first().alias("_open"),
                pl.col("_ts").filter(reached).first().alias("_close"),
                pl.col("_ts").max().alias("last_activity_at"),
                pl.col("_contrib").sum().alias("_measure"),
                pl.col("target_value").first(),
                pl.col("_balance").first(),
            )
        )
        remaining = cur.filter(pl.col("_before") > 0).select(stream.columns)
    progress = _progress_rows(ctx, cycles, target.target_id)
    out = GroupScore(progress=progress, achievements=combine(ctx, progress))
    out.rewards.append(kinds.target_rewards(ctx, progress))
    return out


def _progress_rows(ctx: GroupContext, cycles: list[pl.DataFrame], target_id: int) -> pl.DataFrame:
    from pipeline.scoring.engine import TARGET_PROGRESS

    if not cycles:
        frame = pl.DataFrame(
            schema={
                "_cust": pl.Int64,
                "_win": pl.Int32,
                "_open": UTC_TS,
                "_close": UTC_TS,
                "last_activity_at": UTC_TS,
                "_measure": DEC,
                "target_value": DEC,
                "_balance": DEC,
            }
        )
    else:
        frame = pl.concat(cycles, how="vertical_relaxed")
    closed = pl.col("_close").is_not_null()
    return (
        frame.select(
            pl.lit(ctx.group.group_id, dtype=pl.Int64).alias("group_id"),
            pl.lit(target_id, dtype=pl.Int64).alias("target_id"),
            pl.col("_cust").alias("customer_id"),
            pl.col("_win").cast(pl.Int32).alias("period_index"),
            pl.lit(None, dtype=pl.String).alias("ref_code"),
            ctx.local_naive(pl.col("_open").cast(UTC_TS)).cast(LOCAL_TS).alias("window_start"),
            ctx.local_naive(pl.col("_close").cast(UTC_TS)).cast(LOCAL_TS).alias("window_end"),
            pl.when(closed).then(pl.lit("ENDED")).otherwise(pl.lit("RUNNING")).alias("status"),
            (pl.col("_balance") + pl.col("_measure")).cast(DEC).alias("value"),
            pl.col("target_value").cast(DEC),
            closed.alias("achieved"),
            pl.col("_close").cast(UTC_TS).alias("achieved_at"),
            pl.col("last_activity_at").cast(UTC_TS),
        )
        .sort("customer_id", "period_index")
        .select(TARGET_PROGRESS)
    )
