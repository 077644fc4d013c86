"""A run from start to commit (SPEC §10): scope, scoring, ledger, files, atomically.

The steps, numbered for fault injection (``MILESTONES_FAULT_AFTER_STEP=k`` ends the process with
``os._exit(137)`` right after step k; ``MILESTONES_PAUSE_AFTER_STEP=k`` prints a line on stderr and
waits for a line on stdin, so a test can hold the database without sleeping):

1. open the database (DuckDB's file lock: a second run gets exit 4) and heal what a dead run left
2. record the run as RUNNING (its own small commit, so a killed run shows in `runs`)
3. read groups and sources
4. score
5. diff the earned rewards against the ledger
6. write the run files to ``<out>/.<run_id>.tmp`` (fsynced; no manifest yet)
7. BEGIN; replace the scoped rows of every output table (the inserts count the rows out)
8. update the ledger and its audit log
9. write the folder's manifest (last), finish the `runs` row, record the folder, COMMIT
10. rename ``<out>/.<run_id>.tmp`` to ``<out>/<run_id>``

Dying anywhere before the COMMIT of step 9 leaves tables, ledger and files as they were (the
transaction dies with the process; the hidden folder is deleted by the next run). Dying between 9
and 10 leaves a committed run whose folder is still hidden: the next run renames it (step 1), using
`run_outputs` to find it whatever ``--out`` that run has.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from pipeline.config import OUTPUT_FORMATS, Config
from pipeline.definitions.model import Group
from pipeline.errors import GroupsFailedError, InputError, UsageError
from pipeline.rewards import files, ledger
from pipeline.scope import Scope
from pipeline.staging import EARNED, Staging, empty_relation
from pipeline.workspace import Workspace, base_tables, quote_ident, quote_literal

if TYPE_CHECKING:
    from pipeline.engines import Engine

SOURCE_TABLES = ("transactions", "line_items", "events", "points", "stores", "enrolments")
# Scored tables and whether they carry customer_id / period_index (what a scope can cut by).
SCORED_TABLES: dict[str, tuple[bool, bool]] = {
    "target_progress": (True, True),
    "period_achievements": (True, True),
    "streak_runs": (True, False),
    "streak_progress": (True, False),
    "capping": (True, True),
    "capping_adjustments": (True, True),
    "leaderboard": (True, True),
}
FAULT_ENV = "MILESTONES_FAULT_AFTER_STEP"
PAUSE_ENV = "MILESTONES_PAUSE_AFTER_STEP"
STEPS = (
    "lock and heal",
    "record start",
    "read inputs",
    "score",
    "diff ledger",
    "write files",
    "replace outputs",
    "update ledger",
    "commit",
    "publish files",
)


class ScoreResultLike(Protocol):
    """What `pipeline.scoring.engine.score` returns (the lead's contract)."""

    tables: dict[str, pl.DataFrame]
    rewards: pl.DataFrame
    failures: dict[str, str]
    groups: list[str]


ScoreFn = Callable[[Mapping[str, pl.LazyFrame], list[Group], date, Config], ScoreResultLike]
LoadGroupsFn = Callable[..., list[Group]]


@dataclass(frozen=True)
class RunRequest:
    """The options of `milestones run`; `validate` turns bad combinations into exit 2."""

    as_of: date | None = None
    from_date: date | None = None
    to_date: date | None = None
    groups: tuple[str, ...] = ()
    out_dir: Path | None = None
    fmt: str | None = None

    def validate(self) -> None:
        if self.as_of is not None and (self.from_date or self.to_date):
            raise UsageError("give either --as-of D or --from A --to B, not both")
        if (self.from_date is None) != (self.to_date is None):
            raise UsageError("--from and --to go together: give both dates of the range")
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise UsageError(
                f"--from {self.from_date} is after --to {self.to_date}; swap the dates"
            )
        if self.fmt is not None and self.fmt not in OUTPUT_FORMATS:
            raise UsageError(f"--format {self.fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")


@dataclass
class RunOutcome:
    """What a finished run did; the CLI prints it and exits 3 when `failures` is not empty."""

    run_id: str
    status: str
    as_of: date
    from_date: date | None
    to_date: date | None
    groups: list[str]
    awards: int
    revocations: int
    folder: Path
    failures: dict[str, str] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    healed: list[str] = field(default_factory=list)

    def raise_for_failures(self) -> None:
        """`GroupsFailedError` (exit 3) naming every failed group, once the run is committed."""
        if self.failures:
            detail = "; ".join(f"{name}: {msg}" for name, msg in sorted(self.failures.items()))
            raise GroupsFailedError(
                f"run {self.run_id} finished but {len(self.failures)} group(s) failed and kept "
                f"their previous results: {detail}. Fix them and rerun with --group NAME"
            )


def default_as_of(config: Config, now: datetime | None = None) -> date:
    """Yesterday in `org.timezone`: the last day whose data is complete (SPEC §10)."""
    now = now or datetime.now(UTC)
    return now.astimezone(ZoneInfo(config.timezone)).date() - timedelta(days=1)


def new_run_id(now: datetime) -> str:
    """Sortable by start time, unique even for two runs in the same microsecond."""
    return f"{now.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(2)}"


def read_sources(con: duckdb.DuckDBPyConnection) -> dict[str, pl.LazyFrame]:
    """The loaded exports as LazyFrames over in-memory frames (all of them: for small data and
    tests; a run reads customer shards, `pipeline.engines.shards.database_shards`).

    An export that was never loaded is an empty frame with no columns.
    """
    present = base_tables(con)
    out: dict[str, pl.LazyFrame] = {}
    for name in SOURCE_TABLES:
        if name in present:
            table = con.sql(f"SELECT * FROM {quote_ident(name)}").to_arrow_table()
            out[name] = pl.from_arrow(table).lazy()  # type: ignore[union-attr]
        else:
            out[name] = pl.LazyFrame()
    return out


def _db_folder(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The folder of the database file (None for an in-memory database: the temp folder)."""
    rows = con.sql("SELECT file FROM pragma_database_list WHERE name = current_database()"
                   ).fetchall()
    file = rows[0][0] if rows else None
    return Path(file).resolve().parent if file else None


SCRATCH_PREFIX = ".milestones-"
# Scratch folders a run makes beside the database, which `heal` removes after a kill ("scan"
# and "shards" are made only by earlier versions, whose leftovers may still be there).
SCRATCH_KINDS = ("scan", "stage", "shards")
DUCKDB_MEMORY_SHARE = 8  # DuckDB may use 1/8 of the machine's memory during a run (min 1 GiB)
DUCKDB_MEMORY_ENV = "MILESTONES_DUCKDB_MEMORY"  # e.g. "6GB": the operator's own limit
# Memory DuckDB's primary-key index takes per reward the run adds (held until the COMMIT).
LEDGER_KEY_BYTES = 160


def scratch_folder(con: duckdb.DuckDBPyConnection, kind: str) -> Path:
    """A new scratch folder beside the database (`heal` removes any a killed run left)."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}-", dir=_db_folder(con)))


