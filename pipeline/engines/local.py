"""The local engine: the loaded exports scored in this process (the default).

Small data is scored in one pass over the exports read into memory. When the records are more
than `ROWS_PER_SHARD`, they are split into customer shards (`pipeline.engines.shards`), read
from the database and scored one shard at a time, so memory follows the shard size rather than
the data set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date

import duckdb
import polars as pl

from pipeline.config import Config
from pipeline.definitions.model import Group
from pipeline.engines.shards import (
    DatabaseShards,
    database_shards,
    record_count,
    shard_count,
)
from pipeline.runs import ScoreFn, ScoreResultLike

# Records (transactions + line items + events + points) scored at once, at most. A shard's records
# are held in memory while it is scored (the columns its groups read: ~0.55 GB for 6 M generated
# records with every column), and scoring holds a few times that at its peak: at 10 M
# transactions the run's scoring peaks at ~3.3 GiB.
ROWS_PER_SHARD = 6_000_000
SPLIT_FROM_RECORDS = 1_000_000


class LocalEngine:
    """`run --engine local`.

    Args:
        score: the scoring entry point (default `pipeline.scoring.engine.score`); tests pass a
            stand-in.
        rows_per_shard: records per customer shard, at most (the data set is one shard when
            it is not bigger).
        progress: called with a short line per shard scored (None: quiet).
        workers: groups scored at once, in threads (default
            `pipeline.scoring.engine.default_workers`).
        split_from: records from which shards are split finer when the groups cannot keep
            every worker busy (below it the extra reads cost more than the second core saves).
    """

    def __init__(
        self,
        score: ScoreFn | None = None,
        *,
        rows_per_shard: int = ROWS_PER_SHARD,
        progress: Callable[[str], None] | None = None,
        workers: int | None = None,
        split_from: int = SPLIT_FROM_RECORDS,
    ) -> None:
        self._score = score
        if workers is None:
            from pipeline.scoring.engine import default_workers

            workers = default_workers()
        self.workers = workers
        self.rows_per_shard = rows_per_shard
        self.split_from = split_from
        self._say = progress or (lambda _msg: None)

    @contextmanager
    def inputs(
        self, con: duckdb.DuckDBPyConnection
    ) -> Iterator[Sequence[Mapping[str, pl.LazyFrame]]]:
        """The exports as one shard or several, each read from the database when its turn
        comes (so `parts` holds one shard's records at a time)."""
        count = shard_count(record_count(con), 1, self.rows_per_shard)
        with database_shards(con, count) as shards:
            if count > 1:
                self._say(f"local: {count} customer shards")
            yield shards

    def parts(
        self,
        inputs: Sequence[Mapping[str, pl.LazyFrame]],
        groups: list[Group],
        as_of: date,
        config: Config,
    ) -> Iterator[ScoreResultLike]:
        """One result per group and shard, so only the rows of the groups in flight (`workers`)
        of one shard are held (plus, until a later group takes them, the measured rows of a
        group it shares).

        When the groups make fewer chains (groups scored one after another, `chain_count`)
        than there are workers, each shard is split into `workers` finer shards scored side by
        side, so that no thread idles (two shards of half the size hold what one did)."""
        if self._score is not None:  # a test's stand-in: group by group
            for sources in inputs:
                for group in groups:
                    yield self._score(sources, [group], as_of, config)
            return
        from pipeline.scoring.engine import chain_count, score_pieces

        if isinstance(inputs, DatabaseShards) and len(inputs):
            # The groups over empty exports first: they say which columns the shards read.
            # Their results are dropped, and so is any error: the probe is only a hint, and
            # scoring the real rows reports a real failure.
            with contextlib.suppress(Exception):
                for _ in score_pieces([inputs.probe()], groups, as_of, config):
                    pass
        together = 1
        if (self.workers > 1 and isinstance(inputs, DatabaseShards) and len(inputs)
                and inputs.record_count() >= self.split_from
                and chain_count(inputs[0], groups, as_of, config) < self.workers):
            together = self.workers
            inputs = inputs.resplit(len(inputs) * together)
            self._say(f"local: {len(inputs)} customer shards, {together} at a time")
        for first in range(0, len(inputs), together):
            pieces = [inputs[k] for k in range(first, min(first + together, len(inputs)))]
            yield from score_pieces(pieces, groups, as_of, config, workers=self.workers)
            if len(inputs) > 1:
                self._say(f"local: scored shard {first + len(pieces)}/{len(inputs)}")
