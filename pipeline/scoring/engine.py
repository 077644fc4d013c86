"""The scoring entry point: every group, enrolled customer, target and window (SPEC §5-§8).

`score` loops over groups and targets only; every step inside is a polars lazy plan over all
customers at once. A group whose rule names a missing column (or that fails in any expected way)
is recorded in `ScoreResult.failures` and the other groups still run.
"""
# The result shapes and `combine` are imported from their modules and re-exported here.

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from datetime import date

import polars as pl

from pipeline.config import Config
from pipeline.definitions.model import (
    EvaluationType,
    Group,
    Target,
    TargetEntity,
    TrackingType,
)
from pipeline.errors import MilestonesError
from pipeline.scoring import enrolment, kinds, measures, records, returns, windows
from pipeline.scoring.agnostic import score_agnostic
from pipeline.scoring.combine import combine
from pipeline.scoring.context import DEC, KEYS, LOCAL_TS, UTC_TS, GroupContext
from pipeline.scoring.results import (
    TABLES,
    GroupScore,
    ScoreResult,
)
from pipeline.scoring.sharing import SHAREABLE, SharedMeasures, measure_key


def score(
    sources: Mapping[str, pl.LazyFrame],
    groups: list[Group],
    as_of: date,
    config: Config,
    *,
    shared: SharedMeasures | None = None,
    workers: int = 1,
) -> ScoreResult:
    """Score `groups` as of day `as_of` from the export frames in `sources`.

    Groups with the same targets and windows are measured once (`pipeline.scoring.sharing`);
    a caller scoring one group per call passes one `plan_sharing` result to every call.
    `workers` > 1 scores groups in that many threads (`score_each`); the result is the same.
    """
    scored = sorted(_scored([sources], groups, as_of, config, shared, workers),
                    key=lambda p: p[0])
    return merge_results([part for _, part in scored])


def score_each(
    sources: Mapping[str, pl.LazyFrame],
    groups: list[Group],
    as_of: date,
    config: Config,
    *,
    shared: SharedMeasures | None = None,
    workers: int = 1,
) -> Iterator[ScoreResult]:
    """One result per group, so a caller can write each and drop it.

    With `workers` > 1 the groups are scored in that many threads, at most that many at a time:
    much of a group's scoring is single-threaded polars work (sorts, running sums, gathers), so
    a second group uses the core the first leaves idle. A group that takes another's measured
    rows (`sharing`) is scored right after it, in the same thread. The order of the results is
    not the order of `groups`.
    """
    for _, part in _scored([sources], groups, as_of, config, shared, workers):
        yield part


SCORING_THREADS = 2


def default_workers() -> int:
    """Threads the local engine scores groups in: 2 (about 1.3-1.6x faster than 1 on 2 cores);
    more would multiply the memory of groups in flight for little gain on small machines."""
    return max(1, min(SCORING_THREADS, os.cpu_count() or 1))


def merge_results(parts: Iterable[ScoreResult]) -> ScoreResult:
    """Results of several groups as one: tables and rewards concatenated in the given order."""
    result = ScoreResult()
    tables: dict[str, list[pl.DataFrame]] = {name: [] for name in TABLES}
    rewards: list[pl.DataFrame] = []
    for part in parts:
        result.groups.extend(part.groups)
        result.failures.update(part.failures)
        for name, frame in part.tables.items():
            tables.setdefault(name, []).append(frame)
        rewards.append(part.rewards)
    for name, frames in tables.items():
        frames = [f for f in frames if f.height]
        result.tables[name] = (
            pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
        )
    rewards = [f for f in rewards if f.height]
    result.rewards = pl.concat(rewards, how="vertical_relaxed") if rewards else pl.DataFrame()
    return result


def score_pieces(
    pieces: Sequence[Mapping[str, pl.LazyFrame]],
    groups: list[Group],
    as_of: date,
    config: Config,
    *,
    workers: int = 1,
) -> Iterator[ScoreResult]:
    """`score_each` over several customer shards at once: every chain of every piece is a job
    for the `workers` threads. Why: a programme with fewer chains than threads leaves a core
    idle when scored piece after piece; split into as many pieces, it keeps both busy."""
    for _, part in _scored(pieces, groups, as_of, config, None, workers):
        yield part


