"""The Dask engine: the same scoring, sharded by customer over a Dask cluster (SPEC §12).

The driver (this process, which holds the database) exports the loaded records from DuckDB to
Parquet partitioned by a hash of the customer: line items go with their transaction's customer,
stores are one file every shard reads. Each task reads one shard and calls the same pure
`pipeline.scoring.engine.score`; the driver merges the shard results and `pipeline.runs.run`
writes tables, ledger and files exactly as for the local engine.

This is exact because every output row belongs to one customer and all of a customer's records
are in one shard. Three things cross customers, and are handled on the driver:

- leaderboards rank customers against each other: recomputed from the merged target_progress;
- a return whose parent bill belongs to another customer: both customers go to one shard;
- a group failing in any shard fails as a whole (its rows from the other shards are dropped).

`dask[distributed]` is an optional extra: nothing here imports it until an engine is built.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.config import Config
from pipeline.definitions.model import EvaluationType, Group
from pipeline.errors import MilestonesError
from pipeline.runs import SOURCE_TABLES, ScoreResultLike
from pipeline.scoring.engine import TABLES, ScoreResult
from pipeline.workspace import quote_ident

LOCAL_WORKERS = 2
# Records (transactions + line items + events + points) per shard, at most: bounds a task's memory.
ROWS_PER_SHARD = 5_000_000
CONNECT_TIMEOUT = "30s"
SHARD = "__milestones_shard"  # the partition column; unlikely to clash with an export column
SHARED = ("stores",)
LINKS = "_milestones_shard_links"
MEASURED = ("transactions", "line_items", "events", "points")

__all__ = ["DaskEngine", "Shards", "export_shards", "merge", "read_shard", "score_shard"]


@dataclass(frozen=True)
class Shards:
    """A run's exported shards and the cluster that scores them (`DaskEngine.inputs`)."""

    root: Path
    count: int
    schemas: dict[str, pl.Schema]  # per loaded export, as `runs.read_sources` would type it
    client: Any  # distributed.Client


class DaskEngine:
    """`run --engine dask [--scheduler ADDRESS]`.

    Args:
        scheduler: a running scheduler's address (``tcp://host:8786``); None starts a
            `LocalCluster` of 2 worker processes with one thread each, for this run only.
        shards: how many shards (default: enough for `ROWS_PER_SHARD`, a multiple of the
            cluster's threads).
        workdir: where the shard folder is made (default: the system temp folder). With a
            remote scheduler the workers must read it at the same path.
        progress: called with a short line per step (None: quiet).

    Raises:
        MilestonesError: the `dask` extra is not installed (exit 1).
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        shards: int | None = None,
        workdir: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if importlib.util.find_spec("distributed") is None:
            raise MilestonesError(
                "--engine dask needs the optional Dask extra, which is not installed: "
                "pip install 'milestones[dask]', or run with --engine local"
            )
        if shards is not None and shards < 1:
            raise ValueError(f"shards must be at least 1, not {shards}")
        self.scheduler = scheduler
        self.shards = shards
        self.workdir = workdir
        self._say = progress or (lambda _msg: None)

    @contextmanager
    def inputs(self, con: duckdb.DuckDBPyConnection) -> Iterator[Shards]:
        """Connect (or start) the cluster and export the shards; both go away on exit."""
        client, cluster = self._connect()
        try:
            if self.workdir is not None:
                self.workdir.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix=".milestones-shards-", dir=self.workdir))
            try:
                threads = sum(client.nthreads().values())
                count = self.shards or shard_count(_records(con), threads)
                schemas = export_shards(con, root, count)
                self._say(f"dask: {count} shard(s) in {root} for {threads} worker thread(s)")
                yield Shards(root=root, count=count, schemas=schemas, client=client)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    def score(
        self, inputs: Shards, groups: list[Group], as_of: date, config: Config
    ) -> ScoreResult:
        """One task per shard; the results merged in shard order (deterministic)."""
        from distributed import as_completed

        client = inputs.client
        futures = [
            client.submit(
                score_shard, str(inputs.root), k, inputs.schemas, groups, as_of, config, pure=False
            )
            for k in range(inputs.count)
        ]
        index = {f.key: k for k, f in enumerate(futures)}
        results: dict[int, ScoreResultLike] = {}
        for done, future in enumerate(as_completed(futures), start=1):
            results[index[future.key]] = future.result()
            self._say(f"dask: scored shard {done}/{inputs.count}")
        return merge([results[k] for k in range(inputs.count)], groups)

    def _connect(self) -> tuple[Any, Any]:
        from distributed import Client, LocalCluster

        if self.scheduler is None:
            cluster = LocalCluster(
                n_workers=LOCAL_WORKERS,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            self._say(f"dask: started a local cluster of {LOCAL_WORKERS} workers")
            return Client(cluster), cluster
        try:
            client = Client(self.scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise MilestonesError(
                f"cannot reach the Dask scheduler at {self.scheduler!r} ({exc}); check the "
                "address (tcp://host:8786), or leave out --scheduler to start a local cluster"
            ) from exc
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError as exc:
            client.close()
            raise MilestonesError(
                f"the Dask scheduler at {self.scheduler!r} has no workers after "
                f"{CONNECT_TIMEOUT}; start some with `dask worker {self.scheduler}`"
            ) from exc
        self._say(f"dask: connected to {self.scheduler}")
        return client, None


def shard_count(records: int, threads: int) -> int:
    """A multiple of the cluster's threads with at most `ROWS_PER_SHARD` records per shard."""
    threads = max(threads, 1)
    return threads * max(1, math.ceil(records / (ROWS_PER_SHARD * threads)))


