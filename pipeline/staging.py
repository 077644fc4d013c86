"""Where a run keeps scored rows until it writes them: Parquet files that DuckDB reads back.

Why: at tens of millions of records a run scores more rows than fit in memory at once. The engine
yields its results part by part (one group of one customer shard, or one shard of every group);
each part is written here and dropped, and the run then selects, diffs and inserts with DuckDB
SQL over the files, which streams them.

Parts of one group from different shards are merged by two rules, so that scoring shard by shard
gives what scoring every customer at once gives:

- a group that fails in any part fails as a whole (the first message is kept), and its rows from
  every other part are dropped;
- a leaderboard ranks customers against each other, so a group scored in more than one part is
  ranked again here from its staged `target_progress`, and the parts' own boards are dropped.

A group with one target stages no `period_achievements`: its windows' rows are its target's
(`scoring.combine`), so they are read from its staged `target_progress` instead.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from pipeline.definitions.model import EvaluationType, Group
from pipeline.rewards import ledger
from pipeline.workspace import quote_ident, quote_literal

if TYPE_CHECKING:
    from pipeline.runs import ScoreResultLike

EARNED = "earned"  # the staged rewards, with their reward_id (ledger.REWARD_COLUMNS)
RERANKED = "leaderboard_reranked"  # boards `finish` ranked again over every part
# A window's columns; for a group whose windows every customer shares (FIXED), the same for
# every row of a period, so they are staged once per period instead of once per row.
WINDOW_COLUMNS = ("ref_code", "window_start", "window_end", "status")
_BY_PERIOD = ("target_progress", "period_achievements")
# period_achievements of a one-target group, from its target_progress (as `scoring.combine`).
_ONE_TARGET_ACHIEVEMENTS = (
    "SELECT group_id, customer_id, period_index, ref_code, window_start, window_end, status, "
    "achieved, CASE WHEN achieved THEN achieved_at END AS achieved_at, "
    "CAST(achieved AS INTEGER) AS targets_achieved, CAST(1 AS INTEGER) AS targets_total "
    "FROM {progress}"
)


class Staging:
    """The scored parts of one run under `root` (created here, deleted by `close`).

    Example::

        staging = Staging(root, groups)
        for part in engine.parts(inputs, groups, as_of, config):
            staging.add(part)
        staging.finish(con)
        con.sql(f"SELECT count(*) FROM {staging.relation('target_progress')}")
    """

    def __init__(self, root: Path, groups: Sequence[Group]) -> None:
        self.root = root
        self.groups = list(groups)
        self.failures: dict[str, str] = {}
        self.scored: list[str] = []  # group names in the order they were first scored
        self._parts_of: Counter[str] = Counter()
        self._files: dict[str, list[Path]] = {}
        self._group_of: dict[Path, int | None] = {}  # every staged file holds one group's rows
        self._reranked: list[int] = []
        # FIXED groups: their files lack WINDOW_COLUMNS, kept here per period instead.
        self._shared = {g.group_id for g in groups
                        if g.evaluation_type is EvaluationType.FIXED}
        self._windows: dict[int, dict[int, tuple]] = {}
        # One-target groups: period_achievements not staged, derived (_ONE_TARGET_ACHIEVEMENTS).
        # Why: it is a copy of target_progress's rows (~1.2 CPU-s of a 10 M bench shard's ~24).
        self._one_target = {g.group_id for g in groups if len(g.targets) == 1}
        root.mkdir(parents=True, exist_ok=True)

    def add(self, part: ScoreResultLike) -> None:
        """Write one part's tables and earned rewards; the part can then be dropped."""
        for name in part.groups:
            if name not in self._parts_of:
                self.scored.append(name)
            self._parts_of[name] += 1
        for name, message in part.failures.items():
            self.failures.setdefault(name, message)
        for table, frame in part.tables.items():
            self._write(table, frame)
        if part.rewards.height:
            self._write(EARNED, ledger.identified(part.rewards))

    def finish(self, con: duckdb.DuckDBPyConnection) -> None:
        """Rank again every leaderboard group that was scored in more than one part."""
        again = [
            g for g in self.groups
            if g.leaderboard_enabled
            and g.evaluation_type is not EvaluationType.PERIOD_AGNOSTIC
            and self._parts_of[g.name] > 1
            and g.name not in self.failures
        ]
        self._reranked = [g.group_id for g in again]
        source = self.relation("target_progress")
        if not again or source is None:
            return
        from pipeline.scoring.kinds import group_leaderboard

        for g in again:
            progress = con.sql(
                f"SELECT group_id, target_id, customer_id, period_index, value, last_activity_at "
                f"FROM {source} WHERE group_id = $g AND last_activity_at IS NOT NULL",
                params={"g": g.group_id},
            ).pl()
            if progress.height:
                self._write(RERANKED, group_leaderboard(g, progress))

    def relation(self, table: str, only: Collection[int] | None = None) -> str | None:
        """An SQL relation over the staged rows of `table` (failed groups left out, and the
        parts' boards of re-ranked groups), or None when no part had any; `only`: the rows of
        these groups alone, whose files are the only ones read."""
        selects = []
        parts = self._of_groups(self._files.get(table), only)
        if parts:
            drop = self.failed_ids() + (self._reranked if table == "leaderboard" else [])
            where = f" WHERE s.group_id NOT IN ({_ids(drop)})" if drop else ""
            whole = [p for p in parts if not self._by_period(table, self._group_of[p])]
            if whole:
                selects.append(f"SELECT * FROM {_scan(whole)} s{where}")
            windowed = [p for p in parts if self._by_period(table, self._group_of[p])]
            if windowed:
                windows = self._windows_sql({self._group_of[p] for p in windowed})
                selects.append(
                    f"SELECT s.*, {', '.join('w.' + c for c in WINDOW_COLUMNS)} "
                    f"FROM {_scan(windowed)} s JOIN {windows} w "
                    f"ON w.group_id = s.group_id AND w.period_index = s.period_index{where}")
        if table == "period_achievements":
            derived = self._one_target if only is None else self._one_target & set(only)
            progress = self.relation("target_progress", only=derived) if derived else None
            if progress is not None:
                selects.append(_ONE_TARGET_ACHIEVEMENTS.format(progress=progress))
        reranked = (self._of_groups(self._files.get(RERANKED), only)
                    if table == "leaderboard" else [])
        if reranked:
            selects.append(f"SELECT * FROM {_scan(reranked)}")
        if not selects:
            return None
        return "(" + " UNION ALL BY NAME ".join(selects) + ")"

    def failed_ids(self) -> list[int]:
        return [g.group_id for g in self.groups if g.name in self.failures]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _by_period(self, table: str, group_id: int | None) -> bool:
        """Whether `table`'s files of this group hold no window columns (`_windows_sql`)."""
        return table in _BY_PERIOD and group_id in self._shared

    def _windows_sql(self, group_ids: Collection[int | None]) -> str:
        """The staged windows of these groups: (group_id, period_index, WINDOW_COLUMNS)."""
        rows = [
            "(" + ", ".join([str(int(gid)), str(int(period)),
                             *(_literal(v) for v in columns)]) + ")"
            for gid in sorted(g for g in group_ids if g is not None)
            for period, columns in sorted(self._windows.get(gid, {}).items())
        ]
        if not rows:
            rows = ["(NULL, NULL, NULL, NULL, NULL, NULL)"]
        return (
            "(SELECT group_id::BIGINT AS group_id, period_index::INTEGER AS period_index, "
            "ref_code::VARCHAR AS ref_code, window_start::TIMESTAMP AS window_start, "
            "window_end::TIMESTAMP AS window_end, status::VARCHAR AS status "
            f"FROM (VALUES {', '.join(rows)}) v(group_id, period_index, ref_code, "
            "window_start, window_end, status))"
        )

    def _keep_windows(self, piece: pl.DataFrame, group_id: int) -> pl.DataFrame:
        """`piece` without its window columns, which are kept per period instead."""
        known = self._windows.setdefault(group_id, {})
        periods = piece.group_by("period_index").agg(pl.col(c).first() for c in WINDOW_COLUMNS)
        for period, *columns in periods.iter_rows():
            known.setdefault(period, tuple(columns))
        return piece.drop(WINDOW_COLUMNS)

    def _of_groups(self, files: list[Path] | None, only: Collection[int] | None) -> list[Path]:
        if not files or only is None:
            return files or []
        return [p for p in files if self._group_of[p] in only]

    def _write(self, table: str, frame: pl.DataFrame) -> None:
        if not frame.height or "group_id" not in frame.columns:
            return
        files = self._files.setdefault(table, [])
        folder = self.root / table
        folder.mkdir(exist_ok=True)
        # One file per group (a part of several groups, as a Dask task's, is split): the run
        # then reads only the files of the groups a step needs (`relation(only=...)`).
        pieces = frame.partition_by("group_id") if _several(frame["group_id"]) else [frame]
        for piece in pieces:
            gid = piece["group_id"][0]
            group_id = None if gid is None else int(gid)
            if table == "period_achievements" and group_id in self._one_target:
                continue  # read from its target_progress (`relation`)
            path = folder / f"{len(files):06d}.parquet"
            if self._by_period(table, group_id):
                assert group_id is not None
                # ~35% of writing these tables was their window columns (text and times).
                piece = self._keep_windows(piece, group_id)
            # Scratch that DuckDB reads in full: speed over size, and no column statistics
            # (~20% of the write; no query here skips row groups by them).
            piece.write_parquet(path, compression="lz4", statistics=False)
            files.append(path)
            self._group_of[path] = group_id


def empty_relation(stored: str, columns: Iterable[str]) -> str:
    """An empty relation with the `columns` of table `stored`, typed as stored (a run that
    scored nothing still writes typed, empty files)."""
    cols = ", ".join(quote_ident(c) for c in columns)
    return f"(SELECT {cols} FROM {quote_ident(stored)} WHERE false)"


def _several(ids: pl.Series) -> bool:
    """Whether `ids` holds more than one value (null counts as one); min and max are a few
    times cheaper than `n_unique` over a part's millions of rows."""
    nulls = ids.null_count()
    if nulls:
        return nulls < len(ids)
    return ids.min() != ids.max()


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(int(i)) for i in ids) or "NULL"


def _literal(value: object) -> str:
    """NULL, or the value as text (a time as `2025-01-31 23:59:59.999999`, which DuckDB casts)."""
    return "NULL" if value is None else quote_literal(value)


def _scan(files: Sequence[Path]) -> str:
    paths = ", ".join(quote_literal(p) for p in files)
    return f"read_parquet([{paths}], union_by_name = true)"
