"""The Dask engine: the same scoring, sharded by customer over a Dask cluster (SPEC §12).

The driver (this process, which holds the database) exports the loaded records from DuckDB to
Parquet shards (`pipeline.engines.shards`, which the local engine uses too for big data). Each
task reads one shard and calls the same pure `pipeline.scoring.engine.score`; the driver stages
the shard results as they come in, and `pipeline.runs.run` merges them (`pipeline.staging`:
leaderboards ranked again, a group failing in one shard failing everywhere) and writes tables,
ledger and files exactly as for the local engine.

`dask[distributed]` is an optional extra: nothing here imports it until an engine is built.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.config import Config
from pipeline.definitions.model import Group
from pipeline.engines.shards import export_shards, read_shard, record_count, shard_count
from pipeline.errors import MilestonesError
from pipeline.runs import ScoreResultLike
from pipeline.scoring.engine import ScoreResult

LOCAL_WORKERS = 2
# Records (transactions + line items + events + points) per shard, at most: bounds a task's memory.
ROWS_PER_SHARD = 5_000_000
CONNECT_TIMEOUT = "30s"

__all__ = ["DaskEngine", "Shards", "score_shard"]


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
                count = self.shards or shard_count(record_count(con), threads, ROWS_PER_SHARD)
                schemas = export_shards(con, root, count)
                self._say(f"dask: {count} shard(s) in {root} for {threads} worker thread(s)")
                yield Shards(root=root, count=count, schemas=schemas, client=client)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    def parts(
        self, inputs: Shards, groups: list[Group], as_of: date, config: Config
    ) -> Iterator[ScoreResultLike]:
        """One task per shard; each shard's result is handed on as soon as it is in, so the
        driver holds one shard's rows at a time (the run's staging merges them)."""
        from distributed import as_completed

        client = inputs.client
        futures = [
            client.submit(
                score_shard, str(inputs.root), k, inputs.schemas, groups, as_of, config, pure=False
            )
            for k in range(inputs.count)
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            future.release()
            self._say(f"dask: scored shard {done}/{inputs.count}")
            yield result

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


# ------------------------------------------------------------------------------- the tasks


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
