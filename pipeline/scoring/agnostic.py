"""PERIOD_AGNOSTIC groups (SPEC §5, §13): per customer, a cycle closes at the record that reaches
the target; the next qualifying record opens the next cycle; nothing carries over.

Where a cycle ends depends on where the previous one ended, so cycles are found one at a time:
the loop is over cycle numbers (at most 100), and each pass is vectorised over every customer and
record still unassigned.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from pipeline.definitions.model import Target, TargetEntity, TargetType
from pipeline.scoring import enrolment, kinds, measures, records, returns
from pipeline.scoring.combine import combine
from pipeline.scoring.context import DEC, LOCAL_TS, UTC_TS, GroupContext, sorted_cum_sum
from pipeline.scoring.results import TARGET_PROGRESS, GroupScore

ORDER = ["_cust", "_ts", "_k1", "_k2"]


def _stream(ctx: GroupContext, columns: list[str] | None = None) -> pl.DataFrame:
    """The target's counted regular records and returns, in time order (ties by record key),
    with only `columns` when given (the sort then moves no text key it need not)."""
    g = ctx.group
    target = g.targets[0]
    reg = records.regular_records(ctx, target, passing_only=True)
    reg = records.limit(reg, ctx).filter(pl.col("_pass"))
    if g.start_date is not None:
        reg = reg.filter(pl.col("_date") >= pl.lit(g.start_date))
    if g.end_date is not None:
        reg = reg.filter(pl.col("_date") <= pl.lit(g.end_date))
    cols = ["_cust", "_ts", "_k1", "_k2", "_date", "_bill", "_amount", "_regular"]
    reg = reg.with_columns(pl.col("_attr").alias("_amount"), pl.lit(True).alias("_regular")).select(
        cols
    )
    with_returns = records.has_returns(ctx, target)
    if with_returns:
        reg = reg.collect().lazy()  # read twice: for the stream and for the returns' parents
    parts = [reg]
    if with_returns:
        rets = records.return_records(ctx, target, passing_only=True, named=True)
        rets = records.limit(rets, ctx)
        if g.start_date is not None:
            rets = rets.filter(pl.col("_date") >= pl.lit(g.start_date))
        if g.end_date is not None:
            rets = rets.filter(pl.col("_date") <= pl.lit(g.end_date))
        rets = rets.collect().lazy()  # read several times by `by_parent`: run once
        known, parentless = returns.by_parent(ctx, target.entity, rets, reg.select("_bill"))
        for r in (known, parentless):
            parts.append(
                r.with_columns(
                    pl.col("_k1").alias("_bill"),
                    (-pl.col("_red")).alias("_amount"),
                    pl.lit(False).alias("_regular"),
                ).select(cols)
            )
    stream = pl.concat(parts, how="vertical_relaxed").collect()
    # One window for everyone: the engine's packed-key sort gives (customer, time, key) order.
    return measures.sort_records(
        stream.with_columns(pl.lit(0, dtype=pl.Int32).alias("_win")),
        [c for c in stream.columns if columns is None or c in columns],
    )


def _contribution(target_type: TargetType, entity: TargetEntity, ext_window: bool) -> pl.Expr:
    """Per-record contribution within one cycle (rows of that cycle, in order).

    The stream is in (customer, time, key) order, so a customer's records of one local date,
    or the lines of one bill, are neighbours: "first of its date (bill)" is "differs from the
    row before", not a hash of every (customer, date) pair in every pass."""
    first = _first_of_column(target_type, entity)
    if first is not None:
        return _first_of(first)
    if target_type is TargetType.COUNT:
        return pl.col("_regular").cast(pl.Int32).cast(DEC)
    return pl.col("_amount").fill_null(0).cast(DEC)


def _first_of(column: str) -> pl.Expr:
    """1 at a regular record that opens its customer's run of equal `column`, else 0."""
    opens = (pl.col("_cust") != pl.col("_cust").shift(1)) | (
        pl.col(column) != pl.col(column).shift(1)
    )
    return (pl.col("_regular") & opens.fill_null(True)).cast(pl.Int32).cast(DEC)


def _by_customer(value: pl.Expr) -> pl.Expr:
    """Running sum per customer on the time-ordered stream."""
    return sorted_cum_sum(value, ["_cust"])


