"""Time `streak_tables` on 1,000,000 customers x 24 monthly windows of synthetic achievements.

Issue 6 asks streak detection to cost less than measuring the windows did; this gives the
streak side of that comparison. The frame is generated with polars (hash-based pseudo-random,
seeded), so the figure is reproducible. Usage::

    .venv/bin/python benchmarks/streak_bench.py [--customers N] [--windows W] [--grace G]
        [--shuffle]

The machine is shared, so the CPU seconds are printed next to the wall-clock ones.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

import polars as pl

from pipeline.definitions.model import EvaluationType, Group, StreakLevel, TrackingType
from pipeline.scoring.engine import PERIOD_ACHIEVEMENTS
from pipeline.scoring.streaks import streak_tables


def synthetic_achievements(customers: int, windows: int, seed: int = 6) -> pl.DataFrame:
    """`period_achievements` rows: every window ENDED but the last (RUNNING); ~70% achieved."""
    period = (pl.int_range(pl.len(), dtype=pl.Int64) % windows + 1).cast(pl.Int32)
    start = pl.lit(datetime(2023, 1, 1)).dt.offset_by(pl.format("{}mo", period - 1))
    achieved = (pl.int_range(pl.len(), dtype=pl.Int64).hash(seed) % 100) < 70
    return (
        pl.select(customer_id=pl.int_range(customers * windows, dtype=pl.Int64) // windows)
        .with_columns(period_index=period)
        .with_columns(
            group_id=pl.lit(1, pl.Int64),
            ref_code=pl.lit(None, pl.String),
            window_start=start,
            window_end=start.dt.offset_by("1mo") - pl.duration(microseconds=1),
            status=pl.when(period == windows).then(pl.lit("RUNNING")).otherwise(pl.lit("ENDED")),
            achieved=achieved,
        )
        .with_columns(
            achieved_at=pl.when("achieved")
            .then(pl.col("window_start") + pl.duration(days=3))
            .dt.replace_time_zone("UTC")
        )
        # period_achievements without the target counts, which streaks do not read.
        .select(PERIOD_ACHIEVEMENTS[:-2])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--grace", type=int, default=0)
    parser.add_argument("--shuffle", action="store_true", help="hand rows over in random order")
    args = parser.parse_args()

    frame = synthetic_achievements(args.customers, args.windows)
    if args.shuffle:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=6)
    group = Group(
        group_id=1,
        name="bench streak",
        tracking_type=TrackingType.STREAK,
        evaluation_type=EvaluationType.FIXED,
        targets=(),
        streak_levels=tuple(StreakLevel(i, f"L{n}", n) for i, n in enumerate((3, 6, 12), 1)),
        streak_grace_windows=args.grace,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    runs, progress, rewards = streak_tables(frame, group)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    order = ", shuffled" if args.shuffle else ""
    print(
        f"streak_tables: {frame.height:,} rows ({args.customers:,} customers x {args.windows} "
        f"windows, grace {args.grace}{order}) in {seconds:.2f} s ({cpu:.2f} s CPU) -> "
        f"{runs.height:,} runs, {progress.height:,} progress rows, {rewards.height:,} level rewards"
    )


if __name__ == "__main__":
    main()
