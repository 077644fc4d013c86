"""Who is scored and with which target values (SPEC §5 target value, §7, §13 lookup order).

IMPORT groups score the customers with an `enrolments` row for the group; TRANSACTION groups score
every customer with a counted record (decided later, in the engine). In both, enrolment rows carry
target values and opening balances, looked up (target, window) -> (target, any window) ->
(any target, window) -> (any target, any window) -> the target's `defaultValues`.
"""

from __future__ import annotations

import threading
import weakref

import polars as pl

from pipeline.definitions.model import EnrolmentMethod, Target
from pipeline.scoring.context import DEC, UTC_TS, GroupContext


def _norm(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).str.strip_chars().str.to_lowercase()


def enrolment_rows(ctx: GroupContext) -> pl.LazyFrame:
    """The group's enrolment rows (group name matched trimmed and case-insensitively)."""
    e = ctx.source("enrolments")
    cols = e.collect_schema().names()

    def opt(name: str, dtype: pl.DataType) -> pl.Expr:
        return (pl.col(name) if name in cols else pl.lit(None)).cast(dtype).alias(name)

    return e.filter(_norm(pl.col("group_name")) == ctx.group.name.strip().lower()).select(
        pl.col("customer_id").alias("_cust"),
        _norm(opt("target_name", pl.String)).alias("_target"),
        opt("period_ref", pl.String),
        opt("target_value", DEC),
        opt("initial_balance", DEC),
        opt("enrolled_at", UTC_TS),
        opt("unenrolled_at", UTC_TS),
    )


def customers(ctx: GroupContext) -> pl.LazyFrame:
    """One row per enrolled IMPORT customer: earliest `enrolled_at`, latest `unenrolled_at`."""
    return (
        enrolment_rows(ctx)
        .group_by("_cust")
        .agg(pl.col("enrolled_at").min(), pl.col("unenrolled_at").max())
    )


def is_import(ctx: GroupContext) -> bool:
    return ctx.group.enrolment_method is EnrolmentMethod.IMPORT


def restrict_to_enrolment(records: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    """IMPORT: keep enrolled customers' records up to `unenrolled_at` (and from `enrolled_at`
    when `enrolment.track_from_enrolment`)."""
    if not is_import(ctx):
        return records
    out = records.join(customers(ctx), on="_cust", how="inner").filter(
        pl.col("unenrolled_at").is_null() | (pl.col("_ts") <= pl.col("unenrolled_at"))
    )
    if ctx.config.track_from_enrolment:
        out = out.filter(pl.col("enrolled_at").is_null() | (pl.col("_ts") >= pl.col("enrolled_at")))
    return out.drop("enrolled_at", "unenrolled_at")


def has_rows(ctx: GroupContext) -> bool:
    """Whether any enrolments row names the group (most TRANSACTION groups have none, and then
    the lookups below are skipped)."""
    return ctx.group.name.strip().lower() in _named_groups(ctx.source("enrolments"))


# Per enrolments frame (by id, checked by a weak reference: a frame's id can be reused once
# it is gone): the group names it has rows for.
_NAMED: dict[int, tuple[weakref.ref[pl.LazyFrame], frozenset[str]]] = {}
_NAMED_LOCK = threading.Lock()


def _named_groups(enrolments: pl.LazyFrame) -> frozenset[str]:
    """The group names (trimmed, lower case) that `enrolments` has rows for, read once a frame.

    Why: every group asks `has_rows` several times a shard (sharing plan, chains, scoring), and
    each answer was a pass trimming and lower-casing every row's group name: 79 passes, ~0.5 of
    a 10 M bench shard's 17 CPU-s."""
    with _NAMED_LOCK:
        found = _NAMED.get(id(enrolments))
        if found is not None and found[0]() is enrolments:
            return found[1]
    names = enrolments.select(_norm(pl.col("group_name")).unique().drop_nulls()).collect()
    named = frozenset(names.to_series().to_list())  # a few group names, not rows
    with _NAMED_LOCK:
        for key in [k for k, (ref, _) in _NAMED.items() if ref() is None]:
            del _NAMED[key]
        _NAMED[id(enrolments)] = (weakref.ref(enrolments), named)
    return named


def attach_target_values(
    base: pl.LazyFrame, ctx: GroupContext, target: Target, *, rows_exist: bool = True
) -> pl.LazyFrame:
    """Add `target_value` and `_balance_any` (the looked-up initial balance, before deciding which
    window it goes to) to rows keyed by `_cust`, `_win`, `ref_code`."""
    if not rows_exist:
        default = pl.lit(None, dtype=DEC) if ctx.group.user_created else default_values(target)
        return base.with_columns(
            default.cast(DEC).alias("target_value"), pl.lit(None, dtype=DEC).alias("_balance_any")
        )
    rows = enrolment_rows(ctx)
    name = target.name.strip().lower()
    levels = [
        (pl.col("_target") == name, True),
        (pl.col("_target") == name, False),
        (pl.col("_target").is_null(), True),
        (pl.col("_target").is_null(), False),
    ]
    out = base
    tv_cols, bal_cols = [], []
    for i, (target_match, by_window) in enumerate(levels):
        sel = rows.filter(target_match)
        sel = sel.filter(
            pl.col("period_ref").is_not_null() if by_window else pl.col("period_ref").is_null()
        )
        on = ["_cust", "period_ref"] if by_window else ["_cust"]
        lookup = sel.group_by(on).agg(
            pl.col("target_value").drop_nulls().first().alias(f"_tv{i}"),
            pl.col("initial_balance").drop_nulls().first().alias(f"_ib{i}"),
        )
        if by_window:
            # An enrolments period_ref matches a given refCode only (SPEC §13).
            lookup = lookup.rename({"period_ref": "ref_code"})
            out = out.join(lookup, on=["_cust", "ref_code"], how="left", nulls_equal=False)
        else:
            out = out.join(lookup, on="_cust", how="left")
        tv_cols.append(f"_tv{i}")
        bal_cols.append(f"_ib{i}")
    # userCreated: the customer's own goal only; default values never apply (SPEC §13).
    default = pl.lit(None, dtype=DEC) if ctx.group.user_created else default_values(target)
    return out.with_columns(
        pl.coalesce([*(pl.col(c) for c in tv_cols), default]).cast(DEC).alias("target_value"),
        pl.coalesce([pl.col(c) for c in bal_cols]).cast(DEC).alias("_balance_any"),
    ).drop(tv_cols + bal_cols)


def default_values(target: Target) -> pl.Expr:
    """`defaultValues[k-1]`, the last one repeating (SPEC §5).

    One literal when every value is the same (a programme often repeats one value for each of
    its 12 periods), else one gather by window number: a chain of `when(_win == k)` took a pass
    over every customer's windows per value."""
    values = target.default_values
    if not values:
        return pl.lit(None, dtype=DEC)
    if len(set(values)) == 1:
        return pl.lit(str(values[0])).cast(DEC)
    n = len(values)
    win = pl.col("_win").cast(pl.Int64)
    at = pl.when((win >= 1) & (win <= n)).then(win - 1).otherwise(n - 1)
    return pl.lit(pl.Series([str(v) for v in values]).cast(DEC)).gather(at)
