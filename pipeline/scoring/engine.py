"""The scoring entry point: every group, enrolled customer, target and window (SPEC §5-§8).

`score` loops over groups and targets only; every step inside is a polars lazy plan over all
customers at once. A group whose rule names a missing column (or that fails in any expected way)
is recorded in `ScoreResult.failures` and the other groups still run.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from pipeline.config import Config
from pipeline.definitions.model import EvaluationType, Group, Target, TrackingType
from pipeline.errors import MilestonesError
from pipeline.scoring import enrolment, measures, records, returns, windows
from pipeline.scoring.context import DEC, KEYS, LOCAL_TS, UTC_TS, GroupContext, sorted_cum_sum
from pipeline.scoring.sharing import SHAREABLE, SharedMeasures, measure_key

TARGET_PROGRESS = [
    "group_id",
    "target_id",
    "customer_id",
    "period_index",
    "ref_code",
    "window_start",
    "window_end",
    "status",
    "value",
    "target_value",
    "achieved",
    "achieved_at",
    "last_activity_at",
]
PERIOD_ACHIEVEMENTS = [
    "group_id",
    "customer_id",
    "period_index",
    "ref_code",
    "window_start",
    "window_end",
    "status",
    "achieved",
    "achieved_at",
    "targets_achieved",
    "targets_total",
]
TABLES = (
    "target_progress",
    "period_achievements",
    "streak_runs",
    "streak_progress",
    "capping",
    "capping_adjustments",
    "leaderboard",
)


@dataclass
class ScoreResult:
    """Everything one scoring pass produced; nothing is written anywhere yet."""

    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    rewards: pl.DataFrame = field(default_factory=pl.DataFrame)
    failures: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


@dataclass
class GroupScore:
    progress: pl.DataFrame
    achievements: pl.DataFrame
    extra: dict[str, pl.DataFrame] = field(default_factory=dict)
    rewards: list[pl.DataFrame] = field(default_factory=list)


def score(
    sources: Mapping[str, pl.LazyFrame],
    groups: list[Group],
    as_of: date,
    config: Config,
    *,
    shared: SharedMeasures | None = None,
) -> ScoreResult:
    """Score `groups` as of day `as_of` from the export frames in `sources`.

    Groups with the same targets and windows are measured once (`pipeline.scoring.sharing`);
    a caller scoring one group per call passes one `plan_sharing` result to every call.
    """
    if shared is None:
        shared = plan_sharing(sources, groups, as_of, config)
    result = ScoreResult()
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in TABLES}
    reward_parts: list[pl.DataFrame] = []
    for group in groups:
        result.groups.append(group.name)
        ctx = GroupContext(group=group, as_of=as_of, config=config, sources=sources)
        try:
            key = _share_key(ctx)
            reused = shared.take(key, ctx)
            if reused is None:
                scored = score_group(ctx)
                shared.keep(key, group, scored)
            else:
                scored = GroupScore(progress=reused[0], achievements=reused[1])
                from pipeline.scoring import kinds

                kinds.apply(ctx, scored, None)
        except MilestonesError as exc:
            result.failures[group.name] = exc.message
            continue
        parts["target_progress"].append(scored.progress)
        parts["period_achievements"].append(scored.achievements)
        for name, frame in scored.extra.items():
            parts[name].append(frame)
        reward_parts.extend(scored.rewards)
    for name, frames in parts.items():
        frames = [f for f in frames if f.height]
        result.tables[name] = (
            pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
        )
    reward_parts = [f for f in reward_parts if f.height]
    result.rewards = (
        pl.concat(reward_parts, how="vertical_relaxed") if reward_parts else pl.DataFrame()
    )
    return result


def plan_sharing(
    sources: Mapping[str, pl.LazyFrame], groups: list[Group], as_of: date, config: Config
) -> SharedMeasures:
    """Which of `groups` can share measured rows (pass the result to each `score` call)."""
    shared = SharedMeasures()
    for group in groups:
        try:
            shared.expect(_share_key(GroupContext(group, as_of, config, sources)))
        except MilestonesError:
            continue  # the group fails when it is scored
    return shared


def _share_key(ctx: GroupContext) -> Hashable | None:
    g = ctx.group
    if g.evaluation_type is EvaluationType.PERIOD_AGNOSTIC or g.tracking_type not in SHAREABLE:
        return None  # no enrolment lookup needed to know
    return measure_key(ctx, enrolment.has_rows(ctx))


def score_group(ctx: GroupContext) -> GroupScore:
    """One group: measure each target per customer and window, then its group kind's logic."""
    if ctx.group.evaluation_type is EvaluationType.PERIOD_AGNOSTIC:
        from pipeline.scoring.agnostic import score_agnostic

        return score_agnostic(ctx)
    plan = group_plan(ctx)
    frames = [target_frame(ctx, plan, t) for t in ctx.group.targets]
    progress = pl.concat(frames, how="vertical_relaxed")
    achievements = combine(ctx, progress, frames)
    out = GroupScore(progress=progress, achievements=achievements)
    from pipeline.scoring import kinds

    kinds.apply(ctx, out, plan)
    return out


