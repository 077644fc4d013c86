"""Loading 1,000,000 transactions from CSV: `milestones load` against DuckDB's own `read_csv`.

Both run side by side in one process on the same file, each into a fresh in-memory database:
the baseline is ``CREATE TABLE ... AS SELECT * FROM read_csv(...)`` (DuckDB infers the types,
checks nothing and rounds nothing); ours reads, types, validates with pandera, and upserts with
rejects. The target (issue 4) is a ratio below 3x.

    .venv/bin/python benchmarks/load_bench.py [--rows N] [--repeat R] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import polars as pl

from pipeline import workspace
from pipeline.loading import load_exports


def write_transactions(path: Path, rows: int) -> None:
    """A realistic export: 2% returns pointing at earlier bills, times with and without offsets."""
    i = pl.int_range(0, rows)
    ts = pl.datetime(2026, 1, 1) + pl.duration(seconds=i * 29)
    pl.select(
        txn_id=pl.lit("T") + i.cast(pl.String),
        customer_id=(i * 7919 % 50_000 + 1),
        txn_time=pl.when(i % 3 == 0)
        .then(ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .otherwise(ts.dt.strftime("%Y-%m-%d %H:%M:%S")),
        amount=((i * 37 % 100_000).cast(pl.Decimal(18, 2)) / 100).cast(pl.String),
        type=pl.when(i % 50 == 49).then(pl.lit("RETURN")).otherwise(pl.lit("REGULAR")),
        parent_txn_id=pl.when(i % 50 == 49).then(pl.lit("T") + (i - 7).cast(pl.String)),
        store_id=(i % 40 + 50_679_750).cast(pl.String),
        discount=pl.lit("0.50"),
        qty=(i % 5 + 1).cast(pl.String),
    ).write_csv(path)


def baseline(path: Path) -> float:
    con = duckdb.connect()
    start = time.perf_counter()
    con.execute(f"CREATE TABLE transactions AS SELECT * FROM read_csv('{path}')")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def ours(path: Path) -> tuple[float, int]:
    con = workspace.connect(":memory:")
    start = time.perf_counter()
    report = load_exports(con, "transactions", [str(path)], timezone="Europe/Paris")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed, report.rows_loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs of each")
    parser.add_argument("--keep", type=Path, help="write the CSV here instead of a temp dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        path = folder / f"transactions_{args.rows}.csv"
        if not path.exists():
            write_transactions(path, args.rows)
        size = path.stat().st_size / 1e6
        base_times, our_times, loaded = [], [], 0
        for _ in range(args.repeat):
            base_times.append(baseline(path))
            t, loaded = ours(path)
            our_times.append(t)
        b, o = min(base_times), min(our_times)
        print(f"file: {args.rows:,} transactions, {size:.1f} MB CSV")
        print(f"duckdb read_csv -> table : {b:7.3f} s  ({args.rows / b:,.0f} rows/s)")
        print(
            f"milestones load          : {o:7.3f} s  ({args.rows / o:,.0f} rows/s, "
            f"{loaded:,} loaded)"
        )
        print(f"ratio                    : {o / b:7.2f}x  (target < 3x)")


if __name__ == "__main__":
    main()