def _cycle_targets(ctx: GroupContext, custs: pl.DataFrame, k: int) -> pl.DataFrame:
    base = custs.lazy().with_columns(
        pl.lit(k, dtype=pl.Int32).alias("_win"), pl.lit(None, dtype=pl.String).alias("ref_code")
    )
    rows = enrolment.attach_target_values(base, ctx, ctx.group.targets[0])
    return rows.drop("_balance_any").collect()


def _opening_balances(ctx: GroupContext, custs: pl.DataFrame) -> pl.DataFrame:
    """``_cust, _bal, _enr``: each customer's opening balance and the instant from which it
    applies (`enrolled_at` for IMPORT groups, else from the first record)."""
    base = custs.lazy().with_columns(
        pl.lit(1, dtype=pl.Int32).alias("_win"), pl.lit(None, dtype=pl.String).alias("ref_code")
    )
    rows = enrolment.attach_target_values(base, ctx, ctx.group.targets[0]).select(
        "_cust", pl.col("_balance_any").alias("_bal")
    )
    if enrolment.is_import(ctx):
        enrolled = enrolment.customers(ctx).select("_cust", pl.col("enrolled_at").alias("_enr"))
        rows = rows.join(enrolled, on="_cust", how="left")
    else:
        rows = rows.with_columns(pl.lit(None, dtype=UTC_TS).alias("_enr"))
    return rows.filter(pl.col("_bal").is_not_null() & (pl.col("_bal") != 0)).collect()


def score_agnostic(ctx: GroupContext, trace: list[pl.DataFrame] | None = None) -> GroupScore:
    """`trace`, when given, receives each cycle's records (for `pipeline.scoring.trace`)."""
    g = ctx.group
    target = g.targets[0]
    contribution = _contribution(target.type, target.entity, False)
    # The cycles read customer, time, kind and what the contribution reads; `trace` shows every
    # record's keys.
    read = ["_cust", "_ts", "_regular", *contribution.meta.root_names()]
    stream = _stream(ctx, None if trace is not None else read)
    remaining = stream
    # The balance joins the cycle open at enrolled_at: it is added at the customer's first record
    # at or after enrolled_at (the first record without one), or, when no record comes after it,
    # to the cycle still open at D.
    balances = _opening_balances(ctx, stream.select("_cust").unique())
    by_cycle_only = not g.user_created and not enrolment.has_rows(ctx)
    cycles: list[pl.DataFrame] = []
    if trace is None and by_cycle_only and balances.height == 0:
        found = _cycles_by_search(ctx, stream, target)
        if found is not None:
            progress = _progress_rows(ctx, found, target.target_id)
            out = GroupScore(progress=progress, achievements=combine(ctx, progress))
            out.rewards.append(kinds.target_rewards(ctx, progress))
            return out
    for k in range(1, g.max_cycles + 1):
        if remaining.height == 0:
            break
        # The cycle opens at the customer's first remaining regular record; earlier returns
        # find no open cycle and are dropped. One lazy plan per cycle (rows stay in order).
        opened = remaining.lazy().filter(_by_customer(pl.col("_regular").cast(pl.Int32)) > 0)
        if by_cycle_only:
            # No enrolment rows: the cycle's target is its default value, the same for all.
            cur = opened.with_columns(pl.lit(_goal(target, k), dtype=DEC).alias("target_value"))
        else:
            custs = opened.select("_cust").unique().collect()
            tv = _cycle_targets(ctx, custs, k)
            if g.user_created:
                tv = tv.filter(pl.col("target_value").is_not_null())
            # Joins keep the stream's order: every step below reads rows in time order.
            cur = opened.join(
                tv.lazy().select("_cust", "target_value"),
                on="_cust",
                how="inner",
                maintain_order="left",
            )
        if balances.height:
            cur = cur.join(balances.lazy(), on="_cust", how="left", maintain_order="left")
            eligible = pl.col("_bal").is_not_null() & (
                pl.col("_enr").is_null() | (pl.col("_ts") >= pl.col("_enr"))
            )
            first = eligible & (_by_customer(eligible.cast(pl.Int32)) == 1)
            badd = pl.when(first).then(pl.col("_bal")).otherwise(0).cast(DEC)
        else:
            badd = pl.lit(0).cast(DEC)
        cur = cur.with_columns(contribution.alias("_contrib"), badd.alias("_badd"))
        cur = cur.with_columns(_by_customer(pl.col("_contrib") + pl.col("_badd")).alias("_running"))
        reached = pl.col("target_value").is_not_null() & (
            pl.col("_running") >= pl.col("target_value")
        )
        # Rows up to and including the first that reaches the target belong to this cycle.
        cur = cur.with_columns(
            (_by_customer(reached.cast(pl.Int32)) - reached.cast(pl.Int32)).alias("_before")
        ).collect()
        if cur.height == 0:
            break
        in_cycle = cur.filter(pl.col("_before") == 0)
        if trace is not None:
            trace.append(in_cycle.with_columns(pl.lit(k, dtype=pl.Int32).alias("_win")))
        # Rows are in (customer, time) order and only a customer's last row in the cycle can
        # reach the target: the cycle's figures are its first and last rows, no group_by.
        cust = pl.col("_cust")
        firsts = in_cycle.filter((cust != cust.shift(1)).fill_null(True))
        bsum = _by_customer(pl.col("_badd")) if balances.height else pl.lit(0).cast(DEC)
        lasts = in_cycle.with_columns(bsum.alias("_bsum")).filter(
            (cust != cust.shift(-1)).fill_null(True)
        )
        cycles.append(
            lasts.select(
                "_cust",
                pl.lit(k, dtype=pl.Int32).alias("_win"),
                firsts["_ts"].alias("_open"),
                pl.when(reached).then(pl.col("_ts")).alias("_close"),
                pl.col("_ts").alias("last_activity_at"),
                (pl.col("_running") - pl.col("_bsum")).alias("_measure"),
                pl.col("target_value"),
                pl.col("_bsum").alias("_balance"),
            )
        )
        if balances.height:
            used = in_cycle.filter(pl.col("_badd") != 0).select("_cust").unique()
            balances = balances.join(used, on="_cust", how="anti")
        remaining = cur.filter(pl.col("_before") > 0).select(stream.columns)
    cycles = _late_balances(ctx, cycles, balances)
    progress = _progress_rows(ctx, cycles, target.target_id)
    out = GroupScore(progress=progress, achievements=combine(ctx, progress))
    out.rewards.append(kinds.target_rewards(ctx, progress))
    return out


