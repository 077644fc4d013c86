"""Runs (SPEC §10): scope, idempotency, late returns, failed groups, kills at every step, the lock.

The scoring here is a small stand-in (`fake_score`) with the engine's contract, so that these
tests pin down the run machinery whatever the engine does; `test_cli_run.py` runs the real one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from pipeline import runs
from pipeline.config import Config
from pipeline.definitions.model import (
    EvaluationType,
    Group,
    Period,
    StreakLevel,
    Target,
    TargetEntity,
    TargetType,
    TrackingType,
)
from pipeline.errors import DatabaseBusyError, GroupsFailedError, UsageError
from pipeline.rules.tree import Literal
from pipeline.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
PERIODS = (
    Period(1, date(2026, 11, 1), date(2026, 11, 15), "NOV-A"),
    Period(2, date(2026, 11, 16), date(2026, 11, 30), "NOV-B"),
)


def _target(target_id: int, value: str) -> Target:
    return Target(
        target_id, "spend", TargetEntity.TRANSACTION, TargetType.SALES, rule=Literal(True),
        default_values=(Decimal(value),),
    )


SPEND = Group(1, "Spend 100", TrackingType.DEFAULT, EvaluationType.FIXED,
              targets=(_target(11, "100"),), periods=PERIODS)
STREAK = Group(2, "Two in a row", TrackingType.STREAK, EvaluationType.FIXED,
               targets=(_target(21, "50"),), periods=PERIODS,
               streak_levels=(StreakLevel(201, "Double", 2),))
BROKEN = Group(3, "broken colours", TrackingType.DEFAULT, EvaluationType.FIXED,
               targets=(_target(31, "10"),), periods=PERIODS)
GROUPS = (SPEND, STREAK, BROKEN)


# ------------------------------------------------------------------------- a stand-in engine


@dataclass
class FakeResult:
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    rewards: pl.DataFrame = field(default_factory=pl.DataFrame)
    failures: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


TP_SCHEMA = {
    "group_id": pl.Int64, "target_id": pl.Int64, "customer_id": pl.Int64,
    "period_index": pl.Int32, "ref_code": pl.String, "window_start": pl.Datetime("us"),
    "window_end": pl.Datetime("us"), "status": pl.String, "value": pl.Decimal(38, 4),
    "target_value": pl.Decimal(38, 4), "achieved": pl.Boolean,
    "achieved_at": pl.Datetime("us", "UTC"), "last_activity_at": pl.Datetime("us", "UTC"),
}


def fake_score(sources: Mapping[str, pl.LazyFrame], groups: list[Group], as_of: date,
               config: Config) -> FakeResult:
    """SALES per fixed period, a return reducing its bill's period; DEFAULT and STREAK only.

    A group whose name starts with "broken" fails, as a rule naming a missing column would.
    """
    tx = sources["transactions"].collect().sort("txn_time", "txn_id")
    bills = {r["txn_id"]: r["txn_time"] for r in tx.iter_rows(named=True)}
    result = FakeResult()
    tp: list[dict[str, Any]] = []
    rewards: list[dict[str, Any]] = []
    streaks: list[dict[str, Any]] = []
    for g in groups:
        result.groups.append(g.name)
        if g.name.startswith("broken"):
            result.failures[g.name] = "rule names currentTxn.colour, which no loaded column has"
            continue
        target = g.targets[0]
        counts: dict[int, int] = {}
        levels_done: set[int] = set()
        for p in g.periods:
            if p.start > as_of:
                continue
            status = "ENDED" if p.end <= as_of else "RUNNING"
            per_customer: dict[int, list[tuple[datetime, Decimal]]] = {}
            for r in tx.iter_rows(named=True):
                when = r["txn_time"]
                if when.date() > as_of:
                    continue
                sign = Decimal(1)
                if r["type"] == "RETURN":
                    sign = Decimal(-1)
                    when = bills.get(r["parent_txn_id"], when)
                if p.start <= when.date() <= p.end:
                    per_customer.setdefault(r["customer_id"], []).append(
                        (r["txn_time"], sign * abs(r["amount"]))
                    )
            goal = target.default_value(p.index) or Decimal(0)
            for customer, recs in sorted(per_customer.items()):
                total, reached = Decimal(0), None
                for ts, amount in recs:
                    total += amount
                    if reached is None and total >= goal:
                        reached = ts
                achieved = total >= goal
                row = {
                    "group_id": g.group_id, "target_id": target.target_id,
                    "customer_id": customer, "period_index": p.index, "ref_code": p.ref_code,
                    "window_start": datetime.combine(p.start, time()),
                    "window_end": datetime.combine(p.end, time.max),
                    "status": status, "value": total, "target_value": goal,
                    "achieved": achieved, "achieved_at": reached if achieved else None,
                    "last_activity_at": recs[-1][0],
                }
                tp.append(row)
                reward = {k: row[k] for k in ("group_id", "customer_id", "period_index",
                                              "ref_code", "window_start", "window_end",
                                              "value", "target_value", "achieved_at")}
                reward |= {"group_name": g.name, "name": target.name}
                if g.tracking_type is TrackingType.DEFAULT and achieved:
                    rewards.append(reward | {"kind": "TARGET_ACHIEVED"})
                if g.tracking_type is TrackingType.STREAK:
                    if achieved:
                        counts[customer] = counts.get(customer, 0) + 1
                    elif status == "ENDED":
                        counts[customer] = 0
                    for level in g.streak_levels:
                        if counts.get(customer, 0) >= level.count and customer not in levels_done:
                            levels_done.add(customer)
                            rewards.append(reward | {
                                "kind": "STREAK_LEVEL_ACHIEVED", "name": level.name,
                                "value": Decimal(level.count), "target_value": Decimal(level.count),
                            })
        for customer, count in sorted(counts.items()):
            streaks.append({"group_id": g.group_id, "customer_id": customer,
                            "current_count": count, "longest_count": count,
                            "levels_achieved": int(customer in levels_done),
                            "next_level_name": None, "next_level_count": None})
    result.tables["target_progress"] = pl.DataFrame(tp, schema=TP_SCHEMA)
    result.tables["streak_progress"] = pl.DataFrame(streaks, schema={
        "group_id": pl.Int64, "customer_id": pl.Int64, "current_count": pl.Int32,
        "longest_count": pl.Int32, "levels_achieved": pl.Int32, "next_level_name": pl.String,
        "next_level_count": pl.Int32})
    schema = {k: v for k, v in TP_SCHEMA.items() if k not in ("target_id", "status", "achieved",
                                                             "last_activity_at")}
    schema |= {"kind": pl.String, "group_name": pl.String, "name": pl.String}
    result.rewards = pl.DataFrame(rewards, schema=schema)
    return result


def fake_groups(con: duckdb.DuckDBPyConnection, names: list[str] | None = None, *,
                include_inactive: bool = False, config: Config) -> list[Group]:
    """The registry's contract over the three groups above."""
    if names is None:
        return list(GROUPS)
    wanted = {n.strip().casefold() for n in names}
    return [g for g in GROUPS if g.name.casefold() in wanted]


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "w.duckdb", Config(output_dir=tmp_path / "out"))


