"""`milestones bench`: how fast the pipeline is, against the floor and what people would write.

One process, one generated data set, side by side (issue 8):

1. generate (or reuse a folder generated earlier with the same options) with `tools.generate`;
2. load every export into a fresh workspace, register the programme, and `run` it exactly as
   the CLI does (`runs.run` with the local engine), timing the engine's read and score steps;
3. the **floor**: read the same records from the database once, then one polars
   ``group_by(customer, window)`` per group (the least any engine must do);
4. the **SQL baseline**: what an analyst would otherwise write for the programme's DEFAULT
   monthly SALES group and the continuous streak over it, in DuckDB on the loaded tables; and
   the engine on those two groups alone (reading only the tables they need). Their outputs are
   compared, so the comparison is between two correct answers;
5. the **reference** (`tests/reference.py`, the slow by-the-SPEC evaluator) on a 1% customer
   sample, extrapolated by records.

Every stage records wall seconds and its own peak RSS (`resource.getrusage` ``ru_maxrss``; the
high-water mark is reset between stages through ``/proc/self/clear_refs`` where Linux allows it,
else the figure is the process's peak so far).
"""

from __future__ import annotations

import importlib.util
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import polars as pl

from pipeline import registry, runs
from pipeline.config import Config
from pipeline.definitions import model as m
from pipeline.definitions.parse import read_bodies
from pipeline.engines.local import LocalEngine
from pipeline.errors import InputError, UsageError
from pipeline.loading import load_exports
from pipeline.tools import generate as gen
from pipeline.workspace import Workspace, quote_ident

Progress = Callable[[str], None]

BASELINE_GROUP = "Baseline Monthly Sales"
BASELINE_STREAK = "Baseline Monthly Sales Streak"
RECORDS = ("transactions", "line_items", "events", "points")
# Records the floor holds at once, at most. Whole, the 10M bench's 48M records peaked at 6.4-7.8
# GiB, within reach of the 8 GiB the bench must stay under; in two shards 4.5 GiB, in the same
# time (standalone on one workspace: 62-67 s whole, 61-62 s in two shards).
FLOOR_ROWS_PER_SHARD = 25_000_000
REFERENCE = Path(__file__).resolve().parents[2] / "tests" / "reference.py"
JSON_KEYS = ("records", "load_s", "scoring_s", "floor_s", "sql_baseline_s",
             "engine_on_baseline_group_s", "reference_extrapolated_s", "peak_rss_bytes")


