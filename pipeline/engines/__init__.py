"""Engines: where a run's scoring happens (SPEC §12 `run --engine local|dask`).

Both engines call the same pure `pipeline.scoring.engine.score`; they differ only in how the
loaded exports reach it. `local` scores in this process (shard after shard when the data is big);
`dask` exports customer-partitioned Parquet and scores each shard on a Dask worker.
`pipeline.runs.run` drives either through the two-step `Engine` protocol and stages the results
part by part, so the ledger and files are written the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from pipeline.config import Config
from pipeline.definitions.model import Group
from pipeline.errors import UsageError

if TYPE_CHECKING:
    from pipeline.runs import ScoreResultLike

ENGINES = ("local", "dask")

__all__ = ["ENGINES", "Engine", "make_engine"]


class Engine(Protocol):
    """How a run turns the loaded exports into scores.

    `inputs` is step 3 of a run ("read inputs"): it holds whatever the engine needs (lazy scans,
    or a cluster and Parquet shards) for as long as the run scores, and releases it on exit.
    `parts` is step 4: results of `pipeline.scoring.engine.score`, each for some groups and some
    customers (every customer's rows of a group in one part per shard), handed on one by one so
    the run never holds them all.
    """

    def inputs(self, con: duckdb.DuckDBPyConnection) -> AbstractContextManager[Any]: ...

    def parts(
        self, inputs: Any, groups: list[Group], as_of: date, config: Config
    ) -> Iterator[ScoreResultLike]: ...


def make_engine(
    name: str,
    *,
    scheduler: str | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Engine:
    """The engine `run --engine NAME [--scheduler ADDRESS]` asks for.

    Raises:
        UsageError: an unknown engine, or `--scheduler` without `--engine dask` (exit 2).
        MilestonesError: `dask` when the optional extra is not installed (exit 1).
    """
    if name == "local":
        if scheduler is not None:
            raise UsageError(
                "--scheduler only applies to --engine dask; add --engine dask or drop --scheduler"
            )
        from pipeline.engines.local import LocalEngine

        return LocalEngine(progress=progress)
    if name == "dask":
        from pipeline.engines.dask import DaskEngine

        return DaskEngine(scheduler, workdir=workdir, progress=progress)
    raise UsageError(f"--engine {name!r} is not one of {', '.join(ENGINES)}")
