"""Streak detection against measuring the windows it runs on (issue 6, acceptance 5).

A STREAK group with 24 monthly FIXED periods and a SALES target; N customers with a few bills a
month each. In one process: (a) measuring — the engine's plan for the group, every target's
progress rows and the period achievements; (b) streak detection — `streak_tables` on those
achievements. Prints both and their ratio.

    python benchmarks/streak_vs_measure.py --customers 1000000 --bills-per-window 1
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from decimal import Decimal

import polars as pl

from pipeline.config import Config
from pipeline.definitions import model as m
from pipeline.rules import tree
from pipeline.scoring import engine
from pipeline.scoring.context import GroupContext
from pipeline.scoring.streaks import streak_tables
from tests.engine_helpers import SCHEMAS

DEC = pl.Decimal(18, 4)


def months(n: int) -> tuple[m.Period, ...]:
    first = date(2024, 1, 1)
    out = []
    for k in range(n):
        start = pl.Series([first]).dt.offset_by(f"{k}mo")[0]
        end = pl.Series([first]).dt.offset_by(f"{k + 1}mo").dt.offset_by("-1d")[0]
        out.append(m.Period(index=k + 1, start=start, end=end, ref_code=f"M{k + 1:02d}"))
    return tuple(out)


def sources(customers: int, windows: int, per_window: int) -> dict[str, pl.LazyFrame]:
    n = customers * windows * per_window
    row = pl.int_range(n, dtype=pl.Int64)
    u = (row.hash(7) % 1_000_003) / 1_000_003
    txns = pl.select(
        pl.format("T{}", row).alias("txn_id"),
        (row % customers + 1).alias("customer_id"),
        (
            pl.lit(date(2024, 1, 1)).cast(pl.Datetime("us"))
            + pl.duration(days=(row // customers) % windows * 30 + (u * 28).cast(pl.Int64))
        )
        .dt.replace_time_zone("UTC")
        .alias("txn_time"),
        ((u * 20_000).cast(pl.Int64).cast(DEC) / 100).cast(DEC).alias("amount"),
        pl.lit("REGULAR").alias("type"),
    )
    frames = {name: pl.DataFrame(schema=schema).lazy() for name, schema in SCHEMAS.items()}
    full = {
        c: txns[c] if c in txns.columns else pl.Series(c, [None] * n, dtype=t)
        for c, t in SCHEMAS["transactions"].items()
    }
    frames["transactions"] = pl.DataFrame(full).cast(SCHEMAS["transactions"]).lazy()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--bills-per-window", type=int, default=1)
    args = parser.parse_args()
    group = m.Group(
        group_id=1,
        name="bench streak",
        tracking_type=m.TrackingType.STREAK,
        evaluation_type=m.EvaluationType.FIXED,
        targets=(
            m.Target(
                target_id=1,
                name="spend",
                entity=m.TargetEntity.TRANSACTION,
                type=m.TargetType.SALES,
                rule=tree.TRUE,
                default_values=(Decimal("80"),),
                enrolment_method=m.EnrolmentMethod.TRANSACTION,
            ),
        ),
        periods=months(args.windows),
        streak_levels=(m.StreakLevel(1, "3 in a row", 3), m.StreakLevel(2, "6 in a row", 6)),
    )
    frames = sources(args.customers, args.windows, args.bills_per_window)
    frames = {k: v.collect().lazy() for k, v in frames.items()}
    as_of = group.periods[-1].end
    ctx = GroupContext(group=group, as_of=as_of, config=Config(), sources=frames)
    t0 = time.perf_counter()
    plan = engine.group_plan(ctx)
    progress = engine.target_frame(ctx, plan, group.targets[0])
    achievements = engine.combine(ctx, progress)
    measuring = time.perf_counter() - t0
    t1 = time.perf_counter()
    runs, _progress, levels = streak_tables(achievements, group)
    streaks = time.perf_counter() - t1
    print(
        f"customers {args.customers:,}  windows {args.windows}  "
        f"window rows {achievements.height:,}  runs {runs.height:,}  levels {levels.height:,}"
    )
    print(f"measuring windows: {measuring:8.2f} s")
    print(f"streak detection:  {streaks:8.2f} s")
    print(f"streak/measuring ratio: {streaks / measuring:.2f} (acceptance: < 1)")


if __name__ == "__main__":
    main()
