"""Per-record traces of one group's scoring, for `milestones explain` (SPEC §14).

The engine aggregates records into one row per customer, target and window; `explain` needs the
records themselves: which counted (with their contribution and running value, in the engine's
order) and which did not, and why. To stay one code path with the engine, every frame here comes
from the engine's own plans (`engine.group_plan`, `measures.regular_contributions`,
`returns.placed_returns`, `layout.assign`); only the *reasons* for exclusion are new, and they are
read off the same working columns (``_rule``, ``_filt``, enrolment bounds, window assignment).

Meant for one customer's sources (`pipeline.tools.explain` filters them before building the
context): nothing here is per-customer by itself, but exclusion reasons keep every record.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.definitions.model import EvaluationType, Target, TargetEntity
from pipeline.scoring import engine, enrolment, measures, records, returns
from pipeline.scoring.context import DEC, KEYS, UTC_TS, GroupContext

ORDER = measures.ORDER
RECORD = ["_k1", "_k2"]

# Why a record did not count: code -> what a programme manager reads.
REASONS: dict[str, str] = {
    "after_as_of": "dated after the as-of day",
    "not_enrolled": "customer not enrolled in the group",
    "after_unenrolment": "after the customer's unenrolment",
    "before_enrolment": "before the customer's enrolment (track_from_enrolment)",
    "outside_windows": "outside every window",
    "outside_group_dates": "outside the group's dates",
    "store_filter": "store filter",
    "rule_false": "rule false",
    "no_target_value": "window not scored for this customer (no target value)",
    "bill_not_counted": "a return whose bill did not count",
    "line_rule_false": "returned line fails the rule",
    "return_rule_or_filter": "return without a known bill fails the rule or store filter",
    "no_next_window": "carry mode: no next window has started yet",
    "no_open_cycle": "no cycle open when the return arrived",
    "after_last_cycle": "after the group's last cycle",
    "not_counted": "not counted",
}


@dataclass(frozen=True)
class TargetTrace:
    """One target's records for the traced customers.

    - ``progress``: the engine's target_progress rows of this target (one per window).
    - ``counted``: ``_cust, _win, _ts, _k1, _k2, _kind`` (REGULAR | RETURN), ``_parent``,
      ``_contrib``, ``_running`` and ``_reached`` (the record at which the target was reached),
      in the engine's order.
    - ``excluded``: ``_cust, _win`` (the window the record's date falls in, null when none),
      ``_ts, _k1, _k2, _kind, _parent`` and ``_reasons`` (codes of `REASONS`, never empty).
    """

    target: Target
    progress: pl.DataFrame
    counted: pl.DataFrame
    excluded: pl.DataFrame


@dataclass(frozen=True)
class GroupTrace:
    """The engine's result for the group and a trace per target."""

    score: engine.GroupScore
    targets: list[TargetTrace]


def trace_group(ctx: GroupContext) -> GroupTrace:
    """Score the group with the engine and trace every target's records."""
    if ctx.group.evaluation_type is EvaluationType.PERIOD_AGNOSTIC:
        return _trace_agnostic(ctx)
    scored = engine.score_group(ctx)
    plan = engine.group_plan(ctx)
    traces = [
        _trace_target(ctx, plan, t, scored.progress.filter(pl.col("target_id") == t.target_id))
        for t in ctx.group.targets
    ]
    return GroupTrace(score=scored, targets=traces)


# --- FIXED and CYCLIC ----------------------------------------------------------------------


def _trace_target(
    ctx: GroupContext, plan: engine.GroupPlan, target: Target, progress: pl.DataFrame
) -> TargetTrace:
    keys = KEYS if plan.layout.per_customer else ["_win"]
    counted = plan.counted[target.target_id]
    # The same contributions as engine.target_frame, tagged with what they are.
    windows = plan.layout.windows.select(*keys, "start_date")
    parts = [
        measures.regular_contributions(
            counted.join(windows, on=keys, how="inner"), target
        ).with_columns(pl.lit("REGULAR").alias("_kind"), pl.lit(None, pl.String).alias("_parent"))
    ]
    all_returns = None
    if records.has_returns(ctx, target):
        all_returns = records.return_records(ctx, target)
        placed = returns.placed_returns(
            ctx,
            target.entity,
            records.limit(all_returns, ctx),
            counted.select("_bill", "_win"),
            lambda f: plan.layout.assign(f, ctx),
            lambda f: plan.layout.assign_next(f, ctx),
        )
        parents = all_returns.select(*RECORD, "_parent").unique(RECORD)
        parts.append(
            placed.join(parents, on=RECORD, how="left").with_columns(
                pl.lit("RETURN").alias("_kind")
            )
        )
    cols = [*ORDER, "_kind", "_parent", "_contrib"]
    contribs = pl.concat([p.select(cols) for p in parts], how="vertical_relaxed").collect()
    with_rows, unscored = _running(contribs, progress)

    regular = records.regular_records(ctx, target)
    excluded = _excluded_regular(ctx, plan, regular, counted)
    if unscored.height:
        excluded = pl.concat(
            [
                excluded,
                _with_reason(unscored.filter(pl.col("_kind") == "REGULAR"), "no_target_value"),
            ],
            how="vertical_relaxed",
        )
    if all_returns is not None:
        excluded = pl.concat(
            [excluded, _excluded_returns(ctx, plan, target, all_returns, counted, with_rows)],
            how="vertical_relaxed",
        )
    return TargetTrace(
        target=target,
        progress=progress,
        counted=with_rows,
        excluded=excluded.sort("_ts", "_k1", "_k2"),
    )


def _running(contribs: pl.DataFrame, progress: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Running value per record, as `measures.progress` sums it: the window's opening balance
    (its value minus the contributions) plus the cumulative contributions in engine order.

    Returns the counted rows and the contributions of windows with no progress row."""
    thresholds = progress.select(
        pl.col("customer_id").alias("_cust"),
        pl.col("period_index").cast(pl.Int32).alias("_win"),
        "value",
        "target_value",
        "achieved_at",
    )
    contribs = contribs.with_columns(pl.col("_win").cast(pl.Int32))
    if contribs.height:
        contribs = contribs.with_columns(pl.col("_cust").cast(thresholds.schema["_cust"]))
    unscored = contribs.join(thresholds, on=KEYS, how="anti")
    rows = contribs.join(thresholds, on=KEYS, how="inner").sort(ORDER)
    balance = pl.col("value") - pl.col("_contrib").sum().over(KEYS)
    rows = rows.with_columns(
        (balance + pl.col("_contrib").cum_sum().over(KEYS)).cast(DEC).alias("_running")
    )
    return _mark_reached(rows), unscored


def _mark_reached(rows: pl.DataFrame) -> pl.DataFrame:
    """The first record (in order) whose running value met the target, when the engine says the
    target was achieved with a record (not by an opening balance)."""
    hit = (
        pl.col("achieved_at").is_not_null()
        & pl.col("target_value").is_not_null()
        & (pl.col("_running") >= pl.col("target_value"))
    )
    first = hit & (hit.cast(pl.Int32).cum_sum().over(KEYS) == 1)
    return rows.with_columns(first.fill_null(False).alias("_reached")).select(
        *ORDER, "_kind", "_parent", "_contrib", "_running", "_reached"
    )


def _enrolment_reasons(ctx: GroupContext, frame: pl.LazyFrame) -> tuple[pl.LazyFrame, list]:
    """Join enrolment bounds (IMPORT groups) and return the reason expressions they give."""
    reasons: list[pl.Expr] = [
        pl.when(pl.col("_ts") >= pl.lit(ctx.end_of_as_of).cast(UTC_TS)).then(pl.lit("after_as_of"))
    ]
    if not enrolment.is_import(ctx):
        return frame, reasons
    enrolled = enrolment.customers(ctx).with_columns(pl.lit(True).alias("_enrolled"))
    frame = frame.join(enrolled, on="_cust", how="left")
    reasons += [
        pl.when(pl.col("_enrolled").is_null()).then(pl.lit("not_enrolled")),
        pl.when(
            pl.col("unenrolled_at").is_not_null() & (pl.col("_ts") > pl.col("unenrolled_at"))
        ).then(pl.lit("after_unenrolment")),
    ]
    if ctx.config.track_from_enrolment:
        reasons.append(
            pl.when(
                pl.col("enrolled_at").is_not_null() & (pl.col("_ts") < pl.col("enrolled_at"))
            ).then(pl.lit("before_enrolment"))
        )
    return frame, reasons


def _reason_list(reasons: list[pl.Expr], fallback: str = "not_counted") -> pl.Expr:
    """The codes that apply, in order; `fallback` when none does."""
    listed = pl.concat_list([r.cast(pl.String) for r in reasons]).list.drop_nulls()
    return (pl.when(listed.list.len() > 0).then(listed).otherwise(pl.lit([fallback]))).alias(
        "_reasons"
    )


EXCLUDED = ["_cust", "_win", "_ts", "_k1", "_k2", "_kind", "_parent", "_reasons"]


def _excluded_regular(
    ctx: GroupContext, plan: engine.GroupPlan, regular: pl.LazyFrame, counted: pl.LazyFrame
) -> pl.DataFrame:
    """Regular records that did not count, with every reason that applies."""
    rows = (
        regular.join(counted.select(RECORD), on=RECORD, how="anti")
        .with_columns(ctx.local_date(pl.col("_ts")).alias("_date"))
        .with_row_index("_rid")
    )
    placed = plan.layout.assign(rows.select("_rid", "_cust", "_date"), ctx).select("_rid", "_win")
    rows = rows.join(placed, on="_rid", how="left")
    rows, reasons = _enrolment_reasons(ctx, rows)
    reasons += [
        pl.when(pl.col("_win").is_null()).then(pl.lit("outside_windows")),
        pl.when(~pl.col("_filt")).then(pl.lit("store_filter")),
        pl.when(~pl.col("_rule")).then(pl.lit("rule_false")),
    ]
    return (
        rows.with_columns(
            _reason_list(reasons),
            pl.lit("REGULAR").alias("_kind"),
            pl.lit(None, pl.String).alias("_parent"),
            pl.col("_win").cast(pl.Int32),
        )
        .select(EXCLUDED)
        .collect()
    )


def _with_reason(frame: pl.DataFrame, code: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit([code]).alias("_reasons")).select(EXCLUDED)


def _excluded_returns(
    ctx: GroupContext,
    plan: engine.GroupPlan,
    target: Target,
    all_returns: pl.LazyFrame,
    counted: pl.LazyFrame,
    kept: pl.DataFrame,
) -> pl.DataFrame:
    """Returns that reduced nothing, and why (SPEC §6.2, §6.3, §13 "Returns and parents")."""
    used = kept.filter(pl.col("_kind") == "RETURN").select(RECORD).lazy()
    bills = counted.select(pl.col("_bill").alias("_parent"), pl.lit(True).alias("_bill_counted"))
    rows = (
        all_returns.join(used, on=RECORD, how="anti")
        .join(bills.unique("_parent"), on="_parent", how="left")
        .with_columns(ctx.local_date(pl.col("_ts")).alias("_date"))
        .with_row_index("_rid")
    )
    own = plan.layout.assign(rows.select("_rid", "_cust", "_date"), ctx).select("_rid", "_win")
    rows = rows.join(own, on="_rid", how="left")
    rows, reasons = _enrolment_reasons(ctx, rows)
    known = pl.col("_parent").is_not_null()
    reasons.append(
        pl.when(known & pl.col("_bill_counted").is_null()).then(pl.lit("bill_not_counted"))
    )
    if target.entity is TargetEntity.LINEITEM:
        reasons.append(pl.when(known & ~pl.col("_rule")).then(pl.lit("line_rule_false")))
    reasons.append(pl.when(~known & ~pl.col("_pass")).then(pl.lit("return_rule_or_filter")))
    # Otherwise the return found no window: carry mode has no next window started by D yet; in
    # original mode a return without a known bill fell outside every window.
    fallback = "no_next_window" if ctx.config.returns_mode == "carry" else "outside_windows"
    return (
        rows.with_columns(
            _reason_list(reasons, fallback),
            pl.lit("RETURN").alias("_kind"),
            pl.col("_win").cast(pl.Int32),
        )
        .select(EXCLUDED)
        .collect()
    )


# --- PERIOD_AGNOSTIC -----------------------------------------------------------------------


def _trace_agnostic(ctx: GroupContext) -> GroupTrace:
    """Cycles close at the record that reaches the target, so the engine's own loop records
    which records each cycle took (`score_agnostic(trace=...)`)."""
    from pipeline.scoring.agnostic import score_agnostic

    taken: list[pl.DataFrame] = []
    scored = score_agnostic(ctx, trace=taken)
    target = ctx.group.targets[0]
    counted = _agnostic_counted(ctx, target, taken)
    g = ctx.group
    outside = pl.lit(False)
    if g.start_date is not None:
        outside = outside | (pl.col("_date") < pl.lit(g.start_date))
    if g.end_date is not None:
        outside = outside | (pl.col("_date") > pl.lit(g.end_date))

    def left_out(frame: pl.LazyFrame, kind: str, extra: list[pl.Expr], fallback: str):
        used = counted.filter(pl.col("_kind") == kind).select(RECORD).lazy()
        rows = frame.join(used, on=RECORD, how="anti").with_columns(
            ctx.local_date(pl.col("_ts")).alias("_date")
        )
        rows, reasons = _enrolment_reasons(ctx, rows)
        reasons += [pl.when(outside).then(pl.lit("outside_group_dates")), *extra]
        if "_parent" not in rows.collect_schema().names():
            rows = rows.with_columns(pl.lit(None, pl.String).alias("_parent"))
        return (
            rows.with_columns(
                _reason_list(reasons, fallback),
                pl.lit(None, pl.Int32).alias("_win"),
                pl.lit(kind).alias("_kind"),
            )
            .select(EXCLUDED)
            .collect()
        )

    parts = [
        left_out(
            records.regular_records(ctx, target),
            "REGULAR",
            [
                pl.when(~pl.col("_filt")).then(pl.lit("store_filter")),
                pl.when(~pl.col("_rule")).then(pl.lit("rule_false")),
            ],
            "after_last_cycle",
        )
    ]
    if records.has_returns(ctx, target):
        known = pl.col("_parent").is_not_null()
        parts.append(
            left_out(
                records.return_records(ctx, target),
                "RETURN",
                [pl.when(~known & ~pl.col("_pass")).then(pl.lit("return_rule_or_filter"))],
                "no_open_cycle",
            )
        )
    excluded = pl.concat(parts, how="vertical_relaxed")
    trace = TargetTrace(
        target=target,
        progress=scored.progress,
        counted=counted,
        excluded=excluded.sort("_ts", "_k1", "_k2"),
    )
    return GroupTrace(score=scored, targets=[trace])


COUNTED_SCHEMA = {
    "_cust": pl.Int64,
    "_win": pl.Int32,
    "_ts": UTC_TS,
    "_k1": pl.String,
    "_k2": pl.Int64,
    "_kind": pl.String,
    "_parent": pl.String,
    "_contrib": DEC,
    "_running": DEC,
    "_reached": pl.Boolean,
}


def _agnostic_counted(ctx: GroupContext, target: Target, taken: list[pl.DataFrame]) -> pl.DataFrame:
    """The records each cycle took, with the opening balance folded into the record it joined
    (as the engine adds it) and the record that closed the cycle marked."""
    if not taken:
        return pl.DataFrame(schema=COUNTED_SCHEMA)
    frame = pl.concat(taken, how="vertical_relaxed").sort(ORDER)
    hit = pl.col("target_value").is_not_null() & (pl.col("_running") >= pl.col("target_value"))
    frame = frame.with_columns(
        pl.when(pl.col("_regular"))
        .then(pl.lit("REGULAR"))
        .otherwise(pl.lit("RETURN"))
        .alias("_kind"),
        (pl.col("_contrib") + pl.col("_badd")).cast(DEC).alias("_contrib"),
        (hit & (hit.cast(pl.Int32).cum_sum().over(KEYS) == 1)).fill_null(False).alias("_reached"),
    )
    if records.has_returns(ctx, target):
        parents = records.return_records(ctx, target).select(*RECORD, "_parent").unique(RECORD)
        frame = frame.join(parents.collect(), on=RECORD, how="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.String).alias("_parent"))
    return frame.select(list(COUNTED_SCHEMA)).cast({"_running": DEC})
