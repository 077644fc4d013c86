"""Customer shards: the loaded exports split by a hash of the customer.

Both engines use them when the records are too many to score at once: the local engine reads
the shards one after another from the database into memory (`database_shards`), the Dask engine
exports them to Parquet (`export_shards`) and scores one per task on its workers. Every
output row belongs to one customer and all of a customer's records are in one shard, so scoring
shard by shard gives the same rows as scoring everyone at once. What crosses customers is handled
here (a return of another customer's bill: both customers go to one shard) or by the run's
staging (leaderboards are ranked again over every shard; a group failing in one shard fails).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from polars.io.plugins import register_io_source

from pipeline.errors import MilestonesError
from pipeline.loading.kinds import KINDS, ColumnType
from pipeline.runs import SOURCE_TABLES
from pipeline.workspace import base_tables, quote_ident, quote_literal

SHARD = "__milestones_shard"  # the partition column; unlikely to clash with an export column
SHARED = ("stores",)
LINKS = "_milestones_shard_links"
OWNERS = "_milestones_shard_owners"  # temp table: each bill's shard, for its line items
ROWS = "_milestones_shard_rows"  # registered for a moment: the row ids of a shard held
MEASURED = ("transactions", "line_items", "events", "points")

__all__ = [
    "DatabaseShards",
    "customer_links",
    "database_shards",
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
    schemas = {name: _schema(con, name) for name in SOURCE_TABLES if name in present}
    with _linked_customers(con, present) as linked:
        for name in schemas:
            target = quote_literal(root / (f"{name}.parquet" if name in SHARED else name))
            if name in SHARED:
                con.execute(f"COPY {quote_ident(name)} TO {target} (FORMAT parquet)")
                continue
            con.execute(f"COPY ({sharded_select(name, linked, count)}) TO {target} "
                        f"(FORMAT parquet, PARTITION_BY ({SHARD}))")
    return schemas


def customer_links(con: duckdb.DuckDBPyConnection, schema: pl.Schema) -> pl.DataFrame | None:
    """Customers that must share a shard: a return and its parent bill of another customer.

    Returns ``customer_id, shard_customer`` (the smallest id of its linked set) for every linked
    customer, or None when every return's parent is its own customer's (the usual case).
    """
    # The returns first: DuckDB then hashes the few parent ids, not every bill (3x faster).
    pairs = con.sql(
        "WITH r AS (SELECT customer_id, parent_txn_id FROM transactions "
        "WHERE parent_txn_id IS NOT NULL) "
        "SELECT DISTINCT r.customer_id, p.customer_id FROM r "
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


def sharded_select(table: str, linked: bool, count: int) -> str:
    """The export's rows with their shard number among `count` (a hash of the owning customer)."""
    if table == "line_items":
        # Line items carry no customer: their transaction's. An orphan line goes to shard 0.
        source = f"line_items x LEFT JOIN ({_BILL_OWNERS}) o ON o.txn_id = x.txn_id"
        source, owner = _linked(source, "o.customer_id", linked)
    else:
        source, owner = _linked(f"{quote_ident(table)} x", "x.customer_id", linked)
    return f"SELECT x.*, {_shard_of(owner, count)} AS {SHARD} FROM {source}"


# Each bill's owner: the smallest customer id among its rows (a txn_id is normally one bill).
_BILL_OWNERS = "SELECT txn_id, min(customer_id) AS customer_id FROM transactions GROUP BY txn_id"


@contextmanager
def _linked_customers(con: duckdb.DuckDBPyConnection, present: set[str]) -> Iterator[bool]:
    """`customer_links` registered as ``LINKS`` for the block; yields whether there are any."""
    links = customer_links(con, _schema(con, "transactions")) if "transactions" in present else None
    if links is None:
        yield False
        return
    con.register(LINKS, links)
    try:
        yield True
    finally:
        con.unregister(LINKS)


def _linked(source: str, owner: str, linked: bool) -> tuple[str, str]:
    """`source` and its `owner` expression, with linked customers sent to their set's shard."""
    if not linked:
        return source, owner
    return (f"{source} LEFT JOIN {LINKS} m ON m.customer_id = {owner}",
            f"coalesce(m.shard_customer, {owner})")