# --- records and windows -------------------------------------------------------------------


def _limit(frame: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    """Records up to the end of D, with their local date, inside enrolment."""
    frame = frame.filter(pl.col("_ts") < pl.lit(ctx.end_of_as_of).cast(UTC_TS))
    frame = frame.with_columns(ctx.local_date(pl.col("_ts")).alias("_date"))
    return enrolment.restrict_to_enrolment(frame, ctx)


@dataclass
class Layout:
    """The group's windows and how to place records in them."""

    windows: pl.LazyFrame  # per customer (CYCLIC) or shared (FIXED), with bounds and status
    per_customer: bool
    anchors: pl.LazyFrame | None = None

    def assign(self, frame: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
        if self.per_customer:
            assert self.anchors is not None
            return windows.assign_cycles(frame, self.windows, self.anchors, ctx)
        return windows.assign_fixed(frame, ctx)

    def assign_next(self, frame: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
        if self.per_customer:
            assert self.anchors is not None
            return windows.assign_cycles(frame, self.windows, self.anchors, ctx, offset=1)
        return windows.assign_next_fixed(frame, ctx)


def _qualifying(ctx: GroupContext) -> dict[int, pl.LazyFrame]:
    return {
        t.target_id: _limit(records.regular_records(ctx, t), ctx).filter(pl.col("_pass"))
        for t in ctx.group.targets
    }


def layout(ctx: GroupContext, qualifying: dict[int, pl.LazyFrame]) -> Layout:
    if ctx.group.evaluation_type is EvaluationType.FIXED:
        started = windows.fixed_periods(ctx).filter(pl.col("start_date") <= pl.lit(ctx.as_of))
        return Layout(windows=started, per_customer=False)
    # CYCLIC: cycle 1 opens at the first qualifying regular record on or after the group start,
    # at or after enrolled_at, not after unenrolled_at nor D (SPEC §13).
    firsts = pl.concat([q.select("_cust", "_ts", "_date") for q in qualifying.values()])
    g = ctx.group
    if g.start_date is not None:
        firsts = firsts.filter(pl.col("_date") >= pl.lit(g.start_date))
    if g.end_date is not None:
        firsts = firsts.filter(pl.col("_date") <= pl.lit(g.end_date))
    if enrolment.is_import(ctx):
        firsts = firsts.join(enrolment.customers(ctx), on="_cust", how="inner").filter(
            pl.col("enrolled_at").is_null() | (pl.col("_ts") >= pl.col("enrolled_at"))
        )
    # Sorted: the cycles then come out in (customer, cycle) order (see `base_rows`).
    anchors = (
        (firsts.group_by("_cust").agg(pl.col("_date").min().alias("_anchor")).sort("_cust"))
        .collect()
        .lazy()
    )  # read by the cycles and by every `assign`: computed once
    cycle_frame = windows.cycles(anchors, ctx)
    if enrolment.is_import(ctx):
        cycle_frame = _drop_after_unenrolment(cycle_frame, ctx)
    return Layout(windows=cycle_frame, per_customer=True, anchors=anchors)


def _drop_after_unenrolment(frame: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    """No window starting after `unenrolled_at` is evaluated (one starting exactly then is)."""
    unenrol = enrolment.customers(ctx).select("_cust", "unenrolled_at")
    return (
        frame.join(unenrol, on="_cust", how="left")
        .filter(
            pl.col("unenrolled_at").is_null()
            | (pl.col("window_start") <= ctx.local_naive(pl.col("unenrolled_at")))
        )
        .drop("unenrolled_at")
    )


def base_rows(ctx: GroupContext, lay: Layout, counted: dict[int, pl.LazyFrame]) -> pl.LazyFrame:
    """One row per enrolled customer and started window (before target values)."""
    if lay.per_customer:
        return lay.windows
    if enrolment.is_import(ctx):
        custs = enrolment.customers(ctx).select("_cust")
    else:
        # TRANSACTION: every customer with a counted record for any target (SPEC §7).
        custs = pl.concat([c.select("_cust") for c in counted.values()]).unique()
    # Customers in order, so the grid comes out in (customer, window) order, the order
    # `measures.progress` finds rows in by a merge on sorted keys.
    rows = custs.sort("_cust").join(
        lay.windows.sort("_win"), how="cross", maintain_order="left_right"
    )
    return _drop_after_unenrolment(rows, ctx) if enrolment.is_import(ctx) else rows


def _with_balance(
    rows: pl.LazyFrame, ctx: GroupContext, *, rows_exist: bool = True
) -> pl.LazyFrame:
    """`initial_balance` goes to the first of the customer's windows not ended before
    `enrolled_at` (the first window without `enrolled_at`) (SPEC §13)."""
    if not rows_exist:
        return rows.with_columns(pl.lit(0).cast(DEC).alias("_balance")).drop("_balance_any")
    enrolled = enrolment.customers(ctx).select("_cust", "enrolled_at")
    r = rows.join(enrolled, on="_cust", how="left").with_columns(
        (
            pl.col("enrolled_at").is_null()
            | (pl.col("end_date") >= ctx.local_date(pl.col("enrolled_at")))
        ).alias("_eligible")
    )
    first = (
        r.filter(pl.col("_eligible")).group_by("_cust").agg(pl.col("_win").min().alias("_bal_win"))
    )
    return (
        r.join(first, on="_cust", how="left")
        .with_columns(
            pl.when(pl.col("_win") == pl.col("_bal_win"))
            .then(pl.col("_balance_any").fill_null(0))
            .otherwise(0)
            .cast(DEC)
            .alias("_balance")
        )
        .drop("enrolled_at", "_eligible", "_bal_win", "_balance_any")
    )


# --- one target ----------------------------------------------------------------------------


def target_frame(ctx: GroupContext, plan: GroupPlan, target: Target) -> pl.DataFrame:
    """target_progress rows of one target (collected), with SPEC §11 columns, in base order."""
    counted = plan.counted[target.target_id]
    base = enrolment.attach_target_values(plan.base, ctx, target, rows_exist=plan.enrolled_rows)
    if ctx.group.user_created:
        base = base.filter(pl.col("target_value").is_not_null())
    base = _with_balance(base, ctx, rows_exist=plan.enrolled_rows)
    ext = target.extended_field
    if ext is not None and ext.aggregate_window is not None:
        # MIN/MAX blocks are counted from the window's first day.
        keys = _win_keys(plan.layout)
        counted = counted.join(
            plan.layout.windows.select(*keys, "start_date"), on=keys, how="inner"
        )
    contribs, in_order = measures.contributions(counted.collect(), target)
    if records.has_returns(ctx, target):
        rets = _limit(records.return_records(ctx, target), ctx)
        placed = returns.placed_returns(
            ctx,
            target.entity,
            rets,
            counted.select("_bill", "_win"),
            lambda f: plan.layout.assign(f, ctx),
            lambda f: plan.layout.assign_next(f, ctx),
        )
        contribs = pl.concat([contribs, placed.collect()], how="vertical_relaxed")
        in_order = False
    prog = measures.progress(base.collect(), contribs, in_order=in_order)
    return prog.select(
        pl.lit(ctx.group.group_id, dtype=pl.Int64).alias("group_id"),
        pl.lit(target.target_id, dtype=pl.Int64).alias("target_id"),
        pl.col("_cust").alias("customer_id"),
        pl.col("_win").cast(pl.Int32).alias("period_index"),
        pl.col("ref_code").cast(pl.String),
        pl.col("window_start").cast(LOCAL_TS),
        pl.col("window_end").cast(LOCAL_TS),
        pl.col("status"),
        pl.col("value").cast(DEC),
        pl.col("target_value").cast(DEC),
        pl.col("achieved"),
        pl.col("achieved_at").cast(UTC_TS),
        pl.col("last_activity_at").cast(UTC_TS),
    )


def _win_keys(lay: Layout) -> list[str]:
    return KEYS if lay.per_customer else ["_win"]


@dataclass
class GroupPlan:
    layout: Layout
    counted: dict[int, pl.LazyFrame]
    base: pl.LazyFrame
    enrolled_rows: bool = True  # any enrolments row for the group (else lookups are skipped)


def group_plan(ctx: GroupContext) -> GroupPlan:
    """Windows, counted records per target and base rows, shared by the group's targets."""
    qualifying = _qualifying(ctx)
    lay = layout(ctx, qualifying)
    # Materialise what every target reuses: a lazy `.cache()` only dedupes inside one query,
    # and each target is its own `collect`, so the shared plans would run once per target.
    if lay.per_customer:
        assert lay.anchors is not None
        lay.windows = lay.windows.collect().lazy()
        # With its cycle count (cycles are 1..n per customer), `assign` needs no join.
        counts = lay.windows.group_by("_cust").agg(pl.col("_win").max().alias("_cycles"))
        lay.anchors = (
            lay.anchors.join(counts, on="_cust", how="left")
            .with_columns(pl.col("_cycles").fill_null(0))
            .collect()
            .lazy()
        )
    counted = {tid: lay.assign(q, ctx).collect().lazy() for tid, q in qualifying.items()}
    return GroupPlan(
        layout=lay,
        counted=counted,
        base=base_rows(ctx, lay, counted).collect().lazy(),
        enrolled_rows=enrolment.has_rows(ctx),
    )


# --- group condition -----------------------------------------------------------------------


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
