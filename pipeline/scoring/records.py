"""The records a target measures, with its rule and store filters evaluated (SPEC §4, §6.1).

For each target this builds two lazy frames in the shared working-column convention
(`pipeline.scoring.context`):

- regular records: ``_cust, _ts, _k1, _k2, _bill, _pass, _attr`` where ``_pass`` is "rule true and
  every store filter passes" and ``_attr`` the measured attribute (null for COUNT/VISIT);
- returns (only for SALES/GROSS_SALES/QUANTITY of TRANSACTION/LINEITEM targets):
  ``_cust, _ts, _k1, _k2, _parent, _pass, _red`` where ``_red`` is the positive amount it takes
  away and ``_parent`` the original bill's id when that bill is known.

Rules are compiled once per target by `pipeline.rules.compile`; a column the rule needs that no
export provides raises `MissingAttributeError` so that only this group fails.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from pipeline.definitions.model import (
    RETURNABLE_TYPES,
    EvaluationType,
    Target,
    TargetEntity,
    TargetType,
)
from pipeline.errors import MissingAttributeError
from pipeline.rules.compile import compile_rule, rule_columns
from pipeline.scoring import enrolment
from pipeline.scoring.context import DEC, UTC_TS, GroupContext

STORE = "__store__"
TXN = "__txn__"
_EMPTY_ATTR = pl.lit(None, dtype=DEC)


def _ts(col: str) -> pl.Expr:
    return pl.col(col).cast(UTC_TS)


def _stores(ctx: GroupContext) -> pl.LazyFrame:
    s = ctx.source("stores")
    names = s.collect_schema().names()
    return s.select(pl.col(c).alias(STORE + c) for c in names).with_columns(
        pl.col(STORE + "store_id").cast(pl.String)
    )


def needs_stores(target: Target) -> bool:
    """Whether the target reads the `stores` export: a ZONE/CONCEPT filter, or a rule naming a
    `currentStore` attribute other than its id. Otherwise the join is skipped."""
    if any(f.entity_type != "STORE" for f in target.filters):
        return True
    return any(ns == "currentStore" and col != "store_id" for ns, col in rule_columns(target.rule))


def _with_store(
    frame: pl.LazyFrame, ctx: GroupContext, store_col: str = "store_id", *, target: Target
) -> pl.LazyFrame:
    if store_col not in frame.collect_schema().names():
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(store_col))
    frame = frame.with_columns(pl.col(store_col).cast(pl.String))
    if not needs_stores(target):
        return frame.with_columns(pl.col(store_col).alias(STORE + "store_id"))
    # currentStore.id and the STORE filter are the record's own store id, known or not.
    return frame.join(
        _stores(ctx), left_on=store_col, right_on=STORE + "store_id", how="left", coalesce=False
    ).with_columns(pl.col(store_col).alias(STORE + "store_id"))


def _txn_type() -> pl.Expr:
    # The loader stores enum words upper-case (pipeline.loading), so no case folding here.
    return pl.col("type").cast(pl.String).fill_null("REGULAR")


def _transactions(ctx: GroupContext) -> pl.LazyFrame:
    t = ctx.source("transactions")
    cols = t.collect_schema().names()
    if "type" not in cols:
        t = t.with_columns(pl.lit("REGULAR").alias("type"))
    if "parent_txn_id" not in cols:
        t = t.with_columns(pl.lit(None, dtype=pl.String).alias("parent_txn_id"))
    for c in ("gross_amount", "discount", "qty"):
        if c not in cols:
            t = t.with_columns(pl.lit(None, dtype=DEC).alias(c))
    return t.with_columns(
        pl.col("txn_id").cast(pl.String),
        pl.col("parent_txn_id").cast(pl.String),
        pl.coalesce(pl.col("gross_amount"), pl.col("amount")).alias("gross_amount"),
        _txn_type().alias("type"),
    )


LINE_QTY = "line quantity per bill"
LINES = "lines with their bills"


def _line_qty_per_bill(ctx: GroupContext) -> pl.LazyFrame:
    return ctx.derived(
        (LINE_QTY,),
        lambda: ctx.source("line_items")
        .group_by(pl.col("txn_id").cast(pl.String))
        .agg(pl.col("qty").abs().cast(DEC).sum().alias("__line_qty")),
    )


def _with_line_qty(ctx: GroupContext, bills: pl.LazyFrame) -> pl.LazyFrame:
    """`bills` with ``__line_qty``, the quantity of their lines, which QUANTITY falls back to
    for a bill without its own ``qty`` (SPEC §6.1).

    Why the check: summing millions of lines by a text bill id and joining the sums back costs
    more than the rest of the target, and is wasted when every bill carries its quantity (one
    scan of one column says so)."""
    if not _some_bill_lacks_qty(ctx):
        return bills.with_columns(pl.lit(None, dtype=DEC).alias("__line_qty"))
    return bills.join(_line_qty_per_bill(ctx), on="txn_id", how="left")


def _some_bill_lacks_qty(ctx: GroupContext) -> bool:
    t = ctx.source("transactions")
    if "qty" not in t.collect_schema().names():
        return True
    return bool(t.select(pl.col("qty").is_null().any()).collect().item())


def derived_frames(ctx: GroupContext, target: Target) -> list[tuple[str, ...]]:
    """The `ctx.derived` keys that scoring `target` reads (`engine.plan_sharing` counts them)."""
    keys: list[tuple[str, ...]] = []
    returns = has_returns(ctx, target)
    if target.entity is TargetEntity.LINEITEM:
        if not reads_only_the_line(target):  # else the lines are filtered before the join
            keys.append((LINES, "REGULAR"))
            if returns:
                keys.append((LINES, "RETURN"))
        return keys
    bill_event = (target.event_name or "").lower() if target.entity is TargetEntity.EVENT else ""
    reads_bills = target.entity is TargetEntity.TRANSACTION or bill_event in (
        "transactionadd",
        "returnbill",
    )
    if reads_bills and target.type is TargetType.QUANTITY and _some_bill_lacks_qty(ctx):
        keys.extend([(LINE_QTY,)] * (2 if returns else 1))
    return keys


class Resolver:
    """Maps (namespace, column) of a rule to a column of one record frame.

    `prefixes` says where each namespace's columns live in the frame: "" for the record's own
    (unprefixed) export columns, or the prefix of a joined table; several namespaces may share one
    (a bill read as an event answers both `currentTxn` and `currentEvent`).
    """

    def __init__(self, ctx: GroupContext, target: Target, frame: pl.LazyFrame, **prefixes: str):
        self.ctx = ctx
        self.target = target
        self.schema = frame.collect_schema()
        names = self.schema.names()
        self.spaces: dict[str, tuple[str, set[str]]] = {}
        for namespace, prefix in prefixes.items():
            if prefix:
                cols = {n[len(prefix) :] for n in names if n.startswith(prefix)}
            else:
                cols = {n for n in names if not n.startswith("_")}
            self.spaces[namespace] = (prefix, cols)

    def dtype(self, namespace: str, column: str) -> pl.DataType | None:
        """The loaded dtype of a rule attribute (None when unknown)."""
        space = self.spaces.get(namespace)
        return None if space is None else self.schema.get(space[0] + column)

    def __call__(self, namespace: str, column: str) -> pl.Expr:
        space = self.spaces.get(namespace)
        if space is not None and column in space[1]:
            return pl.col(space[0] + column)
        raise MissingAttributeError(
            f"group {self.ctx.group.name!r}, target {self.target.name!r}: rule attribute "
            f"{namespace}.{column} is not provided by any loaded column; load an export with a "
            f"`{column}` column or change the rule"
        )


def _filters(target: Target) -> pl.Expr:
    """Every STORE/ZONE/CONCEPT filter passes; a record with no store fails (SPEC §6.1, §13)."""
    expr = pl.lit(True)
    for f in target.filters:
        col = {"STORE": "store_id", "ZONE": "zone_id", "CONCEPT": "concept_id"}[f.entity_type]
        value = pl.col(STORE + col).cast(pl.String)
        expr = expr & value.is_in(list(f.ids)).fill_null(False)
    return expr


def _checks(ctx: GroupContext, target: Target, resolver: Resolver) -> list[pl.Expr]:
    """`_rule` (the rule is exactly true) and `_filt` (every store filter passes), kept apart so
    that `explain` can say which one excluded a record; `_pass` is both."""
    rule = compile_rule(target.rule, resolver, ctx.tz, resolver.dtype).fill_null(False)
    filt = _filters(target)
    return [rule.alias("_rule"), filt.alias("_filt"), (rule & filt).alias("_pass")]


def _txn_attr(target: Target, returns: bool) -> pl.Expr:
    t = target.type
    if t is TargetType.SALES:
        e = pl.col("amount")
    elif t is TargetType.GROSS_SALES:
        e = pl.col("gross_amount")
    elif t is TargetType.QUANTITY:
        qty = pl.col("qty").abs() if returns else pl.col("qty")
        e = pl.coalesce(qty, pl.col("__line_qty"), *([pl.lit(0)] if returns else []))
    elif t is TargetType.EXTENDED_FIELD and target.extended_field:
        e = pl.col(target.extended_field.name)
    else:
        return _EMPTY_ATTR
    e = e.cast(DEC)
    return e.abs() if returns else e


def _attr_or_missing(
    ctx: GroupContext, target: Target, frame: pl.LazyFrame, expr: pl.Expr, column: str | None
) -> pl.Expr:
    if column is not None and column not in frame.collect_schema().names():
        raise MissingAttributeError(
            f"group {ctx.group.name!r}, target {target.name!r}: attribute {column!r} "
            "(extendedFieldInfo.name) is not provided by any loaded column"
        )
    return expr


def _ext_name(target: Target) -> str | None:
    if (
        target.type in (TargetType.EXTENDED_FIELD, TargetType.EVENT_ATTRIBUTE)
        and target.extended_field
    ):
        return target.extended_field.name
    return None


def _measure_attr(target: Target, attr: pl.Expr) -> pl.Expr:
    """COUNT of an extended field counts its non-null values (SPEC §6.1)."""
    ext = target.extended_field
    if (
        ext is not None
        and ext.aggregate_function.upper() == "COUNT"
        and ext.aggregate_window is None
    ):
        return pl.when(attr.is_not_null()).then(pl.lit(1)).otherwise(pl.lit(0)).cast(DEC)
    return attr


def record_span(ctx: GroupContext) -> tuple[datetime | None, datetime | None]:
    """UTC instants outside which no regular record of the group can count: a day wider than
    the group's dates on each side, so that no zone's offset matters (the exact cut by local
    date is made later, by window). None: no bound on that side.

    Why: a two-week campaign over a year of exports would otherwise join, test and sort every
    record of the year only to drop all but a twenty-sixth of them by window."""
    g = ctx.group
    first: date | None = g.start_date
    last: date | None = None
    if g.evaluation_type is EvaluationType.FIXED:
        started = [p for p in g.periods if p.start <= ctx.as_of]
        if started:
            first = min(p.start for p in started)
            last = max(p.end for p in started)
    elif g.evaluation_type is EvaluationType.PERIOD_AGNOSTIC:
        last = g.end_date
    # CYCLIC: a cycle is not cut at the group's end, so only its start bounds the records.

    def midnight(d: date) -> datetime:
        return datetime.combine(d, time(0), UTC)

    return (
        None if first is None else midnight(first - timedelta(days=1)),
        None if last is None else midnight(last + timedelta(days=2)),
    )


def _in_span(frame: pl.LazyFrame, ctx: GroupContext, column: str) -> pl.LazyFrame:
    """`frame` without the rows whose time `column` is outside `record_span`."""
    lo, hi = record_span(ctx)
    ts = pl.col(column).cast(UTC_TS)
    if lo is not None:
        frame = frame.filter(ts >= pl.lit(lo).cast(UTC_TS))
    if hi is not None:
        frame = frame.filter(ts < pl.lit(hi).cast(UTC_TS))
    return frame


def regular_records(
    ctx: GroupContext, target: Target, *, passing_only: bool = False
) -> pl.LazyFrame:
    """The records of the target's entity that can count, with `_pass` and `_attr`.

    `passing_only` lets the frame drop records that cannot count early (the caller keeps only
    `_pass` rows in the group's windows anyway): records outside `record_span`, and, for a
    line-item rule that reads only the line, lines whose rule fails, before the lines are joined
    to their bills. Without it every record is kept, as `explain` needs."""
    entity = target.entity
    # EVENT targets on TransactionAdd / ReturnBill read the regular / return bills (SPEC §6.1).
    bill_event = (target.event_name or "").lower() if entity is TargetEntity.EVENT else ""
    if entity is TargetEntity.TRANSACTION or bill_event in ("transactionadd", "returnbill"):
        want = "RETURN" if bill_event == "returnbill" else "REGULAR"
        t = _transactions(ctx).filter(pl.col("type") == want)
        if passing_only:
            t = _in_span(t, ctx, "txn_time")
        if target.type is TargetType.QUANTITY:
            t = _with_line_qty(ctx, t)
        if entity is TargetEntity.EVENT:
            t = t.with_columns(
                pl.lit(target.event_name).alias("event_name"),
                pl.col("txn_time").alias("event_time"),
            )
        frame = _with_store(t, ctx, target=target)
        # A bill read as an event answers currentEvent too; a TRANSACTION target's does not.
        event = {"currentEvent": ""} if entity is TargetEntity.EVENT else {}
        resolver = Resolver(ctx, target, frame, currentTxn="", currentStore=STORE, **event)
        ext = _ext_name(target)
        if ext is not None and entity is TargetEntity.EVENT:
            attr = pl.col(ext).cast(DEC, strict=False)
        else:
            attr = _txn_attr(target, False)
        attr = _attr_or_missing(ctx, target, frame, attr, ext)
        return frame.select(
            pl.col("customer_id").alias("_cust"),
            _ts("txn_time").alias("_ts"),
            pl.col("txn_id").alias("_k1"),
            pl.lit(0, dtype=pl.Int64).alias("_k2"),
            pl.col("txn_id").alias("_bill"),
            *_checks(ctx, target, resolver),
            _measure_attr(target, attr).alias("_attr"),
        )
    if entity is TargetEntity.LINEITEM:
        early = _line_only_rule(ctx, target) if passing_only else None
        frame = _line_frame(ctx, "REGULAR", target, early, span=passing_only)
        resolver = Resolver(
            ctx, target, frame, currentLineItem="", currentTxn=TXN, currentStore=STORE
        )
        attr = _line_attr(ctx, target, frame, returns=False)
        return frame.select(
            pl.col(TXN + "customer_id").alias("_cust"),
            _ts(TXN + "txn_time").alias("_ts"),
            pl.col("txn_id").alias("_k1"),
            pl.col("line_no").cast(pl.Int64).alias("_k2"),
            pl.col("txn_id").alias("_bill"),
            *_checks(ctx, target, resolver),
            _measure_attr(target, attr).alias("_attr"),
        )
    if entity is TargetEntity.EVENT:
        e = ctx.source("events").filter(pl.col("event_name") == target.event_name)
        if passing_only:
            e = _in_span(e, ctx, "event_time")
        frame = _with_store(e, ctx, target=target)
        resolver = Resolver(ctx, target, frame, currentEvent="", currentStore=STORE)
        ext = _ext_name(target)
        attr = (
            _attr_or_missing(ctx, target, frame, pl.col(ext), ext).cast(DEC, strict=False)
            if ext
            else _EMPTY_ATTR
        )
        return frame.select(
            pl.col("customer_id").alias("_cust"),
            _ts("event_time").alias("_ts"),
            pl.col("event_id").cast(pl.String).alias("_k1"),
            pl.lit(0, dtype=pl.Int64).alias("_k2"),
            pl.col("event_id").cast(pl.String).alias("_bill"),
            *_checks(ctx, target, resolver),
            _measure_attr(target, attr).alias("_attr"),
        )
    # REWARDS: points rows of the target's points type.
    p = ctx.source("points")
    kind = {TargetType.REGULAR_POINTS: "REGULAR", TargetType.PROMOTIONAL_POINTS: "PROMOTIONAL"}.get(
        target.type
    )
    if kind is not None:
        p = p.filter(pl.col("points_type").cast(pl.String) == kind)
    if passing_only:
        p = _in_span(p, ctx, "awarded_at")
    frame = _with_store(p, ctx, target=target)
    resolver = Resolver(
        ctx, target, frame, currentTxn="", currentEvent="", currentLineItem="", currentStore=STORE
    )
    return frame.select(
        pl.col("customer_id").alias("_cust"),
        _ts("awarded_at").alias("_ts"),
        pl.col("points_id").cast(pl.String).alias("_k1"),
        pl.lit(0, dtype=pl.Int64).alias("_k2"),
        pl.col("points_id").cast(pl.String).alias("_bill"),
        *_checks(ctx, target, resolver),
        pl.col("points").cast(DEC).alias("_attr"),
    )


def _line_frame(
    ctx: GroupContext,
    txn_type: str,
    target: Target,
    lines_filter: pl.Expr | None = None,
    *,
    span: bool = False,
) -> pl.LazyFrame:
    """Lines with their bills; `span`: only bills in the group's `record_span`."""
    if lines_filter is None:
        frame = ctx.derived((LINES, txn_type), lambda: _lines_with_bills(ctx, txn_type))
        if span:  # the shared frame holds every bill: cut after
            frame = _in_span(frame, ctx, TXN + "txn_time")
    else:
        frame = _lines_with_bills(ctx, txn_type, lines_filter, span=span)
    return _with_store(frame, ctx, TXN + "store_id", target=target)


def _lines_with_bills(
    ctx: GroupContext, txn_type: str, lines_filter: pl.Expr | None = None, *, span: bool = False
) -> pl.LazyFrame:
    """Line items of `txn_type` bills (those passing `lines_filter`; with `span`, those in the
    group's `record_span`), with the bill's columns prefixed by ``TXN``."""
    t = _transactions(ctx).filter(pl.col("type") == txn_type)
    if span:
        t = _in_span(t, ctx, "txn_time")
    t = t.select(pl.col(c).alias(TXN + c) for c in t.collect_schema().names())
    li = ctx.source("line_items")
    if lines_filter is not None:
        li = li.filter(lines_filter)
    li = li.with_columns(pl.col("txn_id").cast(pl.String))
    return li.join(t, left_on="txn_id", right_on=TXN + "txn_id", how="inner", coalesce=False)


def reads_only_the_line(target: Target) -> bool:
    """Whether the target's rule reads only its line's own columns (not its bill or store)."""
    spaces = {namespace for namespace, _ in rule_columns(target.rule)}
    return spaces == {"currentLineItem"}


def _line_only_rule(ctx: GroupContext, target: Target) -> pl.Expr | None:
    """The rule as a filter on the line items alone, when it reads only the line.

    Why: polars cannot push a rule computed after the join below it, and joining every line to
    its bill on a text id is the dearest step of a line-item target; a category rule keeps one
    line in a few, so filtering first makes the join that much smaller."""
    if not reads_only_the_line(target):
        return None
    lines = ctx.source("line_items")
    resolver = Resolver(ctx, target, lines, currentLineItem="")
    return compile_rule(target.rule, resolver, ctx.tz, resolver.dtype).fill_null(False)


def _line_attr(ctx: GroupContext, target: Target, frame: pl.LazyFrame, *, returns: bool) -> pl.Expr:
    t = target.type
    names = frame.collect_schema().names()
    if t is TargetType.SALES:
        e = pl.col("amount")
    elif t is TargetType.GROSS_SALES:
        e = pl.coalesce(pl.col("value"), pl.col("amount")) if "value" in names else pl.col("amount")
    elif t is TargetType.QUANTITY:
        e = pl.col("qty")
    elif t is TargetType.EXTENDED_FIELD and target.extended_field:
        name = target.extended_field.name
        # The line's column, else its transaction's (SPEC §13).
        if name in names:
            e = pl.col(name)
        elif TXN + name in names:
            e = pl.col(TXN + name)
        else:
            raise MissingAttributeError(
                f"group {ctx.group.name!r}, target {target.name!r}: attribute {name!r} "
                "(extendedFieldInfo.name) is not provided by any loaded column"
            )
    else:
        return _EMPTY_ATTR
    e = e.cast(DEC, strict=False)
    return e.abs() if returns else e


def has_returns(ctx: GroupContext, target: Target) -> bool:
    return (
        ctx.config.returns_mode != "ignore"
        and target.entity in (TargetEntity.TRANSACTION, TargetEntity.LINEITEM)
        and target.type in RETURNABLE_TYPES
    )


def return_records(
    ctx: GroupContext, target: Target, *, passing_only: bool = False, named: bool = False
) -> pl.LazyFrame:
    """Return transactions (TRANSACTION) or returned lines (LINEITEM) with what they take away.

    ``_parent`` is set only when the original bill is a known regular transaction; ``_pass`` is
    the rule and filters applied to the return itself (used only without a known parent).
    `passing_only`: as for `regular_records`, returned lines whose line-only rule fails are
    dropped before the join (a returned line counts only when its rule holds, parent or not).
    `named`: ``_parent`` is the parent id as exported, not looked up (`regular_bills` does it
    for the few a caller cannot place otherwise).
    """
    if target.entity is TargetEntity.TRANSACTION:
        t = _transactions(ctx).filter(pl.col("type") == "RETURN")
        if target.type is TargetType.QUANTITY:
            t = _with_line_qty(ctx, t)
        frame = _with_store(t, ctx, target=target)
        resolver = Resolver(ctx, target, frame, currentTxn="", currentStore=STORE)
        out = frame.select(
            pl.col("customer_id").alias("_cust"),
            _ts("txn_time").alias("_ts"),
            pl.col("txn_id").alias("_k1"),
            pl.lit(0, dtype=pl.Int64).alias("_k2"),
            pl.col("parent_txn_id").alias("_p"),
            *_checks(ctx, target, resolver),
            _txn_attr(target, True).fill_null(0).alias("_red"),
        )
    else:
        early = _line_only_rule(ctx, target) if passing_only else None
        frame = _line_frame(ctx, "RETURN", target, early)
        resolver = Resolver(
            ctx, target, frame, currentLineItem="", currentTxn=TXN, currentStore=STORE
        )
        out = frame.select(
            pl.col(TXN + "customer_id").alias("_cust"),
            _ts(TXN + "txn_time").alias("_ts"),
            pl.col("txn_id").alias("_k1"),
            pl.col("line_no").cast(pl.Int64).alias("_k2"),
            pl.col(TXN + "parent_txn_id").alias("_p"),
            *_checks(ctx, target, resolver),
            _line_attr(ctx, target, frame, returns=True).fill_null(0).alias("_red"),
        )
    if named:
        return out.rename({"_p": "_parent"})
    known = regular_bills(ctx, out.select(pl.col("_p").alias("_known")))
    out = out.join(known, left_on="_p", right_on="_known", how="left", coalesce=False)
    return out.with_columns(
        pl.when(pl.col("_known").is_not_null()).then(pl.col("_p")).alias("_parent")
    ).drop("_p", "_known")


def regular_bills(ctx: GroupContext, ids: pl.LazyFrame) -> pl.LazyFrame:
    """The distinct ids of the one-column frame `ids` that are regular transactions (under the
    same column name). The ids (few: returns' parents) are looked up among the regular bills
    (many), so the hash table is built on the small side."""
    name = ids.collect_schema().names()[0]
    wanted = ids.drop_nulls().unique().rename({name: "txn_id"})
    return (
        _transactions(ctx)
        .filter(pl.col("type") == "REGULAR")
        .select("txn_id")
        .join(wanted, on="txn_id", how="semi")
        .select(pl.col("txn_id").alias(name))
    )


def limit(frame: pl.LazyFrame, ctx: GroupContext) -> pl.LazyFrame:
    """Records up to the end of D, with their local date, inside enrolment."""
    frame = frame.filter(pl.col("_ts") < pl.lit(ctx.end_of_as_of).cast(UTC_TS))
    frame = frame.with_columns(ctx.local_date(pl.col("_ts")).alias("_date"))
    return enrolment.restrict_to_enrolment(frame, ctx)