def _shard_of(owner: str, count: int) -> str:
    """The shard number of `owner` among `count`, inlined: with a prepared-statement parameter
    DuckDB scans ~10x slower (one shard's transactions at 10 M: 1.9 s vs 0.2 s).

    No owner (an orphan line) is shard 0; DuckDB's hash(NULL) is a number, not NULL.
    """
    return f"if({owner} IS NULL, 0, hash({owner}) % {int(count)})"


@contextmanager
def database_shards(
    con: duckdb.DuckDBPyConnection, count: int, tables: Sequence[str] = SOURCE_TABLES
) -> Iterator[DatabaseShards]:
    """The loaded exports in `count` customer shards (the same split as `export_shards`), read
    from the database one shard at a time as in-memory frames, each column when a query first
    needs it. The frames can be read only inside the block.

    Why not Parquet: for the local engine the export and the Parquet decoding in every group's
    query cost more than reading each shard straight from DuckDB (at 10 M transactions, 34 s of
    exports against ~16 s of reads, and scoring from memory is 10-20% cheaper). A shard's frames
    are filled as its groups ask and dropped with it, so memory holds one shard at a time.

    Exports outside `tables` come as empty frames with their columns. The shards read through
    a cursor of their own (queries come from the scoring threads), with `con`'s time zone; its
    temp table and registered links go when it closes.
    """
    zone = con.sql("SELECT current_setting('TimeZone')").fetchall()[0][0]
    cur = con.cursor()
    try:
        cur.execute(f"SET TimeZone = {quote_literal(zone)}")
        yield DatabaseShards(_Session(cur, base_tables(con), tables), count)
    finally:
        cur.close()


class _Session:
    """What every split of one `database_shards` block shares: the cursor (one query at a time),
    the exports' schemas, the columns asked for so far, and the cross-customer links and bill
    owners, built when a split into several shards first needs them."""

    def __init__(self, con: duckdb.DuckDBPyConnection, present: set[str],
                 tables: Sequence[str]) -> None:
        self.con, self.present, self.tables = con, present, tables
        self.lock = threading.Lock()
        self.schemas = {name: _schema(con, name) for name in SOURCE_TABLES if name in present}
        # Columns any shard's queries asked for, per export: the next shard reads them at once.
        self.wanted: dict[str, set[str]] = {name: set() for name in self.schemas}
        self._linked: bool | None = None
        self._owners = False

    def linked(self) -> bool:
        """Whether some customers must share a shard (`customer_links`, registered once)."""
        if self._linked is None:
            links = (customer_links(self.con, self.schemas["transactions"])
                     if "transactions" in self.present else None)
            if links is not None:
                self.con.register(LINKS, links)
            self._linked = links is not None
        return self._linked

    def owners(self) -> None:
        """``OWNERS``: each bill's owner hash (null: no owner), for its line items' shard."""
        if not self._owners:
            source, owner = _linked(f"({_BILL_OWNERS}) o", "o.customer_id", self.linked())
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {OWNERS} AS SELECT o.txn_id, "
                             f"if({owner} IS NULL, NULL, hash({owner})) AS {SHARD} "
                             f"FROM {source}")
            self._owners = True


