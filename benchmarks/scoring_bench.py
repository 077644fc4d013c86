"""Time `pipeline.scoring.engine.score` on 8 groups against the bare floor of the same inputs.

Issue 5, acceptance 2: scoring must cost at most 3x what the plainest polars job over the same
records costs (read them once, then per group one ``group_by(customer, window).agg(sum)`` with
the window a truncation of the record date). Both stages run in one process on the same frames,
each once after a warm-up on a small slice, so the ratio compares like with like.

The synthetic exports are generated with polars only (hash-based pseudo-random, seeded; numpy is
not a project dependency): skewed customers and spend, ~3% returns (two thirds with a parent
bill), ~2 line items per bill with categories, events, points of both types, stores with zones
and concepts, all dated in 2025. Usage::

    .venv/bin/python benchmarks/scoring_bench.py [--transactions N] [--customers C] [--seed S]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import polars as pl

from pipeline.config import Config
from pipeline.definitions import model as m
from pipeline.rules import tree
from pipeline.scoring.engine import ScoreResult, default_workers, score

DEC = pl.Decimal(18, 4)
TS = pl.Datetime("us", "UTC")
YEAR_START = datetime(2025, 1, 1)
YEAR_SECONDS = 365 * 24 * 3600
AS_OF = date(2025, 12, 31)
CATEGORIES = ["GROCERY", "DAIRY", "BAKERY", "DRINKS", "HOME", "BEAUTY", "TOYS", "GARDEN"]
EVENT_NAMES = ["AppOpen", "Review", "Referral"]
STORES = 200


# --- synthetic exports ----------------------------------------------------------------------

def _uniform(seed: int, salt: int) -> pl.Expr:
    """A per-row pseudo-random float in [0, 1); floats only pick values, never hold money."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    return (row.hash(seed * 1_000 + salt) % 1_000_003) / 1_000_003


def _cents(cents: pl.Expr) -> pl.Expr:
    """Integer cents -> exact Decimal(18, 4)."""
    return (cents.cast(DEC) * pl.lit(Decimal("0.01")).cast(DEC)).cast(DEC)


def _instant(u: pl.Expr) -> pl.Expr:
    """A uniform instant of 2025 (UTC) from a uniform float."""
    seconds = (u * YEAR_SECONDS).cast(pl.Int64)
    return (pl.lit(YEAR_START) + pl.duration(seconds=seconds)).dt.replace_time_zone("UTC")


def _skewed_customer(u: pl.Expr, customers: int) -> pl.Expr:
    """u^1.5 piles records onto low ids: a few heavy shoppers, a long tail of occasional ones."""
    return (u.pow(1.5) * customers).cast(pl.Int64) + 1


def _store(u: pl.Expr) -> pl.Expr:
    return pl.format("S{}", (u * STORES).cast(pl.Int64) + 1)