def _cycles_by_search(
    ctx: GroupContext, stream: pl.DataFrame, target: Target
) -> list[pl.DataFrame] | None:
    """The cycles of the loop in `score_agnostic`, found by binary search instead of passes
    over every remaining record; None when this shortcut does not apply.

    When no contribution is negative (no returns, no negative amount) and no balance or
    enrolled value varies by customer, a customer's running sum only grows, so where a cycle
    opening at row s closes is one search on the stream's global running sum S: the first row
    j >= s with S[j] >= S[s] - (what row s adds) + target. Each pass then touches one row per
    customer still cycling, not every record left (a near-daily shopper makes ~70 cycles of
    "every 5 visits"; the passes re-read her records each time).

    A "first of its date (bill)" contribution counts the cycle's first row whatever the row
    before it, so from row s the cycle holds 1 + S[j] - S[s].
    """
    if stream.height == 0 or not stream["_regular"].all():
        return None
    first_of = _first_of_column(target.type, target.entity)
    cust = pl.col("_cust")
    one = 10**DEC.scale  # sums are exact in Decimal units (Int128 counts of 10^-4)
    if first_of is not None:
        opens = (cust != cust.shift(1)) | (pl.col(first_of) != pl.col(first_of).shift(1))
        units = opens.fill_null(True).cast(pl.Int128) * one
    elif target.type is TargetType.COUNT:
        units = pl.lit(one, dtype=pl.Int128)
    else:
        units = pl.col("_amount").fill_null(0).cast(DEC).to_physical()
    frame = stream.select(
        units.alias("_c"), (cust != cust.shift(1)).fill_null(True).alias("_opens")
    )
    step = frame["_c"]
    if step.min() < 0:  # type: ignore[operator]
        return None  # the running sum can fall: the passes find the cycles
    total = step.cum_sum()
    ts = stream["_ts"]
    starts = frame["_opens"].arg_true()
    ends = pl.concat([starts.slice(1) - 1, pl.Series([stream.height - 1], dtype=starts.dtype)])
    at, last, who = starts.cast(pl.Int64), ends.cast(pl.Int64), stream["_cust"].gather(starts)
    cycles: list[pl.DataFrame] = []
    for k in range(1, ctx.group.max_cycles + 1):
        if at.len() == 0:
            break
        goal = _goal(target, k)
        # What the cycle holds at row j is S[j] - base.
        opening = _units(one) if first_of is not None else step.gather(at)
        base = total.gather(at) - opening
        if goal is None:
            closes = pl.repeat(None, at.len(), dtype=pl.Int64, eager=True)
        else:
            need = base + _units(int(goal.scaleb(DEC.scale)))
            found = total.search_sorted(need, side="left").cast(pl.Int64)
            found = pl.select(pl.max_horizontal(found, at)).to_series()
            closes = pl.select(pl.when(found <= last).then(found)).to_series()
        upto = closes.fill_null(last)  # the cycle's last row: where it closes, or the last
        measure = total.gather(upto) - base
        cycles.append(
            pl.DataFrame({
                "_cust": who,
                "_win": pl.repeat(k, at.len(), dtype=pl.Int32, eager=True),
                "_open": ts.gather(at),
                "_close": ts.gather(upto).zip_with(closes.is_not_null(), ts.clear(at.len())),
                "last_activity_at": ts.gather(upto),
                "_measure": pl.select(measures.from_units(pl.lit(measure))).to_series(),
                "target_value": pl.repeat(goal, at.len(), dtype=DEC, eager=True),
                "_balance": pl.repeat(0, at.len(), dtype=DEC, eager=True),
            })
        )
        going = (closes < last).fill_null(False)
        at, last, who = (closes + 1).filter(going), last.filter(going), who.filter(going)
    return cycles


