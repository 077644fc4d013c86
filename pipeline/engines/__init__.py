"""Engines: where a run's scoring happens (SPEC §12 `run --engine local|dask`).

Both engines call the same pure `pipeline.scoring.engine.score`; they differ only in how the
loaded exports reach it. `local` reads them into this process; `dask` exports them to
customer-partitioned Parquet and scores each shard on a Dask worker. `pipeline.runs.run` drives
either through the two-step `Engine` protocol, so the ledger and files are written the same way.
"""

from __future__ import annotations

from collections.abc import Callable
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

    `inputs` is step 3 of a run ("read inputs"): it holds whatever the engine needs (frames in
    memory, or a cluster and Parquet shards) for as long as the run scores, and releases it on
    exit. `score` is step 4 and returns what `pipeline.scoring.engine.score` returns.
    """

    def inputs(self, con: duckdb.DuckDBPyConnection) -> AbstractContextManager[Any]: ...

    def score(
        self, inputs: Any, groups: list[Group], as_of: date, config: Config
    ) -> ScoreResultLike: ...


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

        return LocalEngine()
    if name == "dask":
        from pipeline.engines.dask import DaskEngine

        return DaskEngine(scheduler, workdir=workdir, progress=progress)
    raise UsageError(f"--engine {name!r} is not one of {', '.join(ENGINES)}")