class DatabaseShards(Sequence[dict[str, pl.LazyFrame]]):
    """Shard k of the loaded exports, read when indexed (see `database_shards`)."""

    def __init__(self, session: _Session, count: int) -> None:
        self._session, self._count = session, count

    def __len__(self) -> int:
        return self._count

    def resplit(self, count: int) -> DatabaseShards:
        """The same exports in `count` customer shards, for as long as the block lasts.
        `LocalEngine` splits finer when its groups alone cannot keep every thread busy."""
        return DatabaseShards(self._session, count)

    def record_count(self) -> int:
        """Records the engine measures, over every shard (`record_count`)."""
        with self._session.lock:
            return record_count(self._session.con)

    def schema(self, name: str) -> pl.Schema:
        return self._session.schemas[name]

    def wanted(self, name: str) -> set[str]:
        with self._session.lock:
            return set(self._session.wanted[name])

    def probe(self) -> dict[str, pl.LazyFrame]:
        """The exports with no rows, noting each column a query asks of them: scoring the
        groups over these first tells the shards which columns to read in their first query.

        Why: a shard otherwise learns its columns query by query, and its first shard reads
        again each time a later query needs one more (a run of every kind of group read ~20
        times; two half shards of the baseline groups re-ran their filter for
        ``parent_txn_id``). Data-dependent steps may ask for more on real rows; those are
        read when asked, as before."""
        out: dict[str, pl.LazyFrame] = {}
        for name in SOURCE_TABLES:
            schema = self._session.schemas.get(name)
            if schema is None or name not in self._session.tables:
                out[name] = pl.LazyFrame() if schema is None else pl.LazyFrame(schema=schema)
            else:
                out[name] = register_io_source(
                    self._noting(name, schema), schema=schema, is_pure=True,
                    explain_name=f"{name} probe")
        return out

    def _noting(self, name: str, schema: pl.Schema) -> Callable[..., Iterator[pl.DataFrame]]:
        def scan(with_columns: list[str] | None, predicate: pl.Expr | None,
                 n_rows: int | None, batch_size: int | None) -> Iterator[pl.DataFrame]:
            columns = list(schema) if with_columns is None else with_columns
            with self._session.lock:
                self._session.wanted[name].update(columns)
            yield pl.DataFrame(schema={c: schema[c] for c in columns})

        return scan

    def __getitem__(self, k: int) -> dict[str, pl.LazyFrame]:  # type: ignore[override]
        if not 0 <= k < self._count:
            raise IndexError(k)
        out: dict[str, pl.LazyFrame] = {}
        for name in SOURCE_TABLES:
            schema = self._session.schemas.get(name)
            if schema is None:  # never loaded: no columns, as runs.read_sources
                out[name] = pl.LazyFrame()
            elif name not in self._session.tables:
                out[name] = pl.LazyFrame(schema=schema)
            else:
                out[name] = _ShardTable(self, name, k).frame()
        return out

    def read(self, name: str, k: int, columns: Sequence[str],
             rows: pl.Series | None = None) -> pl.DataFrame:
        """Shard `k`'s `columns` of export `name`, with the table's ``ROWID`` first; `rows`:
        the row ids of the shard, when an earlier read found them (line items are then read
        by them)."""
        coded = {c: WORDS[name, c] for c in columns if (name, c) in WORDS}
        frame = self._read(name, k, columns, rows, coded)
        if coded and any(frame[c].null_count() for c in coded):
            # A word the loader would not store (a workspace written by other means): as text.
            frame = self._read(name, k, columns, rows, {})
        elif coded:
            frame = frame.with_columns(
                pl.Series(words, dtype=pl.String).gather(frame[c]).alias(c)
                for c, words in coded.items()
            )
        # One chunk per column (polars works faster on contiguous columns, ~5% of a shard's
        # scoring). `.pl()` mostly hands over one already: cheaper than Arrow batches rechunked
        # (5 M transactions: 0.23 s against 0.4-0.6 s).
        return frame.rechunk()

    def _read(self, name: str, k: int, columns: Sequence[str], rows: pl.Series | None,
              coded: Mapping[str, tuple[str, ...]]) -> pl.DataFrame:
        """`read`, with the `coded` columns as the position of their word (null: another)."""
        select = ", ".join(["x.rowid AS " + ROWID, *(
            _coded(c, coded[c]) if c in coded else f"x.{quote_ident(c)}" for c in columns)])
        session = self._session
        with session.lock:
            session.wanted[name].update(columns)
            if rows is not None and self._count > 1 and name == "line_items":
                # By row id: a shard's line items are otherwise a join on every bill's text id
                # again (~2 s at 10 M transactions against 0.2 s). Not for the other exports:
                # their shard is a filter, cheaper than matching millions of row ids.
                session.con.register(ROWS, rows.to_frame("r"))
                try:
                    frame = session.con.sql(
                        f"SELECT {select} FROM {quote_ident(name)} x "
                        f"WHERE x.rowid IN (SELECT r FROM {ROWS})").pl()
                finally:
                    session.con.unregister(ROWS)
            else:
                frame = session.con.sql(self._query(name, k, select)).pl()
        return frame

    def _query(self, name: str, k: int, select: str) -> str:
        """Shard `k`'s rows of export `name` as `select` over ``x`` (the numbers inlined, as in
        `_shard_of`). Called with the session's lock held."""
        table, n, k = quote_ident(name), int(self._count), int(k)
        session = self._session
        if n == 1 or name in SHARED:
            return f"SELECT {select} FROM {table} x"
        if name == "line_items":
            if "transactions" not in session.present:  # every line is an orphan: shard 0
                return f"SELECT {select} FROM {table} x" + ("" if k == 0 else " LIMIT 0")
            session.owners()
            mine = (f"SELECT {select} FROM line_items x SEMI JOIN {OWNERS} o ON o.txn_id = "
                    f"x.txn_id AND if(o.{SHARD} IS NULL, 0, o.{SHARD} % {n}) = {k}")
            orphans = (f"SELECT {select} FROM line_items x "
                       f"ANTI JOIN {OWNERS} o ON o.txn_id = x.txn_id")
            return mine + (f" UNION ALL {orphans}" if k == 0 else "")
        source, owner = _linked(f"{table} x", "x.customer_id", session.linked())
        return f"SELECT {select} FROM {source} WHERE {_shard_of(owner, n)} = {k}"