def _goal(target: Target, k: int) -> Decimal | None:
    """Cycle k's target when it is the default value, the same for every customer."""
    frame = pl.DataFrame({"_win": [k]}, schema={"_win": pl.Int32})
    return frame.select(enrolment.default_values(target).cast(DEC)).item()


def _units(value: int) -> pl.Series:
    """One Int128 value, which polars broadcasts in arithmetic with a Series."""
    return pl.Series([value], dtype=pl.Int128)


def _first_of_column(target_type: TargetType, entity: TargetEntity) -> str | None:
    """The column whose first row in a run counts (`_contribution`), if the measure is one."""
    if target_type is TargetType.VISIT:
        return "_date"
    if target_type is TargetType.COUNT and entity is TargetEntity.LINEITEM:
        return "_bill"
    return None


def _late_balances(
    ctx: GroupContext, cycles: list[pl.DataFrame], balances: pl.DataFrame
) -> list[pl.DataFrame]:
    """A balance whose enrolled_at no record followed goes to the cycle still open at D."""
    if not cycles or balances.height == 0:
        return cycles
    frame = pl.concat(cycles, how="vertical_relaxed")
    last = frame.group_by("_cust").agg(pl.col("_win").max().alias("_last"))
    late = balances.filter(
        pl.col("_enr").is_not_null() & (pl.col("_enr") < pl.lit(ctx.end_of_as_of).cast(UTC_TS))
    ).join(last, on="_cust", how="inner")
    frame = (
        frame.join(late.select("_cust", "_last", "_bal"), on="_cust", how="left")
        .with_columns(
            pl.when((pl.col("_win") == pl.col("_last")) & pl.col("_close").is_null())
            .then(pl.col("_balance") + pl.col("_bal"))
            .otherwise(pl.col("_balance"))
            .cast(DEC)
            .alias("_balance")
        )
        .drop("_last", "_bal")
    )
    return [frame]


def _progress_rows(ctx: GroupContext, cycles: list[pl.DataFrame], target_id: int) -> pl.DataFrame:
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
            (
                pl.col("target_value").is_not_null()
                & (pl.col("_balance") + pl.col("_measure") >= pl.col("target_value"))
            )
            .fill_null(False)
            .alias("achieved"),
            pl.col("_close").cast(UTC_TS).alias("achieved_at"),
            pl.col("last_activity_at").cast(UTC_TS),
        )
        .sort("customer_id", "period_index")
        .select(TARGET_PROGRESS)
    )