def settle_session(con: duckdb.DuckDBPyConnection) -> None:
    """Bound DuckDB's memory, so that it spills big joins and inserts to disk instead of
    competing with the scoring for RAM, and read instants back in UTC whatever the machine's
    zone (the run files carry UTC instants).

    The bound is raised before the commit by `_room_for_ledger`.
    """
    chosen = os.environ.get(DUCKDB_MEMORY_ENV, "").strip()
    if chosen:
        try:
            con.execute(f"SET memory_limit = '{chosen.replace(chr(39), '')}'")
        except duckdb.Error as exc:
            raise UsageError(
                f"{DUCKDB_MEMORY_ENV}={chosen!r} is not a memory size DuckDB understands; "
                "use a value such as 6GB or 8000MB"
            ) from exc
    elif (sizes := _memory_sizes()) is not None:
        _set_limit(con, sizes[1])
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # DuckDB's bar would break cron mail


def _room_for_ledger(con: duckdb.DuckDBPyConnection, awards: int) -> None:
    """Raise DuckDB's limit by what the ledger's key index of `awards` new rewards needs: that
    index is held in memory until the COMMIT and cannot spill (a first run at 50 M
    transactions, ~31 M rewards, failed its commit at 2.9 GiB). An operator's own limit
    (`MILESTONES_DUCKDB_MEMORY`) is left as it is."""
    sizes = None if os.environ.get(DUCKDB_MEMORY_ENV, "").strip() else _memory_sizes()
    if sizes is None:
        return
    total, share = sizes
    limit = min(share + awards * LEDGER_KEY_BYTES, total * 3 // 4)
    if limit > share:
        _set_limit(con, limit)


def _memory_sizes() -> tuple[int, int] | None:
    """(the machine's memory, DuckDB's share of it during a run) in bytes; None if unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return (total, max(1 << 30, total // DUCKDB_MEMORY_SHARE)) if total > 0 else None


def _set_limit(con: duckdb.DuckDBPyConnection, limit: int) -> None:
    con.execute(f"SET memory_limit = '{limit // (1 << 20)}MiB'")


# ----------------------------------------------------------------------------------- the run


def run(
    workspace: Workspace,
    request: RunRequest,
    *,
    score: ScoreFn | None = None,
    load_groups: LoadGroupsFn | None = None,
    now: Callable[[], datetime] | None = None,
    progress: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> RunOutcome:
    """Run once: score the scope, update outputs and ledger, publish the files.

    Args:
        workspace: the database and config.
        request: as-of or range, groups, output folder and format.
        score: the scoring entry point (default `pipeline.scoring.engine.score`).
        load_groups: the registry reader (default `pipeline.registry.load_groups`).
        now: the clock, for tests.
        progress: called with a short line at each long step (None: quiet, as under cron).
        engine: where scoring happens (`pipeline.engines`; default the local engine with
            `score`); `score` is ignored when an engine is given.

    Raises:
        UsageError: bad option combination (exit 2).
        InputError: an unknown group, or nothing to score (exit 1).
        DatabaseBusyError: another process holds the database (exit 4).
    """
    request.validate()
    clock = now or (lambda: datetime.now(UTC))
    say = progress or (lambda _msg: None)
    config = workspace.config
    if engine is None:
        from pipeline.engines.local import LocalEngine

        engine = LocalEngine(score)
    if load_groups is None:
        from pipeline.registry import load_groups as load_groups_fn
    else:
        load_groups_fn = load_groups
    out_dir = (request.out_dir or config.output_dir).resolve()
    fmt = request.fmt or config.output_format
    as_of = request.to_date or request.as_of or default_as_of(config, clock())

    with workspace.connect() as con:
        con.complete()  # see _groups
        healed = heal(con, out_dir)
        _step(1)
        groups = _groups(con, load_groups_fn, request, config)
        started = clock()
        run_id = new_run_id(started)
        con.execute(
            "INSERT INTO runs (run_id, started_at, status, as_of, from_date, to_date, groups) "
            "VALUES ($id, $at, 'RUNNING', $as_of, $from, $to, $groups)",
            {"id": run_id, "at": started, "as_of": as_of, "from": request.from_date,
             "to": request.to_date, "groups": [g.name for g in groups]},
        )
        _step(2)
        say(f"run {run_id}: scoring {len(groups)} group(s) as of {as_of}")
        tmp = out_dir / f".{run_id}.tmp"
        try:
            outcome = _score_and_commit(
                con, run_id, groups, request, as_of, out_dir, fmt, engine, config, clock, say
            )
        except BaseException as exc:
            if _committed(con, run_id):
                # Stopped (a SIGTERM, Ctrl-C) after its COMMIT: the run is done and its files
                # are complete in `tmp`; the next run's `heal` publishes them.
                raise
            _record_failure(con, run_id, exc, clock())
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        files.publish(tmp, outcome.folder)
        _step(10)
        outcome.healed = healed
        return outcome


def _score_and_commit(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    groups: list[Group],
    request: RunRequest,
    as_of: date,
    out_dir: Path,
    fmt: str,
    engine: Engine,
    config: Config,
    clock: Callable[[], datetime],
    say: Callable[[str], None],
) -> RunOutcome:
    rows_in = {name: _count(con, name) for name in SOURCE_TABLES}
    settle_session(con)
    staging = Staging(scratch_folder(con, "stage"), groups)
    try:
        with engine.inputs(con) as inputs:
            _step(3)
            for part in engine.parts(inputs, groups, as_of, config):
                staging.add(part)
        staging.finish(con)
        _step(4)
        say("comparing earned rewards with the ledger")
        return _commit(con, run_id, groups, staging, request, as_of, out_dir, fmt, clock, say,
                       rows_in)
    finally:
        Scope.sql_unbind(con)
        staging.close()


def _commit(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    groups: list[Group],
    staging: Staging,
    request: RunRequest,
    as_of: date,
    out_dir: Path,
    fmt: str,
    clock: Callable[[], datetime],
    say: Callable[[str], None],
    rows_in: dict[str, int],
) -> RunOutcome:
    """Steps 5 to 9 over the staged rows, in DuckDB: nothing is held whole in memory."""
    failures = {g.name: staging.failures[g.name] for g in groups if g.name in staging.failures}
    ok = [g for g in groups if g.name not in failures]
    scope = Scope.build(ok, request.from_date, as_of)
    ids = ", ".join(str(g) for g in scope.group_ids) or "NULL"
    standing = f"(SELECT * FROM rewards WHERE group_id IN ({ids}))"
    # The per-customer windows in scope come from the staged rows of those groups alone.
    keyed = [staging.relation(name, only=scope.per_customer)
             for name in ("target_progress", "period_achievements", EARNED)]
    scope.sql_bind(con, [*(r for r in keyed if r is not None),
                         f"(SELECT * FROM target_progress WHERE group_id IN ({ids}))",
                         f"(SELECT * FROM period_achievements WHERE group_id IN ({ids}))",
                         standing])
    # The earned rewards in one scan with the predicate: a few million rows, where it costs
    # little, and the diff's window over one scan stays within DuckDB's memory (over the
    # group-by-group branches a 10 M run ran out of it).
    earned = staging.relation(EARNED) or empty_relation("rewards", ledger.REWARD_COLUMNS)
    awards, revocations = ledger.diff_sql(
        con,
        f"(SELECT * FROM {earned} e WHERE {scope.sql_predicate('e')})",
        f"(SELECT * FROM {standing} r WHERE {scope.sql_predicate('r')})",
    )
    _step(5)

    selected = {
        name: "SELECT * FROM " + _in_scope(staging, scope, name,
                                           [c for c in _columns(con, name) if c != "run_id"])
        for name in SCORED_TABLES
    }
    # The output tables' rows are counted by their inserts (step 7), for the manifest of step 9.
    ledger_rows = {"awards": _rows(con, f"SELECT * FROM {awards}"),
                   "revocations": _rows(con, f"SELECT * FROM {revocations}")}
    status = _status(groups, failures)
    tmp = out_dir / f".{run_id}.tmp"
    info: dict[str, Any] = {
        "run_id": run_id,
        "status": status,
        "as_of": as_of.isoformat(),
        "from_date": request.from_date.isoformat() if request.from_date else None,
        "to_date": request.to_date.isoformat() if request.to_date else None,
        "groups": [g.name for g in ok],
        "failed_groups": failures,
        "rows_in": rows_in,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    names = _names_sql(groups)
    capping = _sort_from_file(
        con,
        f"SELECT a.group_id, n.group_name, a.* EXCLUDE (group_id) "
        f"FROM ({selected['capping_adjustments']}) a LEFT JOIN {names} n USING (group_id)",
        "group_id, target_id, customer_id, period_index, awarded_at, points_id",
        staging.root / "capping_adjustments_file.parquet",
    )
    top = (f"SELECT b.group_id, n.group_name, b.* EXCLUDE (group_id) "
           f"FROM ({selected['leaderboard']}) b LEFT JOIN {names} n USING (group_id) "
           f"WHERE rank <= {files.LEADERBOARD_TOP_N} "
           f"ORDER BY group_id, target_id, period_index, rank")
    queries = {"awards": ledger.ordered(awards), "revocations": ledger.ordered(revocations),
               "capping_adjustments": capping, "leaderboard_top": top}
    top_rows = _rows(con, top)
    # Streamed from DuckDB in batches: the award lines of a first run can be tens of millions.
    files.write_run_files(
        tmp, {name: con.sql(q).pl(lazy=True) for name, q in queries.items()}, fmt
    )
    _step(6)
    say("writing tables and ledger")

    _room_for_ledger(con, ledger_rows["awards"])
    con.execute("BEGIN TRANSACTION")
    try:
        rows_out = {name: _replace(con, name, query, scope, run_id)
                    for name, query in selected.items()}
        rows_out |= ledger_rows
        _step(7)
        ledger.apply_tables(con, awards, revocations, run_id=run_id, at=clock())
        _step(8)
        # Inside the transaction: if the run dies before its COMMIT, the next run deletes the
        # hidden folder, manifest and all (`heal`), as before.
        files.write_manifest(tmp, fmt, {**info, "rows_out": rows_out}, {
            "awards": rows_out["awards"], "revocations": rows_out["revocations"],
            "capping_adjustments": rows_out["capping_adjustments"], "leaderboard_top": top_rows})
        folder = out_dir / run_id
        con.execute(
            "UPDATE runs SET finished_at = $at, status = $status, groups = $groups, "
            "awards = $awards, revocations = $revocations, error = $error WHERE run_id = $id",
            {"at": clock(), "status": status, "groups": staging.scored,
             "awards": rows_out["awards"], "revocations": rows_out["revocations"],
             "error": _failure_text(failures), "id": run_id},
        )
        con.execute(
            "INSERT INTO run_outputs (run_id, folder, format) VALUES ($id, $folder, $fmt)",
            {"id": run_id, "folder": str(folder), "fmt": fmt},
        )
        con.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed was already rolled back by DuckDB; keep its error, not ours.
        with contextlib.suppress(duckdb.TransactionException):
            con.execute("ROLLBACK")
        raise
    _step(9)
    return RunOutcome(
        run_id=run_id,
        status=status,
        as_of=as_of,
        from_date=request.from_date,
        to_date=request.to_date,
        groups=list(staging.scored),
        awards=rows_out["awards"],
        revocations=rows_out["revocations"],
        folder=folder,
        failures=failures,
        rows_out=rows_out,
    )


def _groups(
    con: duckdb.DuckDBPyConnection, load_groups: LoadGroupsFn, request: RunRequest, config: Config
) -> list[Group]:
    names = list(request.groups) or None
    groups = load_groups(con, names, config=config)
    # duckdb 2.0 refuses con.sql() while a half-read result (a fetchone) is still open.
    con.complete()
    if names:
        found = {g.name.strip().casefold() for g in groups}
        missing = [n for n in names if n.strip().casefold() not in found]
        if missing:
            raise InputError(
                f"no active group named {', '.join(repr(n) for n in missing)}; "
                "see `milestones groups list` for the registered names"
            )
    if not groups:
        raise InputError(
            "no active groups are registered, so there is nothing to score; "
            "register one with `milestones groups create FILE`"
        )
    return groups


def _status(groups: list[Group], failures: Mapping[str, str]) -> str:
    if not failures:
        return "SUCCEEDED"
    return "FAILED" if len(failures) >= len(groups) else "PARTIAL"


def _failure_text(failures: Mapping[str, str]) -> str | None:
    if not failures:
        return None
    return "; ".join(f"{name}: {msg}" for name, msg in sorted(failures.items()))


def _in_scope(staging: Staging, scope: Scope, table: str, columns: Sequence[str]) -> str:
    """The staged rows of output `table` that the run writes, those in scope, as an SQL
    relation (typed as the table's `columns` when there are none)."""
    has_customer, has_period = SCORED_TABLES[table]
    rows = scope.sql_rows(lambda ids: staging.relation(table, only=ids),
                          customer=has_customer, period=has_period)
    return rows if rows is not None else empty_relation(table, columns)


def _replace(
    con: duckdb.DuckDBPyConnection, table: str, query: str, scope: Scope, run_id: str
) -> int:
    """Delete the table's rows in scope and insert the new ones (both cut by the same scope);
    returns how many were inserted."""
    has_customer, has_period = SCORED_TABLES[table]
    t = quote_ident(table)
    pred = scope.sql_predicate(t, customer=has_customer, period=has_period)
    con.execute(f"DELETE FROM {t} WHERE {pred}")
    columns = _columns(con, table)
    select = ", ".join("$run AS run_id" if c == "run_id" else quote_ident(c) for c in columns)
    names = ", ".join(quote_ident(c) for c in columns)
    inserted = con.execute(
        f"INSERT INTO {t} ({names}) SELECT {select} FROM ({query})",
        {"run": run_id} if table == "target_progress" else None,
    ).fetchall()
    return int(inserted[0][0])


def _sort_from_file(
    con: duckdb.DuckDBPyConnection, query: str, order_by: str, path: Path
) -> str:
    """`query` ordered by `order_by`, sorted from a Parquet copy of its rows at `path`.

    Why the copy: DuckDB sizes a sort by its estimate of the rows, and guesses that a filter
    keeps a fifth of them. Over the staged files cut by the scope's period lists, the 50 M
    bench's 60 M capping lines were estimated at 12 M, and the sort ran out of its 2.9 GiB in a
    few seconds, in 4 tries of 5. Read back from one file, the count is exact and the sort
    spills as it should (~15 s more for those 60 M rows)."""
    con.execute(f"COPY ({query}) TO {quote_literal(str(path))} (FORMAT parquet)")
    return f"SELECT * FROM read_parquet({quote_literal(str(path))}) ORDER BY {order_by}"


def _names_sql(groups: Sequence[Group]) -> str:
    """An SQL relation of (group_id, group_name), for the files people read."""
    if not groups:
        return "(SELECT NULL::BIGINT AS group_id, NULL::VARCHAR AS group_name WHERE false)"
    rows = ", ".join(f"({g.group_id}, {quote_literal(g.name)})" for g in groups)
    return f"(SELECT * FROM (VALUES {rows}) v(group_id, group_name))"


def _rows(con: duckdb.DuckDBPyConnection, query: str) -> int:
    return int(con.sql(f"SELECT count(*) FROM ({query})").fetchall()[0][0])


def _committed(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether the run's transaction committed (its run_outputs row exists)."""
    with contextlib.suppress(duckdb.Error):
        return bool(
            con.sql("SELECT count(*) FROM run_outputs WHERE run_id = $id",
                    params={"id": run_id}).fetchall()[0][0]
        )
    return False


def _record_failure(
    con: duckdb.DuckDBPyConnection, run_id: str, exc: BaseException, at: datetime
) -> None:
    """Mark the run FAILED with the error, after its transaction (if any) was rolled back."""
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    # If the database itself is what failed, the next run marks this one FAILED instead.
    with contextlib.suppress(duckdb.Error):
        con.execute(
            "UPDATE runs SET status = 'FAILED', finished_at = $at, error = $error "
            "WHERE run_id = $id",
            {"at": at, "error": message, "id": run_id},
        )


def describe(outcome: RunOutcome) -> list[str]:
    """A finished run in a few lines, for the terminal and cron mail."""
    scope = (f"windows overlapping {outcome.from_date}..{outcome.to_date}"
             if outcome.from_date else f"every window started by {outcome.as_of}")
    lines = [*outcome.healed,
             f"run {outcome.run_id} {outcome.status}: as of {outcome.as_of}, {scope}",
             f"  groups: {len(outcome.groups)} scored, {len(outcome.failures)} failed",
             f"  rewards: {outcome.awards} issued, {outcome.revocations} revoked",
             f"  files: {outcome.folder}"]
    lines += [f"  failed: {name}: {msg}" for name, msg in sorted(outcome.failures.items())]
    return lines


def history(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pl.DataFrame:
    """The latest runs, newest first, with their duration and where their files are."""
    return con.sql("SELECT * FROM run_history LIMIT $n", params={"n": limit}).pl()


# --------------------------------------------------------------------------------- healing


def heal(con: duckdb.DuckDBPyConnection, out_dir: Path) -> list[str]:
    """Finish or clean up after runs that died; returns one line per thing done.

    - A committed run whose folder is still ``.<run_id>.tmp`` (it died between COMMIT and
      rename): rename it now, after checking it against its manifest. The folder was complete
      and fsynced before the COMMIT, so this always finds it whole.
    - A hidden folder in `out_dir` of a run that never committed: delete it.
    - A `runs` row still RUNNING (this process holds the lock, so nobody is running): FAILED.
    """
    notes: list[str] = []
    committed = con.sql("SELECT run_id, folder FROM run_outputs").fetchall()
    known = {run_id for run_id, _ in committed}
    for run_id, folder in committed:
        final = Path(folder)
        tmp = final.parent / f".{run_id}.tmp"
        # A committed run with neither folder had its files removed on purpose (retention).
        if final.exists() or not tmp.exists():
            continue
        problems = files.verify_folder(tmp)
        if problems:
            notes.append(
                f"run {run_id} committed but its hidden folder is damaged ({problems[0]}); "
                f"its rewards are in the ledger: SELECT * FROM rewards WHERE issued_run_id = "
                f"'{run_id}' OR revoked_run_id = '{run_id}'"
            )
            continue
        files.publish(tmp, final)
        notes.append(f"published the files of run {run_id}, which stopped before renaming them")
    if out_dir.is_dir():
        for tmp in out_dir.glob(".*.tmp"):
            run_id = tmp.name[1:-4]
            if run_id not in known and tmp.is_dir():
                shutil.rmtree(tmp)
                notes.append(f"removed {tmp}, left by run {run_id} that never committed")
    db_folder = _db_folder(con)
    if db_folder is not None:
        for scratch in [p for kind in SCRATCH_KINDS
                        for p in db_folder.glob(f"{SCRATCH_PREFIX}{kind}-*")]:
            if scratch.is_dir():  # this process holds the lock: nobody else is using it
                shutil.rmtree(scratch, ignore_errors=True)
                notes.append(f"removed {scratch}, scratch space left by a run that was killed")
    stale = con.sql("SELECT run_id FROM runs WHERE status = 'RUNNING'").fetchall()
    if stale:
        con.execute(
            "UPDATE runs SET status = 'FAILED', error = 'the process stopped before its commit "
            "(killed or crashed); nothing of it was kept' WHERE status = 'RUNNING'"
        )
        notes += [f"marked run {r} FAILED: it stopped before its commit" for (r,) in stale]
    return notes


# ---------------------------------------------------------------------------------- helpers


def _step(k: int) -> None:
    """Fault injection and pause hooks for the kill and lock tests (no-ops otherwise)."""
    if os.environ.get(FAULT_ENV) == str(k):
        sys.stderr.flush()
        os._exit(137)
    if os.environ.get(PAUSE_ENV) == str(k):
        print(f"milestones: paused after step {k} ({STEPS[k - 1]})", file=sys.stderr, flush=True)
        sys.stdin.readline()


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        r[0]
        for r in con.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $t "
            "ORDER BY ordinal_position",
            params={"t": table},
        ).fetchall()
    ]


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    if table not in base_tables(con):
        return 0
    rows = con.sql(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()
    return int(rows[0][0])


def with_config(workspace: Workspace, **changes: Any) -> Workspace:
    """A workspace whose config differs in `changes` (tests and the demo)."""
    return Workspace(workspace.db_path, replace(workspace.config, **changes))
