"""`milestones demo`: the bundled samples end to end, in one command on a fresh install.

It loads `data/exports`, registers `data/groups/*.json` with `data/milestones.toml`, runs as of
2026-11-22, then loads the late returns (`data/exports/late/`) and runs again so that a
revocation shows, and summarises what happened in a few lines a newcomer can follow, ending
with the path of the HTML report (`pipeline.tools.report`).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb

from pipeline import registry, runs
from pipeline.config import load_config
from pipeline.definitions.parse import read_bodies
from pipeline.errors import InputError
from pipeline.loading import load_exports
from pipeline.tools.report import write_report
from pipeline.workspace import Workspace

DATA = Path(__file__).resolve().parent / "data"
AS_OF = date(2026, 11, 22)
DB_NAME = "milestones.duckdb"
REPORT_NAME = "report.html"
# Load order: a line item or a return needs its transaction loaded first.
KIND_ORDER = ("stores", "transactions", "line-items", "events", "points", "enrolments")
KINDS = ("TARGET_ACHIEVED", "UNIFIED_ACHIEVED", "STREAK_LEVEL_ACHIEVED")


def export_files(folder: Path) -> list[tuple[str, Path]]:
    """(kind, file) of every export in `folder`, in load order; the kind is the file name's
    start (``transactions.csv``, ``line_items_2026.parquet``, ``line-items.jsonl``)."""
    found: list[tuple[int, str, Path]] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.is_file() or path.suffix not in (".csv", ".parquet", ".jsonl"):
            continue
        stem = path.stem.lower().replace("_", "-")
        for rank, kind in enumerate(KIND_ORDER):
            if stem.startswith(kind):
                found.append((rank, kind, path))
                break
    return [(kind, path) for _, kind, path in sorted(found)]


EXAMPLE_QUERIES = (
    "SELECT group_name, kind, ref_code, issued, revoked FROM rewards_per_window "
    "ORDER BY group_name",
    "SELECT group_name, customer_id, value, target_value, pct_of_target FROM current_progress "
    "WHERE status = 'RUNNING' AND NOT achieved ORDER BY pct_of_target DESC LIMIT 10",
)


def run_demo(folder: Path, data: Path = DATA) -> list[str]:
    """Build the demo workspace in `folder` (replacing a previous demo's database and files)
    and return the summary lines."""
    if not (data / "groups").is_dir():
        raise InputError(
            f"the bundled samples are not at {data}; run the demo from a source checkout "
            "(pip install -e .)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (folder / DB_NAME, folder / f"{DB_NAME}.wal"):
        stale.unlink(missing_ok=True)
    shutil.rmtree(folder / "rewards", ignore_errors=True)
    config = replace(load_config(data / "milestones.toml"), output_dir=folder / "rewards")
    ws = Workspace(folder / DB_NAME, config)

    with ws.connect() as con:
        bodies = [b for f in sorted((data / "groups").glob("*.json")) for b in read_bodies(f)]
        outcomes = registry.register_bodies(con, bodies, config=config, as_of=AS_OF)
        loaded = _load(con, export_files(data / "exports"), config.timezone)
    registered = sum(1 for o in outcomes if o.registered)
    first = runs.run(ws, runs.RunRequest(as_of=AS_OF))
    lines = [
        f"milestones demo: workspace {folder}",
        f"  loaded: {_counts(loaded)}",
        f"  groups: {registered} registered from {data / 'groups'}",
        *_run_lines(ws, first, "run 1"),
    ]
    late = export_files(data / "exports" / "late")
    if late:
        with ws.connect() as con:
            _load(con, late, config.timezone)
        second = runs.run(ws, runs.RunRequest(as_of=AS_OF))
        lines += [f"  late returns loaded: {', '.join(p.name for _, p in late)}",
                  *_run_lines(ws, second, "run 2 (rerun)")]
    with ws.connect() as con:
        lines += _highlights(con)
    db = ws.db_path
    lines += [
        f"  files: {config.output_dir}/<run id>/ (awards, revocations, capping_adjustments, "
        "leaderboard_top, manifest.json)",
        f"  database: {db}",
        "  try:",
        f"    milestones --db {db} progress {_example_customer(ws)}",
        f"    milestones --db {db} runs",
        f"    milestones --db {db} explain 1004 --group streakTestt123",
        "  SQL to try (the duckdb Python package is installed; the duckdb CLI works too):",
        *(
            f'    python -c "import duckdb; duckdb.connect(\'{db}\', read_only=True)'
            f'.sql(\\"{query}\\").show()"'
            for query in EXAMPLE_QUERIES
        ),
    ]
    report = write_report(ws, out=folder / REPORT_NAME)
    lines.append(f"  report: {report} (open it in a browser; `milestones --db {db} report` "
                 "writes it again)")
    return lines


def _load(con: duckdb.DuckDBPyConnection, files: list[tuple[str, Path]], tz: str
          ) -> dict[str, tuple[int, int]]:
    """Load each file; kind -> (rows loaded, rows rejected)."""
    out: dict[str, tuple[int, int]] = {}
    for kind, path in files:
        report = load_exports(con, kind, [str(path)], timezone=tz)
        ok, bad = out.get(kind, (0, 0))
        out[kind] = (ok + report.rows_loaded, bad + report.rows_rejected)
    return out


def _counts(loaded: dict[str, tuple[int, int]]) -> str:
    if not loaded:
        return "no export files found"
    parts = [f"{ok:,} {kind}" for kind, (ok, _) in loaded.items()]
    rejected = sum(bad for _, bad in loaded.values())
    return ", ".join(parts) + (f" ({rejected} rejected: see the rejects table)" if rejected else "")


def _run_lines(ws: Workspace, outcome: runs.RunOutcome, label: str) -> list[str]:
    with ws.connect() as con:
        customers = con.sql(
            "SELECT count(DISTINCT customer_id) FROM (SELECT customer_id FROM target_progress "
            "UNION ALL SELECT customer_id FROM capping)"
        ).fetchall()[0][0]
        kinds = dict(con.sql(
            "SELECT kind, count(*) FROM reward_events e JOIN rewards USING (reward_id) "
            "WHERE e.run_id = $r AND e.action = 'ISSUED' GROUP BY kind",
            params={"r": outcome.run_id},
        ).fetchall())
        revoked = con.sql(
            "SELECT kind, name, group_name, customer_id, coalesce(ref_code, '#' || period_index) "
            "FROM rewards WHERE revoked_run_id = $r ORDER BY ALL",
            params={"r": outcome.run_id},
        ).fetchall()
    issued = ", ".join(f"{k} {kinds.get(k, 0)}" for k in KINDS)
    lines = [
        f"  {label} as of {outcome.as_of}: {outcome.status}, {len(outcome.groups)} groups, "
        f"{customers} customers scored",
        f"    rewards issued: {issued}; revoked: {outcome.revocations}",
    ]
    lines += [f"    revoked {k} {n!r} of {g!r} for customer {c} in window {w}"
              for k, n, g, c, w in revoked]
    lines += [f"    failed: {name}: {msg}" for name, msg in sorted(outcome.failures.items())]
    lines.append(f"    files: {outcome.folder}")
    return lines


def _highlights(con: duckdb.DuckDBPyConnection) -> list[str]:
    """One standing reward of each kind, and the top streaks."""
    lines = ["  standing rewards, one of each kind:"]
    for kind in KINDS:
        row = con.sql(
            "SELECT name, group_name, customer_id, coalesce(ref_code, '#' || period_index) "
            "FROM rewards WHERE kind = $k AND status = 'ISSUED' ORDER BY ALL LIMIT 1",
            params={"k": kind},
        ).fetchall()
        if row:
            name, group, customer, window = row[0]
            lines.append(f"    {kind}: {name!r} of {group!r}, customer {customer}, "
                         f"window {window}")
        else:
            lines.append(f"    {kind}: none")
    top = con.sql(
        "SELECT g.name, s.customer_id, s.current_count, s.longest_count, s.levels_achieved "
        "FROM streak_progress s JOIN target_groups g USING (group_id) "
        "ORDER BY s.longest_count DESC, s.current_count DESC, g.name, s.customer_id LIMIT 3"
    ).fetchall()
    if top:
        lines.append("  top streaks:")
        lines += [f"    {g!r}: customer {c}, current {cur}, longest {lon}, {lv} level(s)"
                  for g, c, cur, lon, lv in top]
    return lines


def _example_customer(ws: Workspace) -> str:
    with ws.connect() as con:
        row = con.sql("SELECT customer_id FROM rewards ORDER BY status DESC, kind, customer_id "
                      "LIMIT 1").fetchall()
    return str(row[0][0]) if row else "CUSTOMER_ID"
