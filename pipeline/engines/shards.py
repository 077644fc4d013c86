"""Customer shards: the loaded exports split by a hash of the customer, as Parquet.

Both engines use them when the records are too many to score at once: the local engine scores
the shards one after another in this process, the Dask engine one per task on its workers. Every
output row belongs to one customer and all of a customer's records are in one shard, so scoring
shard by shard gives the same rows as scoring everyone at once. What crosses customers is handled
here (a return of another customer's bill: both customers go to one shard) or by the run's
staging (leaderboards are ranked again over every shard; a group failing in one shard fails).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.runs import SOURCE_TABLES
from pipeline.workspace import base_tables, quote_ident, quote_literal

SHARD = "__milestones_shard"  # the partition column; unlikely to clash with an export column
SHARED = ("stores",)
LINKS = "_milestones_shard_links"
MEASURED = ("transactions", "line_items", "events", "points")

__all__ = [
    "customer_links",
    "export_shards",
    "read_shard",
    "record_count",
    "shard_count",
    "sharded_select",
]


def shard_count(records: int, threads: int, per_shard: int) -> int:
    """A multiple of `threads` with at most `per_shard` records per shard."""
    threads = max(threads, 1)
    return threads * max(1, math.ceil(records / (per_shard * threads)))




def export_shards(con: duckdb.DuckDBPyConnection, root: Path, count: int) -> dict[str, pl.Schema]:
    """Write every loaded export under `root`, partitioned into `count` customer shards.

    Layout: ``<root>/<table>/__milestones_shard=<k>/*.parquet`` (a shard with no rows has no
    folder) and ``<root>/stores.parquet``. Returns the polars schema of each loaded export, so a
    task types its frames exactly as `runs.read_sources` does (and an empty shard keeps its
    columns: a rule naming a missing column must fail the same way in every shard).
    """
    root.mkdir(parents=True, exist_ok=True)
    present = base_tables(con)
    schemas = {
        name: pl.from_arrow(con.sql(f"SELECT * FROM {quote_ident(name)} LIMIT 0").to_arrow_table())
        .schema  # type: ignore[union-attr]
        for name in SOURCE_TABLES
        if name in present
    }
    links = customer_links(con, schemas["transactions"]) if "transactions" in present else None
    if links is not None:
        con.register(LINKS, links)
    try:
        for name in schemas:
            target = quote_literal(root / (f"{name}.parquet" if name in SHARED else name))
            if name in SHARED:
                con.execute(f"COPY {quote_ident(name)} TO {target} (FORMAT parquet)")
                continue
            con.execute(
                f"COPY ({sharded_select(name, links is not None)}) TO {target} "
                f"(FORMAT parquet, PARTITION_BY ({SHARD}))",
                {"n": count},
            )
    finally:
        if links is not None:
            con.unregister(LINKS)
    return schemas


def customer_links(con: duckdb.DuckDBPyConnection, schema: pl.Schema) -> pl.DataFrame | None:
    """Customers that must share a shard: a return and its parent bill of another customer.

    Returns ``customer_id, shard_customer`` (the smallest id of its linked set) for every linked
    customer, or None when every return's parent is its own customer's (the usual case).
    """
    pairs = con.sql(
        "SELECT DISTINCT r.customer_id, p.customer_id FROM transactions r "
        "JOIN transactions p ON p.txn_id = r.parent_txn_id "
        "WHERE r.customer_id <> p.customer_id"
    ).fetchall()
    if not pairs:
        return None
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:  # the smaller id stays the root, so a root is its set's smallest id
            parent[max(ra, rb)] = min(ra, rb)
    ids = sorted({c for pair in pairs for c in pair})
    dtype = schema["customer_id"]
    return pl.DataFrame(
        {"customer_id": ids, "shard_customer": [find(c) for c in ids]},
        schema={"customer_id": dtype, "shard_customer": dtype},
    )


def sharded_select(table: str, linked: bool) -> str:
    """The export's rows with their shard number ``$n`` (a hash of the owning customer)."""
    if table == "line_items":
        # Line items carry no customer: their transaction's. An orphan line goes to shard 0.
        owner = "o.customer_id"
        source = (
            "line_items x LEFT JOIN (SELECT txn_id, min(customer_id) AS customer_id "
            "FROM transactions GROUP BY txn_id) o ON o.txn_id = x.txn_id"
        )
    else:
        owner = "x.customer_id"
        source = f"{quote_ident(table)} x"
    if linked:
        source += f" LEFT JOIN {LINKS} m ON m.customer_id = {owner}"
        owner = f"coalesce(m.shard_customer, {owner})"
    return f"SELECT x.*, coalesce(hash({owner}) % $n, 0) AS {SHARD} FROM {source}"


def record_count(con: duckdb.DuckDBPyConnection) -> int:
    """Records the engine measures (every export but stores and enrolments)."""
    present = base_tables(con)
    total = 0
    for name in MEASURED:
        if name in present:
            total += int(con.sql(f"SELECT count(*) FROM {quote_ident(name)}").fetchall()[0][0])
    return total


def read_shard(
    root: Path, shard: int, schemas: Mapping[str, pl.Schema]
) -> dict[str, pl.LazyFrame]:
    """Shard `shard`'s records as lazy scans, typed as `runs.read_sources` types the whole
    tables (each group's query then reads only the columns and rows it needs)."""
    out: dict[str, pl.LazyFrame] = {}
    for name in SOURCE_TABLES:
        schema = schemas.get(name)
        if schema is None:  # never loaded: an empty frame with no columns, as read_sources
            out[name] = pl.LazyFrame()
            continue
        if name in SHARED:
            files = [root / f"{name}.parquet"]
        else:
            files = sorted((root / name / f"{SHARD}={shard}").glob("*.parquet"))
        if files:
            scan = pl.scan_parquet(files, hive_partitioning=False).select(list(schema))
            out[name] = scan.cast(dict(schema))
        else:
            out[name] = pl.LazyFrame(schema=schema)
    return out