def add_txns(ws: Workspace, *rows: tuple[Any, ...]) -> None:
    """(txn_id, customer, 'YYYY-MM-DD HH:MM', amount[, parent]) — a parent makes a RETURN."""
    with ws.connect() as con:
        for txn_id, customer, when, amount, *parent in rows:
            con.execute(
                "INSERT INTO transactions (txn_id, customer_id, txn_time, amount, type, "
                "parent_txn_id, gross_amount) VALUES ($1, $2, $3::TIMESTAMPTZ, $4, $5, $6, $4)",
                [txn_id, customer, when + "+00", Decimal(amount),
                 "RETURN" if parent else "REGULAR", parent[0] if parent else None],
            )


def delete_txn(ws: Workspace, txn_id: str) -> None:
    with ws.connect() as con:
        con.execute("DELETE FROM transactions WHERE txn_id = $1", [txn_id])


def do_run(ws: Workspace, **kw: Any) -> runs.RunOutcome:
    groups = tuple(kw.pop("groups", ("Spend 100", "Two in a row")))
    return runs.run(ws, runs.RunRequest(groups=groups, **kw), score=fake_score,
                    load_groups=fake_groups)


def snapshot(ws: Workspace, *, bookkeeping: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Every output table and the ledger, sorted, without target_progress.run_id; with
    `bookkeeping`, also the ledger's history and the runs' folders."""
    tables = [*runs.SCORED_TABLES, "rewards"]
    if bookkeeping:
        tables += ["reward_events", "run_outputs"]
    out = {}
    with ws.connect() as con:
        for table in tables:
            cols = [c for c in runs._columns(con, table) if (table, c) != ("target_progress",
                                                                          "run_id")]
            frame = con.sql(f"SELECT {', '.join(cols)} FROM {table}").pl()
            out[table] = sorted(frame.rows(), key=repr)
    return out


def ledger(ws: Workspace) -> dict[tuple[str, str, int, str | None], str]:
    """(kind, name, customer, ref_code) -> status."""
    with ws.connect() as con:
        rows = con.sql("SELECT kind, name, customer_id, ref_code, status FROM rewards").fetchall()
    return {(k, n, c, r): s for k, n, c, r, s in rows}


def read_file(outcome: runs.RunOutcome, name: str) -> pl.DataFrame:
    return pl.read_csv(outcome.folder / f"{name}.csv", infer_schema=False)


# ------------------------------------------------------------------------------------ basics


def test_run_issues_rewards_and_writes_tables_ledger_and_files(ws: Workspace) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"), ("t2", 8, "2026-11-04 10:00", "60"),
             ("t3", 8, "2026-11-17 10:00", "70"))
    outcome = do_run(ws, as_of=date(2026, 11, 20))

    assert (outcome.status, outcome.awards, outcome.revocations) == ("SUCCEEDED", 2, 0)
    assert ledger(ws) == {
        ("TARGET_ACHIEVED", "spend", 7, "NOV-A"): "ISSUED",
        ("STREAK_LEVEL_ACHIEVED", "Double", 8, "NOV-B"): "ISSUED",
    }
    awards = read_file(outcome, "awards")
    assert awards.columns == list(runs.ledger.REWARD_COLUMNS)
    assert awards.select("kind", "name", "customer_id", "ref_code").rows() == [
        ("TARGET_ACHIEVED", "spend", "7", "NOV-A"),
        ("STREAK_LEVEL_ACHIEVED", "Double", "8", "NOV-B"),
    ]
    assert read_file(outcome, "revocations").height == 0
    with ws.connect() as con:
        assert con.sql("SELECT count(*), min(run_id) FROM target_progress").fetchall() == [
            (6, outcome.run_id)
        ]
        assert con.sql("SELECT status, awards, revocations, groups FROM runs").fetchall() == [
            ("SUCCEEDED", 2, 0, ["Spend 100", "Two in a row"])
        ]
    manifest = json.loads((outcome.folder / "manifest.json").read_text())
    assert manifest["run_id"] == outcome.run_id
    assert manifest["as_of"] == "2026-11-20"
    assert manifest["rows_in"]["transactions"] == 3
    assert manifest["rows_out"]["awards"] == 2
    assert manifest["files"]["awards.csv"]["rows"] == 2
    # Every output table's rows out, as its insert counted them: here, all the table holds.
    with ws.connect() as con:
        stored = {t: con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                  for t in runs.SCORED_TABLES}
    assert manifest["rows_out"] == {**stored, "awards": 2, "revocations": 0}
    assert manifest["rows_out"]["target_progress"] == 6
    assert not list(outcome.folder.parent.glob(".*.tmp"))


def test_same_run_twice_leaves_same_tables_and_an_empty_awards_file(ws: Workspace) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"), ("t2", 8, "2026-11-17 10:00", "60"))
    first = do_run(ws, as_of=date(2026, 11, 20))
    before = snapshot(ws, bookkeeping=False)
    second = do_run(ws, as_of=date(2026, 11, 20))

    assert snapshot(ws, bookkeeping=False) == before
    assert (first.awards, second.awards, second.revocations) == (1, 0, 0)
    assert (second.folder / "awards.csv").read_text().splitlines() == [
        ",".join(runs.ledger.REWARD_COLUMNS)
    ]
    with ws.connect() as con:
        assert con.sql("SELECT DISTINCT run_id FROM target_progress").fetchall() == [
            (second.run_id,)
        ]


def test_late_return_revokes_and_its_correction_reissues(ws: Workspace) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"))
    issued = do_run(ws, as_of=date(2026, 11, 10))
    key = ("TARGET_ACHIEVED", "spend", 7, "NOV-A")
    assert ledger(ws)[key] == "ISSUED"

    add_txns(ws, ("r1", 7, "2026-11-18 09:00", "-30", "t1"))  # returned after the window
    revoked = do_run(ws, from_date=date(2026, 11, 1), to_date=date(2026, 11, 20))
    assert (revoked.awards, revoked.revocations) == (0, 1)
    assert ledger(ws)[key] == "REVOKED"
    lines = read_file(revoked, "revocations")
    assert lines.select("kind", "customer_id", "ref_code", "value").rows() == [
        ("TARGET_ACHIEVED", "7", "NOV-A", "120.0000")
    ]

    delete_txn(ws, "r1")  # the export is corrected
    reissued = do_run(ws, from_date=date(2026, 11, 1), to_date=date(2026, 11, 20))
    assert (reissued.awards, reissued.revocations) == (1, 0)
    assert ledger(ws)[key] == "ISSUED"
    with ws.connect() as con:
        history = con.sql(
            "SELECT e.run_id, e.action FROM reward_events e JOIN rewards USING (reward_id) "
            "ORDER BY e.event_at"
        ).fetchall()
        row = con.sql("SELECT issued_run_id, revoked_run_id FROM rewards WHERE customer_id = 7 "
                      "AND kind = 'TARGET_ACHIEVED'").fetchall()
    assert history == [(issued.run_id, "ISSUED"), (revoked.run_id, "REVOKED"),
                       (reissued.run_id, "ISSUED")]
    assert row == [(reissued.run_id, None)]


def test_range_run_leaves_rows_of_other_windows_untouched(ws: Workspace) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"), ("t2", 7, "2026-11-17 10:00", "130"))
    do_run(ws, as_of=date(2026, 11, 30), groups=("Spend 100",))
    add_txns(ws, ("t3", 7, "2026-11-04 10:00", "5"), ("r2", 7, "2026-11-20 10:00", "-100", "t2"))

    ranged = do_run(ws, from_date=date(2026, 11, 1), to_date=date(2026, 11, 10),
                    groups=("Spend 100",))

    with ws.connect() as con:
        values = con.sql("SELECT ref_code, value FROM target_progress ORDER BY ref_code").fetchall()
    # NOV-A was rescored (125); NOV-B is outside the range and keeps 130 despite the return.
    assert values == [("NOV-A", Decimal("125")), ("NOV-B", Decimal("130"))]
    manifest = json.loads((ranged.folder / "manifest.json").read_text())
    assert manifest["rows_out"]["target_progress"] == 1  # the rows written: NOV-A's only
    assert ledger(ws)[("TARGET_ACHIEVED", "spend", 7, "NOV-B")] == "ISSUED"


def test_nightly_run_keeps_windows_that_start_after_its_date(ws: Workspace) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"), ("t2", 7, "2026-11-17 10:00", "130"))
    do_run(ws, as_of=date(2026, 11, 30), groups=("Spend 100",))
    outcome = do_run(ws, as_of=date(2026, 11, 10), groups=("Spend 100",))

    assert outcome.revocations == 0
    with ws.connect() as con:
        statuses = con.sql("SELECT ref_code, status FROM target_progress ORDER BY 1").fetchall()
    # NOV-A is rescored as of the 10th (RUNNING again); NOV-B had not started by then: kept.
    assert statuses == [("NOV-A", "RUNNING"), ("NOV-B", "ENDED")]


def test_failed_group_is_recorded_and_keeps_its_rows_while_others_complete(
    ws: Workspace,
) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"))
    with ws.connect() as con:
        con.execute(
            "INSERT INTO target_progress (group_id, target_id, customer_id, period_index, "
            "status, value, achieved, run_id) VALUES (3, 31, 7, 1, 'ENDED', 42, true, 'old')"
        )
    outcome = do_run(ws, as_of=date(2026, 11, 20), groups=("Spend 100", "broken colours"))

    assert (outcome.status, outcome.awards) == ("PARTIAL", 1)
    with pytest.raises(GroupsFailedError, match=r"broken colours: rule names currentTxn\.colour"):
        outcome.raise_for_failures()
    with ws.connect() as con:
        assert con.sql("SELECT status, error FROM runs").fetchall() == [
            ("PARTIAL", "broken colours: rule names currentTxn.colour, which no loaded column has")
        ]
        assert con.sql("SELECT value, run_id FROM target_progress WHERE group_id = 3").fetchall() \
            == [(Decimal(42), "old")]
    manifest = json.loads((outcome.folder / "manifest.json").read_text())
    assert manifest["failed_groups"] == {
        "broken colours": "rule names currentTxn.colour, which no loaded column has"
    }
    assert manifest["groups"] == ["Spend 100"]


def test_run_where_every_group_fails_is_failed(ws: Workspace) -> None:
    outcome = do_run(ws, as_of=date(2026, 11, 20), groups=("broken colours",))
    assert outcome.status == "FAILED"


def test_scoring_crash_marks_the_run_failed_and_changes_nothing(ws: Workspace) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"))
    do_run(ws, as_of=date(2026, 11, 20))
    before = snapshot(ws)

    def exploding(*args: Any) -> FakeResult:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        runs.run(ws, runs.RunRequest(as_of=date(2026, 11, 21)), score=exploding,
                 load_groups=fake_groups)
    assert snapshot(ws) == before
    with ws.connect() as con:
        assert con.sql("SELECT status, error FROM runs ORDER BY started_at").fetchall()[-1] == (
            "FAILED", "RuntimeError: out of memory")
    assert not list(ws.config.output_dir.glob(".*"))
    assert not list(ws.db_path.parent.glob(".milestones-*"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        pytest.param({"as_of": date(2026, 1, 1), "from_date": date(2026, 1, 1),
                      "to_date": date(2026, 1, 2)}, "not both", id="as-of with a range"),
        pytest.param({"from_date": date(2026, 1, 1)}, "go together", id="from without to"),
        pytest.param({"from_date": date(2026, 1, 3), "to_date": date(2026, 1, 2)}, "swap",
                     id="reversed range"),
    ],
)
def test_bad_option_combinations_are_usage_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        runs.RunRequest(**kw).validate()


def test_default_as_of_is_yesterday_in_the_org_timezone() -> None:
    late_evening_utc = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    assert runs.default_as_of(Config(timezone="UTC"), late_evening_utc) == date(2026, 11, 21)
    assert runs.default_as_of(Config(timezone="Asia/Kolkata"), late_evening_utc) == date(
        2026, 11, 22
    )


# ------------------------------------------------------------------------------------ scope


def test_scope_cuts_per_customer_windows_by_their_own_bounds() -> None:
    cyclic = Group(5, "Cycles", TrackingType.DEFAULT, EvaluationType.CYCLIC,
                   targets=(_target(51, "1"),))
    scope = runs.Scope.build([cyclic, SPEND, STREAK], date(2026, 11, 10), date(2026, 11, 20))
    d = datetime
    frame = pl.DataFrame({
        "group_id": [5, 5, 5, 1, 1, 2],
        "customer_id": [7, 7, 8, 7, 7, 7],
        "period_index": [1, 2, 1, 1, 2, 9],
        "window_start": [d(2026, 10, 1), d(2026, 11, 1), d(2026, 11, 21), None, None, None],
        "window_end": [d(2026, 10, 31, 23, 59), None, d(2026, 12, 20), None, None, None],
    }, schema_overrides={"period_index": pl.Int32})
    keys = scope.customer_windows([frame])
    picked = scope.select(frame, keys).sort("group_id", "customer_id", "period_index")
    # cycle 1 ended before the range, customer 8's cycle starts after it; group 1 is cut by its
    # fixed periods (both overlap); a STREAK group is always whole.
    assert picked.select("group_id", "customer_id", "period_index").rows() == [
        (1, 7, 1), (1, 7, 2), (2, 7, 9), (5, 7, 2)
    ]


def test_scope_in_sql_picks_the_rows_the_polars_scope_picks() -> None:
    cyclic = Group(5, "Cycles", TrackingType.DEFAULT, EvaluationType.CYCLIC,
                   targets=(_target(51, "1"),))
    d = datetime
    frame = pl.DataFrame({  # group 1's period 99 is none of its periods: never in scope
        "group_id": [5, 5, 5, 5, 1, 1, 1, 2, 9],
        "customer_id": [7, 7, 8, 9, 7, 7, 7, 7, 7],
        "period_index": [1, 2, 1, 1, 1, 2, 99, 9, 1],
        "window_start": [d(2026, 10, 1), d(2026, 11, 1), d(2026, 11, 21), d(2026, 11, 5),
                         None, None, None, None, None],
        "window_end": [d(2026, 10, 31, 23, 59), None, d(2026, 12, 20), d(2026, 11, 9, 23, 59),
                       None, None, None, None, None],
    }, schema_overrides={"period_index": pl.Int32})
    asked: list[list[int]] = []

    def rows_of(ids: Collection[int]) -> str:
        asked.append(sorted(ids))
        return f"(SELECT * FROM frame WHERE group_id IN ({', '.join(map(str, ids))}))"

    for start in (date(2026, 11, 10), None):
        scope = runs.Scope.build([cyclic, SPEND, STREAK], start, date(2026, 11, 20))
        expected = scope.select(frame, scope.customer_windows([frame]))
        con = duckdb.connect()
        con.register("frame", frame)
        scope.sql_bind(con, ["frame"])
        got = con.sql(f"SELECT * FROM frame f WHERE {scope.sql_predicate('f')}").pl()
        key = ["group_id", "customer_id", "period_index"]
        assert got.select(key).sort(key).rows() == expected.select(key).sort(key).rows(), start
        assert got.height >= 4
        # The same rows, picked group by group from relations of those groups' rows only.
        asked.clear()
        by_kind = con.sql(f"SELECT * FROM {scope.sql_rows(rows_of)}").pl()
        assert by_kind.select(key).sort(key).rows() == got.select(key).sort(key).rows(), start
        assert asked == [[2], [1], [5]]  # the STREAK group, the fixed one, the cycles
        assert all(g == 2 for g in con.sql(
            f"SELECT group_id FROM {scope.sql_rows(rows_of, period=False)}").pl()["group_id"])


# --------------------------------------------------------------------------- kills and locks

SCRIPT = textwrap.dedent("""
    import sys
    from datetime import date
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_runs import fake_groups, fake_score
    from pipeline import runs
    from pipeline.config import Config
    from pipeline.workspace import Workspace
    ws = Workspace(Path({db!r}), Config(output_dir=Path({out!r})))
    runs.run(ws, runs.RunRequest(as_of=date(2026, 11, 20), groups=("Spend 100", "Two in a row")),
             score=fake_score, load_groups=fake_groups)
""")


def subprocess_run(ws: Workspace, env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    script = SCRIPT.format(tests=str(Path(__file__).parent), db=str(ws.db_path),
                           out=str(ws.config.output_dir))
    return subprocess.Popen([sys.executable, "-c", script], env={**os.environ, **env},
                            text=True, cwd=REPO, **popen)


def files_state(out: Path) -> dict[str, str]:
    """Every file under the output folder (hidden ones too) -> its content."""
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def run_state(ws: Workspace) -> tuple[dict[str, Any], dict[str, str]]:
    return snapshot(ws), files_state(ws.config.output_dir)


def rewards_of(ws: Workspace) -> list[tuple[Any, ...]]:
    with ws.connect() as con:
        return sorted(con.sql(
            "SELECT reward_id, kind, customer_id, ref_code, status FROM rewards").fetchall())


@pytest.fixture
def crash_setup(tmp_path: Path) -> tuple[Workspace, list[tuple[Any, ...]]]:
    """A workspace with one finished run and new data, plus the rewards an uninterrupted second
    run gives (computed in a copy of the workspace)."""
    ws = Workspace(tmp_path / "w.duckdb", Config(output_dir=tmp_path / "out"))
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"), ("t2", 8, "2026-11-04 10:00", "60"))
    do_run(ws, as_of=date(2026, 11, 10))
    add_txns(ws, ("t3", 8, "2026-11-17 10:00", "70"), ("r1", 7, "2026-11-18 10:00", "-30", "t1"))
    twin = Workspace(tmp_path / "twin.duckdb", Config(output_dir=tmp_path / "twin-out"))
    twin.db_path.write_bytes(ws.db_path.read_bytes())
    do_run(twin, as_of=date(2026, 11, 20))
    return ws, rewards_of(twin)


@pytest.mark.parametrize("step", range(1, len(runs.STEPS) + 1))
def test_run_killed_after_any_step_leaves_previous_state_and_next_run_completes(
    crash_setup: tuple[Workspace, list[tuple[Any, ...]]], step: int
) -> None:
    ws, expected = crash_setup
    before_tables, before_files = run_state(ws)

    proc = subprocess_run(ws, {runs.FAULT_ENV: str(step)})
    assert proc.wait(timeout=120) == 137

    tables, file_state = run_state(ws)
    committed = step >= runs.STEPS.index("commit") + 1
    if not committed:
        assert tables == before_tables
        visible = {k: v for k, v in file_state.items() if not k.startswith(".")}
        assert visible == before_files
    else:
        assert rewards_of(ws) == expected
    do_run(ws, as_of=date(2026, 11, 20))

    assert rewards_of(ws) == expected
    with ws.connect() as con:
        statuses = [s for (s,) in con.sql("SELECT status FROM runs ORDER BY started_at").fetchall()]
        folders = [Path(f) for (f,) in con.sql("SELECT folder FROM run_outputs").fetchall()]
    # Killed before step 2 it never started; after it, its row shows it died; after the commit
    # it is a finished run that the next one only had to publish.
    killed = [] if step == 1 else ["SUCCEEDED"] if committed else ["FAILED"]
    assert statuses == ["SUCCEEDED", *killed, "SUCCEEDED"]
    assert all(f.is_dir() and (f / "manifest.json").exists() for f in folders)
    assert not list(ws.config.output_dir.glob(".*"))
    # Scratch space the killed run left beside the database (staged scores, scans) is gone too.
    assert not list(ws.db_path.parent.glob(".milestones-*"))
    issued = sum(pl.read_csv(f / "awards.csv").height for f in folders)
    revoked = sum(pl.read_csv(f / "revocations.csv").height for f in folders)
    standing = sum(1 for r in expected if r[-1] == "ISSUED")
    assert issued - revoked == standing  # none lost, none doubled


def test_second_run_while_one_holds_the_database_exits_busy(ws: Workspace) -> None:
    add_txns(ws, ("t1", 7, "2026-11-03 10:00", "120"))
    before = run_state(ws)
    holder = subprocess_run(ws, {runs.PAUSE_ENV: "2"}, stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    with holder:
        assert holder.stderr is not None
        try:
            # Blocks until the holder has the lock and is paused (or dies: then "" and we fail).
            assert "paused after step 2" in holder.stderr.readline()
            with pytest.raises(DatabaseBusyError, match="in use by another milestones process"):
                do_run(ws, as_of=date(2026, 11, 20))
        finally:
            _, err = holder.communicate("go\n", timeout=120)
    assert holder.returncode == 0, err
    assert run_state(ws) != before
    assert ledger(ws) == {("TARGET_ACHIEVED", "spend", 7, "NOV-A"): "ISSUED"}


def test_duckdb_memory_for_a_run_follows_the_operators_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    con = duckdb.connect()
    monkeypatch.setenv(runs.DUCKDB_MEMORY_ENV, "1500MB")
    runs.settle_session(con)
    assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0] == "1.3 GiB"
    assert con.sql("SELECT current_setting('TimeZone')").fetchall()[0][0] == "UTC"
    monkeypatch.setenv(runs.DUCKDB_MEMORY_ENV, "lots")
    with pytest.raises(UsageError, match="MILESTONES_DUCKDB_MEMORY='lots'"):
        runs.settle_session(con)
    monkeypatch.delenv(runs.DUCKDB_MEMORY_ENV)
    runs.settle_session(con)  # the default: a share of the machine's memory, at least 1 GiB
    assert "GiB" in con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]


def test_duckdb_gets_room_for_the_ledger_index_of_a_big_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def limit(con: duckdb.DuckDBPyConnection) -> float:
        text = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
        number, unit = text.split()
        return float(number) * {"MiB": 1 / 1024, "GiB": 1.0, "TiB": 1024.0}[unit]

    monkeypatch.delenv(runs.DUCKDB_MEMORY_ENV, raising=False)
    con = duckdb.connect()
    runs.settle_session(con)
    base = limit(con)
    runs._room_for_ledger(con, 10)  # a few rewards: nothing to add
    assert limit(con) == base
    runs._room_for_ledger(con, 8_000_000)  # ~1.2 GiB of keys on top
    assert limit(con) > base + 1.0
    monkeypatch.setenv(runs.DUCKDB_MEMORY_ENV, "1500MB")
    runs.settle_session(con)
    runs._room_for_ledger(con, 20_000_000)  # the operator's limit stays
    assert limit(con) == pytest.approx(1.3, abs=0.1)


def test_a_file_sorted_from_a_copy_of_its_rows_has_an_exact_row_estimate(tmp_path: Path) -> None:
    # DuckDB sizes a sort by its row estimate; a filter is guessed to keep a fifth of the rows,
    # and the 50 M bench's capping sort ran out of memory on that guess. The copy's is exact.
    con = duckdb.connect()
    staged = tmp_path / "staged.parquet"
    con.execute(f"COPY (SELECT range AS k, range % 7 AS p FROM range(10000)) TO '{staged}'")
    query = f"SELECT * FROM read_parquet('{staged}') WHERE p IN (1, 2, 3, 4, 5, 6)"
    kept = 10000 - len(range(0, 10000, 7))

    def estimate(q: str) -> int:
        plan = con.sql(f"EXPLAIN {q}").fetchall()[0][1]
        return int(re.search(r"~([\d,]+) rows", plan).group(1).replace(",", ""))

    assert estimate(f"{query} ORDER BY k DESC") < kept / 2
    sorted_query = runs._sort_from_file(con, query, "k DESC", tmp_path / "copy.parquet")
    assert estimate(sorted_query) == kept
    assert con.sql(sorted_query).fetchall()[:2] == [(9999, 9999 % 7), (9998, 9998 % 7)]