def _scored(
    pieces: Sequence[Mapping[str, pl.LazyFrame]],
    groups: list[Group],
    as_of: date,
    config: Config,
    shared: SharedMeasures | None,
    workers: int,
) -> Iterator[tuple[int, ScoreResult]]:
    """(position in `groups`, its result) for every group of every piece (customer shard),
    chain by chain (see `_chains`): a chain of one piece is one job. `shared` is a caller's
    sharing plan for a single piece; None plans each piece."""
    jobs: list[tuple[float, Callable[[], list[tuple[int, ScoreResult]]]]] = []
    for sources in pieces:
        plan = shared if shared is not None else plan_sharing(sources, groups, as_of, config)
        for chain in _chains(sources, groups, as_of, config):
            cost = sum(_estimated_cost(g) for _, g in chain)
            jobs.append((cost, _chain_job(sources, chain, as_of, config, plan)))
    if workers > 1:
        # Longest first, so that the last job to start is a short one and neither thread
        # idles long at the end (the results are in `groups`' order anyway: see `score`).
        jobs.sort(key=lambda job: job[0], reverse=True)
    if workers <= 1 or len(jobs) < 2:
        for _, job in jobs:
            yield from job()
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="milestones-score")
    try:
        pending: set[Future[list[tuple[int, ScoreResult]]]] = set()
        for _, job in jobs:
            if len(pending) < workers:
                pending.add(pool.submit(job))
                continue
            # At most `workers` chains in flight: wait for whichever finishes (a long chain
            # holds no thread idle), start the next before handing the results over, so that
            # no thread idles while the caller writes them (a run stages each part to Parquet).
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            pending.add(pool.submit(job))
            for future in done:
                yield from future.result()
        for future in as_completed(pending):
            yield from future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chain_job(
    sources: Mapping[str, pl.LazyFrame],
    chain: list[tuple[int, Group]],
    as_of: date,
    config: Config,
    plan: SharedMeasures,
) -> Callable[[], list[tuple[int, ScoreResult]]]:
    """Scoring one chain: its groups in order, in one thread (a later one takes the measured
    rows of an earlier one)."""
    return lambda: [(i, _score_one(sources, g, as_of, config, plan)) for i, g in chain]


def chain_count(
    sources: Mapping[str, pl.LazyFrame], groups: list[Group], as_of: date, config: Config
) -> int:
    """How many chains (`_chains`) `groups` make: at most that many threads can score them."""
    return len(_chains(sources, groups, as_of, config))


def _chains(
    sources: Mapping[str, pl.LazyFrame], groups: list[Group], as_of: date, config: Config
) -> list[list[tuple[int, Group]]]:
    """Groups in chains: each group that shares measured rows follows the first group with the
    same measure; every other group is a chain of its own. Chains keep `groups`' order."""
    chains: list[list[tuple[int, Group]]] = []
    by_key: dict[Hashable, list[tuple[int, Group]]] = {}
    for i, group in enumerate(groups):
        try:
            key = _share_key(GroupContext(group, as_of, config, sources))
        except MilestonesError:
            key = None  # the group fails when it is scored
        if key is not None and key in by_key:
            by_key[key].append((i, group))
            continue
        chain = [(i, group)]
        chains.append(chain)
        if key is not None:
            by_key[key] = chain
    return chains


# Relative cost of a target's records, for ordering groups only (line items: ~2 per bill).
_ENTITY_COST = {TargetEntity.LINEITEM: 2.0, TargetEntity.EVENT: 0.5}


def _estimated_cost(group: Group) -> float:
    """A rough relative cost of scoring `group`: records read, more for per-customer windows
    and for the kinds that add a pass of their own. Only the order of the costs matters."""
    records = sum(_ENTITY_COST.get(t.entity, 1.0) for t in group.targets)
    per_customer = group.evaluation_type is not EvaluationType.FIXED
    extra = group.tracking_type in (TrackingType.STREAK, TrackingType.CAPPING)
    return records * (1.5 if per_customer else 1.0) + (0.5 if extra else 0.0)


def _score_one(
    sources: Mapping[str, pl.LazyFrame],
    group: Group,
    as_of: date,
    config: Config,
    shared: SharedMeasures,
) -> ScoreResult:
    """One group's result (its failure message instead when it fails in an expected way)."""
    result = ScoreResult(groups=[group.name])
    ctx = GroupContext(group, as_of, config, sources, frames=shared.frames)
    try:
        key = _share_key(ctx)
        reused = shared.take(key, ctx)
        if reused is None:
            scored = score_group(ctx)
            shared.keep(key, group, scored)
        else:
            scored = GroupScore(progress=reused[0], achievements=reused[1])
            kinds.apply(ctx, scored, None)
    except MilestonesError as exc:
        result.failures[group.name] = exc.message
        return result
    result.tables = {
        "target_progress": scored.progress,
        "period_achievements": scored.achievements,
        **scored.extra,
    }
    rewards = [f for f in scored.rewards if f.height]
    result.rewards = pl.concat(rewards, how="vertical_relaxed") if rewards else pl.DataFrame()
    return result


