"""The local engine: every loaded export in this process, scored in one call (the default)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date

import duckdb
import polars as pl

from pipeline.config import Config
from pipeline.definitions.model import Group
from pipeline.runs import ScoreFn, ScoreResultLike, scan_sources


class LocalEngine:
    """`run --engine local`: `scan_sources` (lazy Parquet scans of the loaded exports, so the
    records are not all held in memory at once) then one `score` call.

    Args:
        score: the scoring entry point (default `pipeline.scoring.engine.score`); tests pass a
            stand-in.
    """

    def __init__(self, score: ScoreFn | None = None) -> None:
        self._score = score

    @contextmanager
    def inputs(self, con: duckdb.DuckDBPyConnection) -> Iterator[Mapping[str, pl.LazyFrame]]:
        with scan_sources(con) as sources:
            yield sources

    def score(
        self,
        inputs: Mapping[str, pl.LazyFrame],
        groups: list[Group],
        as_of: date,
        config: Config,
    ) -> ScoreResultLike:
        if self._score is None:
            from pipeline.scoring.engine import score

            return score(inputs, groups, as_of, config)
        return self._score(inputs, groups, as_of, config)