@dataclass(frozen=True)
class BenchOptions:
    """What to measure. `customers` None: transactions / 20 (~20 bills a customer a year)."""

    transactions: int = 1_000_000
    customers: int | None = None
    days: int = 365
    seed: int = 1
    groups: tuple[str, ...] = ()  # names (or file slugs) of programme groups; () = all
    data: Path | None = None  # generate into (or reuse) this folder; None = a temp folder
    keep: Path | None = None  # keep the workspace here; None = a temp folder, deleted
    reference_share: float = 0.01
    per_group: bool = False

    def generate_options(self) -> gen.Options:
        customers = self.customers or max(1, self.transactions // 20)
        return gen.Options(customers=customers, days=self.days, seed=self.seed,
                           transactions=self.transactions)


@dataclass(frozen=True)
class Stage:
    """One timed step; `peak_rss` is the highest RSS while it ran (bytes)."""

    name: str
    rows: int
    seconds: float
    peak_rss: int
    note: str = ""


@dataclass
class BenchResult:
    stages: list[Stage] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


# ---------------------------------------------------------------------------- measuring


def _reset_peak() -> bool:
    """Start a new RSS high-water mark (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """The high-water RSS in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _Meter:
    """Times stages (which may nest) and keeps the highest peak of all of them."""

    def __init__(self, result: BenchResult, say: Progress) -> None:
        self.result = result
        self.say = say
        self.resets = _reset_peak()
        self.max_rss = peak_rss()
        self._open: list[dict[str, Any]] = []

    @contextmanager
    def stage(self, name: str, rows: int = 0, note: str = "") -> Iterator[dict[str, Any]]:
        """Time the block; it may set ``info["rows"]`` / ``info["note"]`` once it knows them.
        A stage is listed before the stages nested in it, and its peak includes theirs."""
        info = self.begin(name, rows, note)
        try:
            yield info
        finally:
            self.end(info)

    def begin(self, name: str, rows: int = 0, note: str = "") -> dict[str, Any]:
        self.say(f"{name.strip()} ...")
        _reset_peak()
        info: dict[str, Any] = {"name": name, "rows": rows, "note": note, "peak": 0,
                                "position": len(self.result.stages),
                                "started": time.perf_counter()}
        self._open.append(info)
        return info

    def end(self, info: dict[str, Any]) -> None:
        self._open.remove(info)
        seconds = time.perf_counter() - info["started"]
        peak = max(peak_rss(), info["peak"])
        self.add(Stage(info["name"], int(info["rows"]), seconds, peak, str(info["note"])),
                 info["position"])

    def add(self, stage: Stage, position: int | None = None) -> None:
        self.max_rss = max(self.max_rss, stage.peak_rss)
        if self._open:
            self._open[-1]["peak"] = max(self._open[-1]["peak"], stage.peak_rss)
        if position is None:
            self.result.stages.append(stage)
        else:
            self.result.stages.insert(position, stage)
        self.say(f"{stage.name.strip()}: {stage.seconds:.2f} s")


class _RunSteps:
    """`runs.run`'s progress lines as stages: after scoring it diffs the ledger and writes the
    run files ("comparing ..."), then replaces the output tables and the ledger ("writing ...")
    and commits."""

    STEPS = (("comparing earned rewards", "  run: diff ledger, write files"),
             ("writing tables and ledger", "  run: write tables, ledger, commit"))

    def __init__(self, meter: _Meter, rows: int) -> None:
        self.meter = meter
        self.rows = rows
        self.current: dict[str, Any] | None = None

    def __call__(self, message: str) -> None:
        for prefix, name in self.STEPS:
            if message.startswith(prefix):
                self.close()
                self.current = self.meter.begin(name, self.rows)

    def close(self) -> None:
        if self.current is not None:
            self.meter.end(self.current)
            self.current = None


class TimedEngine:
    """The local engine with its two steps (read inputs, score) timed for the bench."""

    def __init__(self, meter: _Meter, rows: int) -> None:
        self.inner = LocalEngine()
        self.meter = meter
        self.rows = rows

    @contextmanager
    def inputs(self, con: duckdb.DuckDBPyConnection) -> Iterator[Any]:
        with ExitStack() as stack:
            with self.meter.stage("  run: read inputs", self.rows):
                got = stack.enter_context(self.inner.inputs(con))
            yield got

    def parts(self, inputs: Any, groups: list[m.Group], as_of: date,
              config: Config) -> Iterator[Any]:
        # The run stages each part as it comes, so this stage includes writing them to Parquet.
        with self.meter.stage("  run: score", self.rows,
                              f"{len(groups)} groups, {len(inputs)} shard(s)"):
            yield from self.inner.parts(inputs, groups, as_of, config)


# ------------------------------------------------------------------------------- the bench


def run_bench(opts: BenchOptions, progress: Progress | None = None) -> BenchResult:
    """Generate (or reuse), load, register, run, then the floor and the two baselines.

    Raises:
        UsageError: a `groups` name that is not in the programme.
        InputError: the data did not load cleanly or a group did not register.
    """
    say = progress or (lambda _msg: None)
    result = BenchResult()
    meter = _Meter(result, say)
    if not meter.resets:
        result.notes.append("peak RSS is the process's peak so far (no /proc/self/clear_refs)")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="milestones-bench-"))
    try:
        data = _data(opts, tmp, meter)
        records = data.records
        result.figures["records"] = records
        work = opts.keep or tmp / "workspace"
        work.mkdir(parents=True, exist_ok=True)
        config = Config(leaderboards_enabled=True, output_dir=work / "rewards",
                        output_format="parquet")
        ws = Workspace(work / "bench.duckdb", config)
        for stale in (ws.db_path, ws.db_path.with_name(ws.db_path.name + ".wal")):
            stale.unlink(missing_ok=True)
        shutil.rmtree(config.output_dir, ignore_errors=True)
        with ws.connect() as con:
            _load(con, data, meter)
            bodies, selected = _register(con, data, opts.groups, config, meter)
        as_of = data.as_of
        engine = TimedEngine(meter, records)
        steps = _RunSteps(meter, records)
        with meter.stage("run (total)", records, f"{len(selected)} groups") as info:
            try:
                outcome = runs.run(ws, runs.RunRequest(as_of=as_of, groups=tuple(selected)),
                                   engine=engine, progress=steps)
            finally:
                steps.close()
            info["note"] += f", {outcome.awards:,} rewards, status {outcome.status}"
        if outcome.failures:
            result.notes.append(f"groups failed in the run: {outcome.failures}")
        with ws.connect(read_only=True) as con:
            # DuckDB's default (80% of RAM) on top of the floor's frames ran a 50M bench out of
            # memory in a self-join; bound it as the run does, so big joins spill.
            runs.settle_session(con)
            groups = registry.load_groups(con, list(selected), config=config)
            con.complete()
            _floor(con, groups, records, meter)
            by_name = {g.name: g for g in registry.load_groups(con, None, config=config)}
            con.complete()
            _baselines(con, by_name, as_of, config, meter, result)
            if opts.per_group:
                _per_group(con, groups, as_of, config, records, meter)
            _reference(con, bodies, selected, as_of, config, opts.reference_share, records,
                       meter, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _figures(result, meter, opts, load_before)
    return result


def _data(opts: BenchOptions, tmp: Path, meter: _Meter) -> gen.Generated:
    wanted = opts.generate_options()
    folder = opts.data or tmp / "data"
    found = gen.read_generated(folder) if opts.data else None
    if found is not None and found.options == wanted:
        meter.add(Stage("generate", found.records, 0.0, peak_rss(),
                        f"reused {folder} (took {found.seconds:.1f} s)"))
        return found
    with meter.stage("generate", 0, f"{wanted.customers:,} customers, {wanted.days} days") as i:
        made = gen.generate(wanted, folder)
        i["rows"] = made.records
    return made


def _load(con: duckdb.DuckDBPyConnection, data: gen.Generated, meter: _Meter) -> None:
    with meter.stage("load", 0) as info:
        loaded = rejected = 0
        for kind, paths in data.files.items():
            for path in paths:  # one command per file: memory stays at one file's size
                report = load_exports(con, kind, [str(path)], timezone="UTC")
                loaded += report.rows_loaded
                rejected += report.rows_rejected
        info["rows"] = loaded
        info["note"] = f"{sum(len(p) for p in data.files.values())} files"
    if rejected:
        raise InputError(f"{rejected:,} generated rows were rejected on load; see the rejects "
                         "table of the bench workspace (--keep DIR) and report it as a bug")


def _register(con: duckdb.DuckDBPyConnection, data: gen.Generated, wanted: Sequence[str],
              config: Config, meter: _Meter) -> tuple[list[dict[str, Any]], list[str]]:
    bodies = [body for path in data.groups for _, body in read_bodies(path)]
    names = [b["name"] for b in bodies]
    selected = select_groups(names, wanted)
    with meter.stage("register", 0, f"{len(bodies)} groups") as info:
        outcomes = registry.register_bodies(con, [(b["name"], b) for b in bodies],
                                            config=config, as_of=data.as_of)
        info["rows"] = len(outcomes)
    bad = [o for o in outcomes if not o.registered]
    if bad:
        detail = "; ".join(f"{o.source}: {o.envelope['errors']}" for o in bad)
        raise InputError(f"{len(bad)} generated group(s) did not register: {detail}")
    return bodies, selected


def select_groups(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The programme names asked for (by name or file slug, case-insensitive); all if none.

    Raises:
        UsageError: a name that is not in the programme.
    """
    if not wanted:
        return list(names)
    keys = {n.casefold(): n for n in names} | {gen.slug(n): n for n in names}
    out, unknown = [], []
    for w in wanted:
        name = keys.get(w.strip().casefold()) or keys.get(gen.slug(w))
        if name is None:
            unknown.append(w)
        elif name not in out:
            out.append(name)
    if unknown:
        raise UsageError(f"--groups: {', '.join(map(repr, unknown))} not in the programme; "
                         f"choose from: {', '.join(names)}")
    return out


# ---------------------------------------------------------------------------------- floor


@dataclass(frozen=True)
class FloorSpec:
    """How the floor aggregates a group: source frame, time column, window, measured column."""

    source: str
    time_col: str
    every: str
    column: str | None  # None: count rows
    count: bool = False  # count the column's non-null values instead of summing them


def floor_spec(group: m.Group) -> FloorSpec:
    """The plainest job with the same shape as the group's first target."""
    t = group.targets[0]
    entity, ttype = t.entity, t.type
    if entity is m.TargetEntity.EVENT and t.event_name not in ("TransactionAdd", "ReturnBill"):
        source, time_col = "events", "event_time"
    elif entity is m.TargetEntity.REWARDS:
        source, time_col = "points", "awarded_at"
    elif entity is m.TargetEntity.LINEITEM:
        source, time_col = "line_items", "txn_time"
    else:
        source, time_col = "transactions", "txn_time"
    measured = {
        m.TargetType.SALES: "amount",
        m.TargetType.GROSS_SALES: "value" if source == "line_items" else "gross_amount",
        m.TargetType.QUANTITY: "qty",
        m.TargetType.REGULAR_POINTS: "points",
        m.TargetType.PROMOTIONAL_POINTS: "points",
        m.TargetType.ALL_POINTS: "points",
    }
    column, count = measured.get(ttype), False
    if t.extended_field is not None and ttype in (m.TargetType.EXTENDED_FIELD,
                                                  m.TargetType.EVENT_ATTRIBUTE):
        column = t.extended_field.name
        count = t.extended_field.aggregate_function == "COUNT"
    return FloorSpec(source, time_col, _every(group), column, count)


def _every(group: m.Group) -> str:
    """A polars truncation as long as the group's windows."""
    if group.periods:
        days = (group.periods[0].end - group.periods[0].start).days + 1
        months = 0
    else:
        days, months = group.window_length
        days += 31 * months
    for limit, every in ((1, "1d"), (7, "1w"), (31, "1mo"), (92, "1q"), (184, "6mo")):
        if days <= limit:
            return every
    return "1y"


def floor_read(con: duckdb.DuckDBPyConnection, specs: Sequence[FloorSpec],
               shard: tuple[int, int] = (0, 1)) -> dict[str, pl.DataFrame]:
    """Each record table the specs use, once, with only the columns they aggregate (as a lazy
    engine would read them); line items get their bill's customer and time. `shard` = (k, n):
    only the customers whose hash is k modulo n (n = 1: everyone)."""
    wanted: dict[str, set[str]] = {}
    for spec in specs:
        cols = wanted.setdefault(spec.source, set())
        cols.update(c for c in (spec.column,) if c)
        if spec.source == "line_items":
            cols.add("txn_id")
            wanted.setdefault("transactions", set()).update({"txn_id"})
        else:
            cols.update({"customer_id", spec.time_col})
    if "line_items" in wanted:
        wanted["transactions"].update({"customer_id", "txn_time"})
    k, n = shard
    mine = f"hash(customer_id) % {int(n)} = {int(k)}"
    where = {table: "" if n == 1 else f" WHERE {mine}" for table in wanted}
    if n > 1 and "line_items" in wanted:
        where["line_items"] = f" WHERE txn_id IN (SELECT txn_id FROM transactions WHERE {mine})"
    frames = {
        table: con.sql(f"SELECT {', '.join(quote_ident(c) for c in sorted(cols))} "
                       f"FROM {quote_ident(table)}{where[table]}").pl()
        for table, cols in wanted.items()
    }
    if "line_items" in frames:
        frames["line_items"] = frames["line_items"].join(
            frames["transactions"].select("txn_id", "customer_id", "txn_time"), on="txn_id",
            how="inner")
    return frames


def floor_aggregate(frames: Mapping[str, pl.DataFrame], spec: FloorSpec) -> pl.DataFrame:
    frame = frames[spec.source]
    keys = ["customer_id", pl.col(spec.time_col).dt.truncate(spec.every).alias("_window")]
    if spec.column is None:
        agg = pl.len()
    else:
        agg = pl.col(spec.column).count() if spec.count else pl.col(spec.column).sum()
    return frame.group_by(keys).agg(agg)


def _floor(con: duckdb.DuckDBPyConnection, groups: Sequence[m.Group], records: int,
           meter: _Meter) -> None:
    specs = [floor_spec(g) for g in groups]
    # Above FLOOR_ROWS_PER_SHARD records the floor reads customer shards one after another, so
    # that it stays well within memory too (a customer's windows are all in one shard: the same
    # group_bys).
    count = max(1, math.ceil(records / FLOOR_ROWS_PER_SHARD))
    with meter.stage("floor (total)", records, f"{len(groups)} group_bys") as info:
        read_s, cells, rows = 0.0, 0, 0
        for k in range(count):
            started = time.perf_counter()
            frames = floor_read(con, specs, (k, count))
            read_s += time.perf_counter() - started
            cells += sum(floor_aggregate(frames, spec).height for spec in specs)
            rows += sum(f.height for name, f in frames.items()
                        if name in {s.source for s in specs})
            del frames
        info["rows"] = rows
        info["note"] += f"; read {read_s:.2f} s, {cells:,} customer-windows"
        if count > 1:
            info["note"] += f", {count} customer shards"


# ------------------------------------------------------------------------------ baselines

SQL_WINDOWS = """
CREATE OR REPLACE TEMP TABLE bench_windows AS
WITH periods AS (        -- the group's monthly windows that have started by D
    SELECT period_index, start_date, end_date FROM target_periods
    WHERE group_id = $gid AND start_date <= $as_of
),
bills AS (               -- regular bills up to the end of D, on their local date
    SELECT txn_id, customer_id, amount, CAST(timezone($tz, txn_time) AS DATE) AS day
    FROM transactions WHERE type = 'REGULAR' AND txn_time < $end
),
counted AS (
    SELECT b.customer_id, p.period_index, b.amount AS value, true AS bill
    FROM bills b JOIN periods p ON b.day BETWEEN p.start_date AND p.end_date
    UNION ALL            -- a return reduces its bill's window, else its own date's
    SELECT r.customer_id, p.period_index, -abs(r.amount), false
    FROM transactions r LEFT JOIN bills b ON b.txn_id = r.parent_txn_id
    JOIN periods p
      ON coalesce(b.day, CAST(timezone($tz, r.txn_time) AS DATE))
         BETWEEN p.start_date AND p.end_date
    WHERE r.type = 'RETURN' AND r.txn_time < $end
      AND (r.parent_txn_id IS NULL OR b.txn_id IS NOT NULL)
),
enrolled AS (SELECT DISTINCT customer_id FROM counted WHERE bill),  -- returns never enrol
totals AS (SELECT customer_id, period_index, sum(value) AS value FROM counted GROUP BY ALL)
SELECT e.customer_id, p.period_index, coalesce(t.value, 0) AS value,
       coalesce(t.value, 0) >= $target AS achieved, p.end_date <= $as_of AS ended
FROM enrolled e CROSS JOIN periods p
LEFT JOIN totals t ON t.customer_id = e.customer_id AND t.period_index = p.period_index
"""

SQL_STREAKS = """
WITH islands AS (        -- runs of consecutive achieved windows
    SELECT customer_id, count(*) AS length, max(period_index) AS last_index
    FROM (SELECT customer_id, period_index,
                 period_index - row_number() OVER (PARTITION BY customer_id
                                                   ORDER BY period_index) AS island
          FROM bench_windows WHERE achieved)
    GROUP BY customer_id, island
),
latest AS (              -- the latest ENDED window, or the RUNNING one when achieved
    SELECT customer_id, max(period_index) FILTER (WHERE ended OR achieved) AS idx
    FROM bench_windows GROUP BY customer_id
)
SELECT customer_id, current_count, longest_count,
       len(list_filter($levels, lambda n: n <= longest_count)) AS levels_achieved
FROM (SELECT l.customer_id,
             coalesce(max(i.length) FILTER (WHERE i.last_index = l.idx), 0) AS current_count,
             coalesce(max(i.length), 0) AS longest_count
      FROM latest l LEFT JOIN islands i USING (customer_id)
      GROUP BY l.customer_id)
"""


def sql_baseline(con: duckdb.DuckDBPyConnection, group: m.Group, streak: m.Group, as_of: date,
                 timezone: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A monthly SALES target and a continuous streak over it in plain DuckDB SQL, as an
    analyst would write them: (windows: customer, period, value, achieved), (streaks)."""
    target = group.targets[0].default_value(1)
    end = datetime.combine(as_of + timedelta(days=1), clock_time.min)
    params = {"gid": group.group_id, "as_of": as_of, "tz": timezone, "target": target,
              "end": end}
    con.execute("SET TimeZone = 'UTC'")
    con.execute(SQL_WINDOWS, params)
    windows = con.sql("SELECT * FROM bench_windows").pl()
    levels = [lvl.count for lvl in streak.streak_levels]
    streaks = con.sql(SQL_STREAKS, params={"levels": levels}).pl()
    return windows, streaks


def _baselines(con: duckdb.DuckDBPyConnection, by_name: Mapping[str, m.Group], as_of: date,
               config: Config, meter: _Meter, result: BenchResult) -> None:
    group, streak = by_name.get(BASELINE_GROUP), by_name.get(BASELINE_STREAK)
    if group is None or streak is None:
        result.notes.append("the baseline groups are not registered; SQL baseline skipped")
        return
    txns = int(con.sql("SELECT count(*) FROM transactions").fetchall()[0][0])
    with meter.stage("SQL baseline (DuckDB)", txns, "monthly sales + streak"):
        windows, streaks = sql_baseline(con, group, streak, as_of, config.timezone)
    count = math.ceil(txns / BASELINE_SHARD_TRANSACTIONS)
    note = "reads only what they need" + (f", {count} customer shards" if count > 1 else "")
    with meter.stage("engine on the baseline groups", txns, note):
        from pipeline.engines.shards import database_shards
        from pipeline.scoring.engine import merge_results

        # The local engine as a run drives it (one chain of two groups: it splits the shards
        # for its second thread), on the three exports the groups read.
        with database_shards(con, count, tables=BASELINE_TABLES) as shards:
            scored = merge_results(
                LocalEngine().parts(shards, [group, streak], as_of, config))
    result.figures["baseline_agrees"] = _agree(windows, streaks, scored, group, streak)
    if not result.figures["baseline_agrees"]:
        result.notes.append("the SQL baseline and the engine disagree on the baseline groups")


# Transactions the engine-on-the-baseline stage reads at once (as two half shards scored side by
# side; 6 of their columns): at 10M the stage peaks near 4.8 GiB, at 50M (5 shards) 8.8 GiB.
BASELINE_SHARD_TRANSACTIONS = 12_000_000
BASELINE_TABLES = ("transactions", "stores", "enrolments")


def _agree(windows: pl.DataFrame, streaks: pl.DataFrame, scored: Any, group: m.Group,
           streak: m.Group) -> bool:
    progress = scored.tables.get("target_progress", pl.DataFrame())
    mine = progress.filter(pl.col("group_id") == group.group_id).select(
        "customer_id", pl.col("period_index").cast(pl.Int64), "achieved")
    theirs = windows.select("customer_id", pl.col("period_index").cast(pl.Int64), "achieved")
    runs_ = scored.tables.get("streak_progress", pl.DataFrame())
    cols = ["customer_id", "current_count", "longest_count", "levels_achieved"]
    if runs_.is_empty():
        return False
    engine_streaks = runs_.filter(pl.col("group_id") == streak.group_id).select(
        [pl.col(c).cast(pl.Int64) for c in cols])
    sql_streaks = streaks.select([pl.col(c).cast(pl.Int64) for c in cols])
    return (mine.sort("customer_id", "period_index").equals(
        theirs.sort("customer_id", "period_index"))
        and engine_streaks.sort("customer_id").equals(sql_streaks.sort("customer_id")))


def _per_group(con: duckdb.DuckDBPyConnection, groups: Sequence[m.Group], as_of: date,
               config: Config, records: int, meter: _Meter) -> None:
    """Each group scored alone on inputs read once: where the engine's time goes."""
    from pipeline.scoring.engine import score
    from pipeline.scoring.sharing import SharedMeasures

    with LocalEngine().inputs(con) as shards:
        for g in groups:
            with meter.stage(f"  alone: {g.name}", records, g.tracking_type.value):
                for sources in shards:  # one piece, or the run's customer shards
                    score(sources, [g], as_of, config, shared=SharedMeasures())


# ------------------------------------------------------------------------------ reference


def load_reference() -> ModuleType | None:
    """`tests/reference.py` of a source checkout, or None when the package is installed alone."""
    if not REFERENCE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("milestones_reference", REFERENCE)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def reference_sample(con: duckdb.DuckDBPyConnection, every: int) -> dict[str, list[dict]]:
    """Records of every `every`-th customer (integer ids) as row dicts, all stores."""
    keep = f"customer_id % {int(every)} = 0"
    txn_ids = f"SELECT txn_id FROM transactions WHERE {keep}"
    queries = {
        "transactions": f"SELECT * FROM transactions WHERE {keep}",
        "line_items": f"SELECT * FROM line_items WHERE txn_id IN ({txn_ids})",
        "events": f"SELECT * FROM events WHERE {keep}",
        "points": f"SELECT * FROM points WHERE {keep}",
        "stores": "SELECT * FROM stores",
        "enrolments": f"SELECT * FROM enrolments WHERE {keep}",
    }
    return {name: con.sql(q).pl().to_dicts() for name, q in queries.items()}


def _reference(con: duckdb.DuckDBPyConnection, bodies: Sequence[dict[str, Any]],
               selected: Sequence[str], as_of: date, config: Config, share: float, records: int,
               meter: _Meter, result: BenchResult) -> None:
    module = load_reference()
    if module is None:
        result.notes.append(f"reference skipped: {REFERENCE} is not there (the package is "
                            "installed without its tests)")
        return
    if share <= 0:
        result.notes.append("reference skipped (share 0)")
        return
    every = max(1, round(1 / share))
    sample = reference_sample(con, every)
    sampled = sum(len(sample[t]) for t in RECORDS)
    wanted = [b for b in bodies if b["name"] in set(selected)]
    settings = {"timezone": config.timezone, "returns_mode": config.returns_mode,
                "track_from_enrolment": config.track_from_enrolment}
    name = f"reference ({100 / every:g}% sample)"
    with meter.stage(name, sampled, f"1 customer in {every}"):
        module.evaluate(wanted, sample, as_of, settings)
    took = result.stage(name).seconds
    factor = records / sampled if sampled else 0.0
    meter.add(Stage("reference (extrapolated)", records, took * factor, 0,
                    f"x{factor:,.0f} by records"))


# --------------------------------------------------------------------------------- output


def _figures(result: BenchResult, meter: _Meter, opts: BenchOptions,
             load_before: tuple[float, float, float]) -> None:
    f = result.figures

    def seconds(name: str) -> float | None:
        found = [s for s in result.stages if s.name == name]
        return round(found[0].seconds, 3) if found else None

    f |= {
        "generate_s": seconds("generate"),
        "load_s": seconds("load"),
        "register_s": seconds("register"),
        "run_s": seconds("run (total)"),
        "read_s": seconds("  run: read inputs"),
        "score_s": seconds("  run: score"),
        "diff_and_files_s": seconds("  run: diff ledger, write files"),
        "write_tables_s": seconds("  run: write tables, ledger, commit"),
        "floor_s": seconds("floor (total)"),
        "sql_baseline_s": seconds("SQL baseline (DuckDB)"),
        "engine_on_baseline_group_s": seconds("engine on the baseline groups"),
        "reference_sample_s": next((round(s.seconds, 3) for s in result.stages
                                    if s.name.startswith("reference (") and "sample" in s.name),
                                   None),
        "reference_extrapolated_s": seconds("reference (extrapolated)"),
    }
    read, score = f["read_s"] or 0.0, f["score_s"] or 0.0
    f["scoring_s"] = round(read + score, 3)
    f["peak_rss_bytes"] = meter.max_rss
    # What milestones itself needed (load, register, run), without the bench's own baselines.
    f["pipeline_peak_rss_bytes"] = max(
        (s.peak_rss for s in result.stages if s.name in ("load", "register", "run (total)")),
        default=0)
    f["scoring_over_floor"] = _ratio(f["scoring_s"], f["floor_s"])
    f["engine_over_sql_baseline"] = _ratio(f["engine_on_baseline_group_s"],
                                           f["sql_baseline_s"])
    f["reference_over_scoring"] = _ratio(f["reference_extrapolated_s"], f["scoring_s"])
    f["load_average"] = {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]}
    f["cpus"] = os.cpu_count()
    f["options"] = {"transactions": opts.transactions,
                    "customers": opts.generate_options().customers, "days": opts.days,
                    "seed": opts.seed, "groups": list(opts.groups) or "all"}
    f["stages"] = [{"stage": s.name.strip(), "rows": s.rows, "seconds": round(s.seconds, 3),
                    "peak_rss_bytes": s.peak_rss, "note": s.note} for s in result.stages]
    f["notes"] = result.notes


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def render(result: BenchResult) -> list[str]:
    """The stages as a table: rows, seconds, rows/s, ratio to the floor, peak RSS."""
    floor = result.figures.get("floor_s") or 0.0
    lines = [f"{'stage':<40} {'rows':>12} {'seconds':>9} {'rows/s':>12} {'x floor':>8} "
             f"{'peak RSS':>9}  note"]
    for s in result.stages:
        rate = f"{s.rows / s.seconds:,.0f}" if s.seconds > 0 and s.rows else "-"
        ratio = f"{s.seconds / floor:.2f}" if floor and s.seconds else "-"
        rss = _size(s.peak_rss) if s.peak_rss else "-"
        lines.append(f"{s.name:<40} {s.rows:>12,} {s.seconds:>9.2f} {rate:>12} {ratio:>8} "
                     f"{rss:>9}  {s.note}")
    f = result.figures
    lines.append("")
    lines.append(f"scoring (read + score) {f['scoring_s']:.2f} s = {f['scoring_over_floor']}x "
                 f"the floor; engine vs SQL baseline on its group: "
                 f"{f['engine_over_sql_baseline']}x (outputs agree: "
                 f"{f.get('baseline_agrees', 'n/a')}); reference / scoring: "
                 f"{f['reference_over_scoring']}x; peak RSS {_size(f['peak_rss_bytes'])} "
                 f"(load, register and run: {_size(f['pipeline_peak_rss_bytes'])})")
    la = f["load_average"]
    lines.append(f"load average before {la['before']}, after {la['after']}; {f['cpus']} CPUs")
    lines += [f"note: {n}" for n in result.notes]
    return lines


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def json_figures(result: BenchResult) -> dict[str, Any]:
    """The `--json` object: every figure, the required keys first."""
    f = result.figures
    return {k: f.get(k) for k in JSON_KEYS} | {k: v for k, v in f.items() if k not in JSON_KEYS}


__all__ = [
    "BenchOptions",
    "BenchResult",
    "FloorSpec",
    "Stage",
    "floor_aggregate",
    "floor_read",
    "floor_spec",
    "json_figures",
    "load_reference",
    "peak_rss",
    "reference_sample",
    "render",
    "run_bench",
    "select_groups",
    "sql_baseline",
]