def plan_sharing(
    sources: Mapping[str, pl.LazyFrame], groups: list[Group], as_of: date, config: Config
) -> SharedMeasures:
    """Which of `groups` can share measured rows, and which derived frames several of their
    targets read (pass the result to each `score` call)."""
    shared = SharedMeasures()
    for group in groups:
        ctx = GroupContext(group, as_of, config, sources)
        try:
            key = _share_key(ctx)
        except MilestonesError:
            continue  # the group fails when it is scored
        if key is not None and key in shared.wanted:
            shared.expect(key)  # takes an earlier group's rows: reads no records itself
            continue
        shared.expect(key)
        for target in group.targets:
            for frame in records.derived_frames(ctx, target):
                shared.frames.expect(frame)
    return shared


def _share_key(ctx: GroupContext) -> Hashable | None:
    g = ctx.group
    if g.evaluation_type is EvaluationType.PERIOD_AGNOSTIC or g.tracking_type not in SHAREABLE:
        return None  # no enrolment lookup needed to know
    return measure_key(ctx, enrolment.has_rows(ctx))


def score_group(ctx: GroupContext) -> GroupScore:
    """One group: measure each target per customer and window, then its group kind's logic."""
    if ctx.group.evaluation_type is EvaluationType.PERIOD_AGNOSTIC:
        return score_agnostic(ctx)
    plan = group_plan(ctx)
    frames = [target_frame(ctx, plan, t) for t in ctx.group.targets]
    progress = pl.concat(frames, how="vertical_relaxed")
    achievements = combine(ctx, progress, frames)
    out = GroupScore(progress=progress, achievements=achievements)
    kinds.apply(ctx, out, plan)
    return out


# --- records and windows -------------------------------------------------------------------


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
    """Each target's qualifying regular records. Targets over the same records (entity, event,
    rule, filters) that do not read the measured attribute (COUNT, VISIT) take the frame of one
    that does, the same object, so it is read and collected once ("spend 500 and 5 bills")."""
    frames: dict[int, pl.LazyFrame] = {}
    by_records: dict[Hashable, pl.LazyFrame] = {}
    # Targets that read the attribute first: a COUNT or VISIT target then finds their frame.
    for t in sorted(ctx.group.targets, key=lambda t: not measures.reads_attribute(t)):
        key = _records_key(t)
        if not measures.reads_attribute(t) and key in by_records:
            frames[t.target_id] = by_records[key]
            continue
        frames[t.target_id] = records.limit(
            records.regular_records(ctx, t, passing_only=True), ctx
        ).filter(pl.col("_pass"))
        by_records.setdefault(key, frames[t.target_id])
    return {t.target_id: frames[t.target_id] for t in ctx.group.targets}


def _collect_each(
    frames: dict[int, pl.LazyFrame], plan: Callable[[pl.LazyFrame], pl.LazyFrame]
) -> dict[int, pl.LazyFrame]:
    """`plan(frame)` collected for each target; targets sharing a frame share the result."""
    done: dict[int, pl.LazyFrame] = {}
    for frame in frames.values():
        if id(frame) not in done:
            done[id(frame)] = plan(frame).collect().lazy()
    return {tid: done[id(frame)] for tid, frame in frames.items()}


def _records_key(target: Target) -> Hashable:
    return (target.entity, target.event_name, target.rule, target.filters)


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
        distinct = {id(c): c for c in counted.values()}.values()  # targets may share a frame
        custs = pl.concat([c.select("_cust") for c in distinct]).unique()
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
    with_returns = records.has_returns(ctx, target)
    contribs, in_order = measures.contributions(
        counted.collect(), target, record_keys=with_returns
    )
    if with_returns:
        # Collected once: `placed_returns` reads them several times (known, parentless, the
        # parents), and polars would run the whole plan for each (~0.3 s of 0.45 at 5 M bills).
        rets = records.return_records(ctx, target, passing_only=True, named=True)
        rets = records.limit(rets, ctx).collect().lazy()
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
    return measures.progress(base.collect(), contribs, in_order=in_order, select=[
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
    ])


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
    if ctx.group.evaluation_type is EvaluationType.CYCLIC:
        # Read twice, by the cycles' anchors and by `assign`: computed once.
        qualifying = _collect_each(qualifying, lambda q: q)
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
    counted = _collect_each(qualifying, lambda q: lay.assign(q, ctx))
    return GroupPlan(
        layout=lay,
        counted=counted,
        base=base_rows(ctx, lay, counted).collect().lazy(),
        enrolled_rows=enrolment.has_rows(ctx),
    )