def generate(transactions: int, customers: int, seed: int = 5) -> dict[str, pl.DataFrame]:
    """The six exports of SPEC §3 with the dtypes `tests/engine_helpers.py` uses.

    ~97% of `transactions` rows are REGULAR bills; the rest are RETURNs, two thirds of them
    pointing at an earlier bill of the same customer (and then carrying one returned line).
    """
    n_returns = transactions * 3 // 100
    n_regular = transactions - n_returns
    n_parented = n_returns * 2 // 3
    u = lambda salt: _uniform(seed, salt)  # noqa: E731 - short local alias keeps columns readable

    # Spend follows a Pareto-like tail: most bills small, a few large (capped at 5,000).
    regular = pl.select(row=pl.int_range(n_regular, dtype=pl.Int64)).with_columns(
        txn_id=pl.format("T{}", pl.col("row")),
        customer_id=_skewed_customer(u(1), customers),
        txn_time=_instant(u(2)),
        _cents=(pl.lit(2000.0) * (u(3) + 0.001).pow(-0.7)).clip(upper_bound=500_000).cast(pl.Int64),
        _disc=(u(4) * 10).cast(pl.Int64) * 10,
        store_id=_store(u(5)),
        _lines=(u(6) * 3).cast(pl.Int32) + 1,  # 1..3 lines, mean 2
    )
    # Parented returns take back part of a bill, 0-40 days later (never after the year's end).
    parented = (
        regular.select(pl.col("row").sample(n_parented, with_replacement=False, seed=seed))
        .join(regular, on="row", how="inner")
        .with_columns(
            parent_txn_id=pl.col("txn_id"),
            txn_time=pl.min_horizontal(
                pl.col("txn_time") + pl.duration(days=(u(7) * 40).cast(pl.Int64)),
                pl.lit(datetime(2025, 12, 31, 23, 0)).dt.replace_time_zone("UTC"),
            ),
            _cents=(pl.col("_cents") * (u(8) * 0.9 + 0.1)).cast(pl.Int64).clip(lower_bound=1),
            _disc=pl.lit(0, pl.Int64),
            _lines=pl.lit(1, pl.Int32),
        )
    )
    parentless = pl.select(row=pl.int_range(n_returns - n_parented, dtype=pl.Int64)).with_columns(
        customer_id=_skewed_customer(u(9), customers),
        txn_time=_instant(u(10)),
        _cents=(u(11) * 20_000).cast(pl.Int64) + 100,
        _disc=pl.lit(0, pl.Int64),
        store_id=_store(u(12)),
        _lines=pl.lit(0, pl.Int32),
        parent_txn_id=pl.lit(None, pl.String),
    )
    rets = pl.concat(
        [
            parented.select(
                "customer_id", "txn_time", "_cents", "_disc", "store_id", "_lines", "parent_txn_id"
            ),
            parentless.select(
                "customer_id", "txn_time", "_cents", "_disc", "store_id", "_lines", "parent_txn_id"
            ),
        ]
    ).with_columns(
        txn_id=pl.format("R{}", pl.int_range(pl.len(), dtype=pl.Int64)),
        type=pl.lit("RETURN"),
        # Exports write returns negative; the engine takes |amount| (SPEC §13).
        _cents=-pl.col("_cents"),
    )
    regular = regular.with_columns(type=pl.lit("REGULAR"), parent_txn_id=pl.lit(None, pl.String))
    cols = ["txn_id", "customer_id", "txn_time", "_cents", "_disc", "type", "parent_txn_id",
            "store_id", "_lines"]
    both = pl.concat([regular.select(cols), rets.select(cols)])
    txns = both.select(
        pl.col("txn_id"),
        pl.col("customer_id"),
        pl.col("txn_time").cast(TS),
        _cents(pl.col("_cents")).alias("amount"),
        pl.col("type"),
        pl.col("parent_txn_id"),
        pl.col("store_id"),
        _cents(pl.col("_cents") + pl.col("_cents").sign() * pl.col("_disc")).alias("gross_amount"),
        _cents(pl.col("_disc")).alias("discount"),
        pl.lit(None, DEC).alias("qty"),  # QUANTITY falls back to the line items' qty
    )
    return {
        "transactions": txns,
        "line_items": _line_items(both, seed),
        "events": _events(transactions // 2, customers, seed),
        "points": _points(transactions, customers, seed),
        "stores": _stores(),
        "enrolments": pl.DataFrame(schema=ENROLMENTS),
    }


ENROLMENTS = {"group_name": pl.String, "customer_id": pl.Int64, "target_name": pl.String,
              "period_ref": pl.String, "enrolled_at": TS, "unenrolled_at": TS,
              "target_value": DEC, "initial_balance": DEC}


def _line_items(bills: pl.DataFrame, seed: int) -> pl.DataFrame:
    """`_lines` lines per bill; a bill's cents are split evenly (remainder on line 1)."""
    u = lambda salt: _uniform(seed, salt)  # noqa: E731
    lines = (
        bills.filter(pl.col("_lines") > 0)
        .select("txn_id", "_cents", "_lines", line_no=pl.int_ranges(1, pl.col("_lines") + 1,
                                                                     dtype=pl.Int32))
        .explode("line_no")
    )
    share = pl.col("_cents") // pl.col("_lines")
    cents = pl.when(pl.col("line_no") == 1).then(pl.col("_cents") - share * (pl.col("_lines") - 1))
    cents = cents.otherwise(share)
    return lines.select(
        pl.col("txn_id"),
        pl.col("line_no"),
        ((u(20) * 5).cast(pl.Int64) + 1).cast(DEC).alias("qty"),
        _cents(cents).alias("amount"),
        pl.format("I{}", (u(21) * 5_000).cast(pl.Int64)).alias("item_code"),
        pl.lit(None, DEC).alias("rate"),
        _cents(cents).alias("value"),
        pl.lit(0, DEC).alias("discount"),
        pl.lit(pl.Series(CATEGORIES))
        .gather((u(22) * len(CATEGORIES)).cast(pl.Int64))
        .alias("category"),
    )


def _events(n: int, customers: int, seed: int) -> pl.DataFrame:
    u = lambda salt: _uniform(seed, salt)  # noqa: E731
    return pl.select(row=pl.int_range(n, dtype=pl.Int64)).select(
        pl.format("E{}", pl.col("row")).alias("event_id"),
        _skewed_customer(u(30), customers).alias("customer_id"),
        pl.lit(pl.Series(EVENT_NAMES)).gather((u(31) * len(EVENT_NAMES)).cast(pl.Int64))
        .alias("event_name"),
        _instant(u(32)).cast(TS).alias("event_time"),
        _store(u(33)).alias("store_id"),
        _cents((u(34) * 1_000).cast(pl.Int64)).alias("points"),
    )


def _points(n: int, customers: int, seed: int) -> pl.DataFrame:
    """85% REGULAR, 15% PROMOTIONAL points rows."""
    u = lambda salt: _uniform(seed, salt)  # noqa: E731
    return pl.select(row=pl.int_range(n, dtype=pl.Int64)).select(
        pl.format("P{}", pl.col("row")).alias("points_id"),
        _skewed_customer(u(40), customers).alias("customer_id"),
        _instant(u(41)).cast(TS).alias("awarded_at"),
        _cents((u(42) * 20_000).cast(pl.Int64) + 100).alias("points"),
        pl.when(u(43) < 0.85).then(pl.lit("REGULAR")).otherwise(pl.lit("PROMOTIONAL"))
        .alias("points_type"),
        _store(u(44)).alias("store_id"),
    )


def _stores() -> pl.DataFrame:
    ids = pl.int_range(1, STORES + 1, dtype=pl.Int64)
    return pl.select(
        pl.format("S{}", ids).alias("store_id"),
        pl.format("Z{}", ids % 10).alias("zone_id"),
        pl.format("C{}", ids % 4).alias("concept_id"),
    )


def customer_slice(frames: Mapping[str, pl.DataFrame], every: int) -> dict[str, pl.DataFrame]:
    """Every `every`-th customer with all their records: a small, consistent slice for warm-up."""
    mine = pl.col("customer_id") % every == 0
    txns = frames["transactions"].filter(mine)
    return {
        "transactions": txns,
        "line_items": frames["line_items"].join(txns.select("txn_id"), on="txn_id", how="semi"),
        "events": frames["events"].filter(mine),
        "points": frames["points"].filter(mine),
        "stores": frames["stores"],
        "enrolments": frames["enrolments"],
    }


# --- groups ---------------------------------------------------------------------------------

def _months() -> tuple[m.Period, ...]:
    return tuple(
        m.Period(index=k, start=date(2025, k, 1), ref_code=f"M{k:02d}",
                 end=date(2025 + k // 12, k % 12 + 1, 1) - timedelta(days=1))
        for k in range(1, 13)
    )


def _weeks() -> tuple[m.Period, ...]:
    """ISO weeks (Monday first) covering 2025, so they match a plain `dt.truncate("1w")`."""
    first = date(2024, 12, 30)
    return tuple(
        m.Period(index=k, start=first + timedelta(days=7 * (k - 1)),
                 end=first + timedelta(days=7 * k - 1))
        for k in range(1, 54)
    )


def _quarters() -> tuple[m.Period, ...]:
    return tuple(
        m.Period(index=q, start=date(2025, 3 * q - 2, 1),
                 end=date(2025 + q // 4, (3 * q) % 12 + 1, 1) - timedelta(days=1), ref_code=f"Q{q}")
        for q in range(1, 5)
    )


def _target(tid: int, name: str, entity: str, ttype: str, value: str,
            rule: tree.Node = tree.TRUE, **kw: object) -> m.Target:
    return m.Target(target_id=tid, name=name, entity=m.TargetEntity(entity),
                    type=m.TargetType(ttype), rule=rule, default_values=(Decimal(value),),
                    enrolment_method=m.EnrolmentMethod.TRANSACTION, **kw)  # type: ignore[arg-type]


def _group(gid: int, name: str, kind: str, evaluation: str, targets: tuple[m.Target, ...],
           periods: tuple[m.Period, ...] = (), **kw: object) -> m.Group:
    """A group over 2025; a FIXED group ends with its last period (as `parse_group` sets it)."""
    end = periods[-1].end if periods else date(2025, 12, 31)
    return m.Group(group_id=gid, name=name, tracking_type=m.TrackingType(kind),
                   evaluation_type=m.EvaluationType(evaluation), targets=targets, periods=periods,
                   start_date=date(2025, 1, 1), end_date=end, **kw)  # type: ignore[arg-type]


FIXED, CYCLIC, AGNOSTIC = "FIXED_CALENDAR_WINDOW", "CYCLIC_WINDOW", "PERIOD_AGNOSTIC_WINDOW"
GROCERY = tree.Binary("==", tree.Name("currentLineItem", "category"), tree.Literal("GROCERY"))


@dataclass(frozen=True)
class BenchGroup:
    """A group and how its floor aggregates: which export, time column, truncation, sums."""

    group: m.Group
    source: str
    time_col: str
    every: str  # polars duration string for `dt.truncate`
    sums: tuple[str, ...]


def build_groups() -> list[BenchGroup]:
    """The 8 groups of issue 5: every window kind and measure family, one CAPPING group."""
    months, weeks, quarters = _months(), _weeks(), _quarters()
    levels = tuple(m.StreakLevel(i, f"{n} weeks", n) for i, n in enumerate((4, 8, 16), start=1))
    txn = ("transactions", "txn_time")
    return [
        BenchGroup(_group(1, "monthly spend", "DEFAULT", FIXED,
                          (_target(11, "spend 500", "TRANSACTION", "SALES", "500"),),
                          periods=months), *txn, "1mo", ("amount",)),
        BenchGroup(_group(2, "weekly visits", "STREAK", FIXED,
                          (_target(21, "visit", "TRANSACTION", "VISIT", "1"),),
                          periods=weeks, streak_levels=levels), *txn, "1w", ("amount",)),
        BenchGroup(_group(3, "quarter spend and bills", "UNIFIED", FIXED,
                          (_target(31, "spend 1500", "TRANSACTION", "SALES", "1500"),
                           _target(32, "bills 6", "TRANSACTION", "COUNT", "6")),
                          periods=quarters), *txn, "1q", ("amount",)),
        BenchGroup(_group(4, "two of three", "UNIFIED", FIXED,
                          (_target(41, "spend 400", "TRANSACTION", "SALES", "400"),
                           _target(42, "bills 3", "TRANSACTION", "COUNT", "3"),
                           _target(43, "grocery qty 5", "LINEITEM", "QUANTITY", "5", GROCERY)),
                          periods=months, combination_type="ANY", combination_count=2),
                   *txn, "1mo", ("amount",)),
        BenchGroup(_group(5, "cyclic gross", "DEFAULT", CYCLIC,
                          (_target(51, "gross 600", "TRANSACTION", "GROSS_SALES", "600"),),
                          frequency_type=m.FrequencyType.MONTHLY, frequency=1,
                          recurring_cycles=12), *txn, "1mo", ("gross_amount",)),
        BenchGroup(_group(6, "every 500", "DEFAULT", AGNOSTIC,
                          (_target(61, "each 500", "TRANSACTION", "SALES", "500"),)),
                   *txn, "1mo", ("amount",)),
        BenchGroup(_group(7, "app opens", "DEFAULT", FIXED,
                          (_target(71, "opens 3", "EVENT", "COUNT", "3", event_name="AppOpen"),),
                          periods=months), "events", "event_time", "1mo", ("points",)),
        BenchGroup(_group(8, "points cap", "CAPPING", FIXED,
                          (_target(81, "cap 2000", "REWARDS", "ALL_POINTS", "2000"),),
                          periods=months), "points", "awarded_at", "1mo", ("points",)),
    ]


def capping_available() -> bool:
    """The CAPPING kind needs `pipeline.scoring.capping`, which may not be committed yet."""
    return importlib.util.find_spec("pipeline.scoring.capping") is not None


# --- the two stages -------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One timed step; `seconds` is wall-clock (the ratio uses it), `cpu` is this process's CPU
    time, printed because the machine is shared and wall time grows with other load."""

    name: str
    rows: int
    seconds: float
    cpu: float = 0.0


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - started, time.process_time() - cpu


def read_all(sources: Mapping[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    return {name: lf.collect() for name, lf in sources.items()}


def floor_aggregate(frame: pl.DataFrame, bench: BenchGroup) -> pl.DataFrame:
    """The bare job: customer x truncated date, summing the group's measured column."""
    return frame.group_by(
        "customer_id", pl.col(bench.time_col).dt.truncate(bench.every).alias("_window")
    ).agg(pl.col(c).sum() for c in bench.sums)


def run_floor(sources: Mapping[str, pl.LazyFrame],
              benches: list[BenchGroup]) -> tuple[list[Stage], dict[str, pl.DataFrame]]:
    """Read once, then one group_by per group. Returns the stages and the aggregates by group."""
    read, seconds, cpu = _timed(lambda: read_all(sources))
    assert isinstance(read, dict)
    stages = [Stage("floor: read", sum(f.height for f in read.values()), seconds, cpu)]
    outputs: dict[str, pl.DataFrame] = {}
    for b in benches:
        agg, seconds, cpu = _timed(lambda b=b: floor_aggregate(read[b.source], b))
        assert isinstance(agg, pl.DataFrame)
        outputs[b.group.name] = agg
        stages.append(Stage(f"floor: {b.group.name}", read[b.source].height, seconds, cpu))
    return stages, outputs


def run_score(sources: Mapping[str, pl.LazyFrame], groups: list[m.Group],
              rows: int, workers: int = 1) -> tuple[Stage, ScoreResult]:
    """`score` as `run` calls it: groups in `workers` threads (the local engine's default)."""
    result, seconds, cpu = _timed(
        lambda: score(sources, groups, AS_OF, Config(), workers=workers)
    )
    assert isinstance(result, ScoreResult)
    return Stage(f"score: {len(groups)} groups, {workers} thread(s)", rows, seconds, cpu), result


def table(stages: list[Stage], floor_seconds: float) -> str:
    lines = [f"{'stage':<36} {'rows':>12} {'seconds':>9} {'rows/s':>12} {'x floor':>8} "
             f"{'cpu s':>8}"]
    for s in stages:
        rate = s.rows / s.seconds if s.seconds else float("inf")
        lines.append(f"{s.name:<36} {s.rows:>12,} {s.seconds:>9.3f} {rate:>12,.0f} "
                     f"{s.seconds / floor_seconds:>8.2f} {s.cpu:>8.2f}")
    return "\n".join(lines)


def _lazy(frames: Mapping[str, pl.DataFrame]) -> dict[str, pl.LazyFrame]:
    return {name: f.lazy() for name, f in frames.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default: transactions / 20")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="threads groups are scored in (default: the local engine's)")
    parser.add_argument("--per-group", action="store_true",
                        help="also time score() on each group alone (diagnosis; not in the ratio)")
    args = parser.parse_args()
    customers = args.customers or max(args.transactions // 20, 1)

    frames, gen_seconds, _ = _timed(lambda: generate(args.transactions, customers, args.seed))
    assert isinstance(frames, dict)
    print(f"generated in {gen_seconds:.1f} s: "
          + ", ".join(f"{k} {v.height:,}" for k, v in frames.items()))
    benches = build_groups()
    if not capping_available():
        print("note: pipeline.scoring.capping is missing; the CAPPING group is left out of "
              "both stages")
        benches = [b for b in benches if b.group.tracking_type is not m.TrackingType.CAPPING]
    groups = [b.group for b in benches]

    load_before = os.getloadavg()[0]
    warm = _lazy(customer_slice(frames, 50))
    run_floor(warm, benches)
    run_score(warm, groups, 0, args.workers)

    sources = _lazy(frames)
    floor_stages, _ = run_floor(sources, benches)
    floor_seconds = sum(s.seconds for s in floor_stages)
    in_rows = floor_stages[0].rows
    floor_cpu = sum(s.cpu for s in floor_stages)
    floor_total = Stage("floor: total", in_rows, floor_seconds, floor_cpu)
    score_stage, result = run_score(sources, groups, in_rows, args.workers)
    stages = [*floor_stages, floor_total, score_stage]
    if args.per_group:
        for g in groups:
            stage, _ = run_score(sources, [g], in_rows)
            stages.append(Stage(f"  (alone) {g.name}", in_rows, stage.seconds, stage.cpu))
    print(table(stages, floor_seconds))
    out_rows = {k: v.height for k, v in result.tables.items() if v.height}
    print(f"outputs: {out_rows}, rewards {result.rewards.height:,}, "
          f"failures {result.failures or 0}")
    load_after = os.getloadavg()[0]
    print(f"load average (1 min) before: {load_before:.1f}, after: {load_after:.1f}; "
          f"{os.cpu_count()} cores")
    print(f"scoring/floor CPU-time ratio (steadier on a busy machine): "
          f"{score_stage.cpu / floor_cpu:.2f}")
    print(f"scoring/floor ratio: {score_stage.seconds / floor_seconds:.2f}")


if __name__ == "__main__":
    main()