# ------------------------------------------------------------------------------ the driver


def export_shards(con: duckdb.DuckDBPyConnection, root: Path, count: int) -> dict[str, pl.Schema]:
    """Write every loaded export under `root`, partitioned into `count` customer shards.

    Layout: ``<root>/<table>/__milestones_shard=<k>/*.parquet`` (a shard with no rows has no
    folder) and ``<root>/stores.parquet``. Returns the polars schema of each loaded export, so a
    task types its frames exactly as `runs.read_sources` does (and an empty shard keeps its
    columns: a rule naming a missing column must fail the same way in every shard).
    """
    root.mkdir(parents=True, exist_ok=True)
    present = _tables(con)
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
            target = _literal(root / (f"{name}.parquet" if name in SHARED else name))
            if name in SHARED:
                con.execute(f"COPY {quote_ident(name)} TO {target} (FORMAT parquet)")
                continue
            con.execute(
                f"COPY ({_sharded_select(name, links is not None)}) TO {target} "
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


def _sharded_select(table: str, linked: bool) -> str:
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


def merge(results: Sequence[ScoreResultLike], groups: list[Group]) -> ScoreResult:
    """The shard results as one `ScoreResult`, equal to scoring every customer at once.

    A group that failed in any shard is failed (with the first shard's message) and has no rows;
    leaderboards are ranked again over every customer.
    """
    failures: dict[str, str] = {}
    for r in results:
        for name, message in r.failures.items():
            failures.setdefault(name, message)
    failed = [g.group_id for g in groups if g.name in failures]

    def parts(frames: Sequence[pl.DataFrame | None]) -> pl.DataFrame:
        kept = [_without(f, failed) for f in frames if f is not None and f.height]
        kept = [f for f in kept if f.height]
        return pl.concat(kept, how="vertical_relaxed") if kept else pl.DataFrame()

    out = ScoreResult(
        failures={g.name: failures[g.name] for g in groups if g.name in failures},
        groups=[g.name for g in groups],
    )
    for name in TABLES:
        if name != "leaderboard":
            out.tables[name] = parts([r.tables.get(name) for r in results])
    scored = [g for g in groups if g.group_id not in failed]
    out.tables["leaderboard"] = leaderboards(out.tables["target_progress"], scored)
    out.rewards = parts([r.rewards for r in results])
    return out


def leaderboards(progress: pl.DataFrame, groups: Sequence[Group]) -> pl.DataFrame:
    """`leaderboard` rows of every leaderboard group, as `scoring.kinds` ranks them per group."""
    from pipeline.scoring.kinds import group_leaderboard

    if not progress.height:
        return pl.DataFrame()
    boards = [
        group_leaderboard(g, progress)
        for g in groups
        # PERIOD_AGNOSTIC groups never reach scoring.kinds (and may not have boards anyway).
        if g.leaderboard_enabled and g.evaluation_type is not EvaluationType.PERIOD_AGNOSTIC
    ]
    boards = [b for b in boards if b.height]
    return pl.concat(boards, how="vertical_relaxed") if boards else pl.DataFrame()


def _without(frame: pl.DataFrame, group_ids: list[int]) -> pl.DataFrame:
    if not group_ids or "group_id" not in frame.columns:
        return frame
    return frame.filter(~pl.col("group_id").is_in(group_ids))


def _records(con: duckdb.DuckDBPyConnection) -> int:
    present = _tables(con)
    total = 0
    for name in MEASURED:
        if name in present:
            total += int(con.sql(f"SELECT count(*) FROM {quote_ident(name)}").fetchall()[0][0])
    return total


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        r[0]
        for r in con.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
        ).fetchall()
    }


def _literal(path: Path) -> str:
    """A path as an SQL string literal: COPY ... TO takes no parameter for its file."""
    return "'" + str(path).replace("'", "''") + "'"


# ------------------------------------------------------------------------------- the tasks


def read_shard(
    root: Path, shard: int, schemas: Mapping[str, pl.Schema]
) -> dict[str, pl.LazyFrame]:
    """Shard `shard`'s records, typed as `runs.read_sources` types the whole tables."""
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
            frame = pl.read_parquet(files, hive_partitioning=False).select(list(schema))
            frame = frame.cast(dict(schema))
        else:
            frame = pl.DataFrame(schema=schema)
        out[name] = frame.lazy()
    return out


def score_shard(
    root: str,
    shard: int,
    schemas: Mapping[str, pl.Schema],
    groups: list[Group],
    as_of: date,
    config: Config,
) -> ScoreResult:
    """A Dask task: score one shard with the same `score` the local engine calls."""
    from pipeline.scoring.engine import score

    return score(read_shard(Path(root), shard, schemas), groups, as_of, config)