ROWID = "__milestones_rowid"
# The exports' ENUM columns, whose loaded values are one of a few words (the loader stores them
# upper-case): a shard reads each as the position of its word and makes the text in polars.
# Why: copying text out of DuckDB costs ~0.13 CPU-s per 5 M transactions for `type`; the
# number ~0.
WORDS: dict[tuple[str, str], tuple[str, ...]] = {
    (kind.table, column.name): column.choices
    for kind in KINDS.values()
    for column in kind.columns
    if column.type is ColumnType.ENUM
}


def _coded(column: str, words: Sequence[str]) -> str:
    cases = " ".join(f"WHEN {quote_literal(w)} THEN {i}" for i, w in enumerate(words))
    return f"CAST(CASE x.{quote_ident(column)} {cases} END AS UTINYINT) AS {quote_ident(column)}"


class _ShardTable:
    """One export of one shard as a lazy frame whose columns are read from the database when a
    query first asks for them (polars says which: `register_io_source`), then kept.

    Why: exports carry columns no group reads (at 10 M transactions the baseline groups need 6
    of 11, and reading all of them was a quarter of their time). A column read later is aligned
    to the rows already held by the table's row id, so the frame is the same however it is
    filled. The first read of a shard takes every column an earlier shard needed.
    """

    def __init__(self, shards: DatabaseShards, name: str, k: int) -> None:
        self._shards, self._name, self._k = shards, name, k
        self._schema = shards.schema(name)
        self._held: pl.DataFrame | None = None
        self._lock = threading.Lock()

    def frame(self) -> pl.LazyFrame:
        return register_io_source(self._scan, schema=self._schema, is_pure=True,
                                  explain_name=f"{self._name} shard {self._k}")

    def _scan(self, with_columns: list[str] | None, predicate: pl.Expr | None,
              n_rows: int | None, batch_size: int | None) -> Iterator[pl.DataFrame]:
        columns = list(self._schema) if with_columns is None else with_columns
        # No column at all would be a frame of no rows: a count needs one (polars asks for one).
        out = self._columns(columns or list(self._schema)[:1])
        if predicate is not None:
            out = out.filter(predicate)
        if n_rows is not None:
            out = out.head(n_rows)
        # In slices of the size polars asks for (zero-copy): handed one frame, polars runs the
        # rest of the query on fewer threads (a filter and group_by ~1.5x slower).
        step = max(batch_size or out.height, 1)
        yield from (out.slice(at, step) for at in range(0, max(out.height, 1), step))

    def _columns(self, columns: Sequence[str]) -> pl.DataFrame:
        with self._lock:
            held = self._held
            have = set() if held is None else set(held.columns)
            fetch = set(columns) - have
            if held is None:  # what earlier shards needed comes in the same read
                fetch |= self._shards.wanted(self._name)
            missing = [c for c in self._schema if c in fetch]
            if missing:
                rows = None if held is None else held[ROWID]
                read = self._shards.read(self._name, self._k, missing, rows)
                if held is None:
                    held = read
                else:
                    if read.height != held.height:
                        raise MilestonesError(
                            f"the {self._name} export changed while the run read it (shard "
                            f"{self._k}: {held.height:,} rows, then {read.height:,}); run again")
                    if not read[ROWID].equals(held[ROWID]):  # rows came in another order
                        read = held.select(ROWID).join(read, on=ROWID, how="left",
                                                       maintain_order="left")
                    held = held.hstack(read.drop(ROWID).get_columns())
                self._held = held
            assert held is not None
        return held.select(columns)


def _schema(con: duckdb.DuckDBPyConnection, table: str) -> pl.Schema:
    return con.sql(f"SELECT * FROM {quote_ident(table)} LIMIT 0").pl().schema


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


