"""Engines: `run --engine local|dask` give the same tables and ledger (SPEC §12, issue 8 acc. 3).

A seeded random-ish programme (every group kind and window kind, a leaderboard, a group that
fails, returns with and without parents, one across customers) on small data is run by both
engines; every output table and the ledger must be equal row for row, run ids aside. The shard
export, the staging of shard results and the option errors are tested without Dask, so they run
where the optional extra is not installed; the cluster tests skip there. The local engine's own
sharding (big data) is checked against scoring in one piece the same way.
"""

from __future__ import annotations

import csv
import random
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from pipeline import registry, runs
from pipeline.cli import main
from pipeline.config import Config
from pipeline.definitions.model import EvaluationType
from pipeline.engines import dask as dask_engine
from pipeline.engines import make_engine, shards
from pipeline.engines.local import LocalEngine
from pipeline.errors import MilestonesError, UsageError
from pipeline.loading import load_exports
from pipeline.scoring.engine import TABLES, ScoreResult, merge_results, score
from pipeline.staging import EARNED, Staging
from pipeline.workspace import Workspace

START = date(2024, 1, 1)
DAYS = 85
AS_OF = date(2024, 3, 20)
STORES = [("S1", "Z1", "C1"), ("S2", "Z1", "C2"), ("S3", "Z2", "C1"), ("S4", "Z2", "C2")]
COMPARED = (*TABLES, "rewards")
RUN_ID_COLUMNS = ("run_id", "issued_run_id", "revoked_run_id")
BROKEN = "Broken rule"


# --------------------------------------------------------------------------- the programme


def programme(rng: random.Random) -> list[dict[str, Any]]:
    """One group of each kind, with drawn measures, rules, targets and options."""
    txn_rules = ["true", "currentTxn.value > 40", "currentStore.zone == 'Z1'",
                 "isWeekend(currentTxn.date) || currentTxn.value >= 120"]
    monthly = {"frequencyType": "MONTHLY", "frequency": 1, "totalPeriods": 3,
               "targetCycleStartDate": str(START)}

    def values(n: int, low: int, high: int) -> list[dict[str, int]]:
        return [{"defaultValue": rng.randint(low, high)} for _ in range(n)]

    board = {
        "name": "Monthly sales board", "trackingType": "DEFAULT", "leaderboardEnabled": True,
        "targetEvaluationType": "FIXED_CALENDAR_WINDOW", **monthly,
        "targets": [{"name": "sales", "targetEntity": "TRANSACTION",
                     "targetType": rng.choice(["SALES", "GROSS_SALES"]),
                     "expression": rng.choice(txn_rules), "enrolmentMethod": "TRANSACTION",
                     "defaultValues": values(3, 150, 600)}],
    }
    combination = rng.choice([{"combinationType": "ALL"},
                              {"combinationType": "ANY", "combinationCount": rng.randint(1, 2)}])
    unified = {
        "name": "Fortnight mix", "trackingType": "UNIFIED",
        "targetEvaluationType": "CYCLIC_WINDOW", "frequencyType": "WEEKLY", "frequency": 2,
        "recurringCycles": rng.randint(2, 5), "targetCycleStartDate": str(START), **combination,
        "targets": [
            {"name": "lines", "targetEntity": "LINEITEM", "targetType": "QUANTITY",
             "expression": rng.choice(["true", "currentLineItem.category == 'A'"]),
             "enrolmentMethod": "TRANSACTION", "defaultValues": values(1, 2, 6)},
            {"name": "spins", "targetEntity": "EVENT", "targetType": "COUNT",
             "eventName": "spin", "enrolmentMethod": "TRANSACTION",
             "defaultValues": values(1, 1, 3)},
            {"name": "visits", "targetEntity": "TRANSACTION", "targetType": "VISIT",
             "enrolmentMethod": "TRANSACTION", "defaultValues": values(1, 1, 3)},
        ],
    }
    continuous = rng.random() < 0.7
    streak = {
        "name": "Weekly habit", "trackingType": "STREAK",
        "targetEvaluationType": "FIXED_CALENDAR_WINDOW", "frequencyType": "WEEKLY",
        "frequency": 1, "totalPeriods": 12, "targetCycleStartDate": str(START),
        "streakContinuous": continuous,
        "streakGraceWindows": rng.randint(0, 1) if continuous else 0,
        "streaks": [{"name": f"L{n}", "targetCountOfSequence": n}
                    for n in sorted(rng.sample([1, 2, 3, 4, 6], 2))],
        "targets": [{"name": "weekly", "targetEntity": rng.choice(["TRANSACTION", "LINEITEM"]),
                     "targetType": rng.choice(["QUANTITY", "COUNT"]),
                     "enrolmentMethod": "TRANSACTION", "defaultValues": values(12, 1, 3)}],
    }
    if rng.random() < 0.5:
        streak["targets"][0]["filters"] = [{"entityType": "ZONE", "entityIds": ["Z1"]}]
    cap = {
        "name": "Points cap", "trackingType": "CAPPING",
        "targetEvaluationType": "FIXED_CALENDAR_WINDOW", **monthly,
        "targets": [{"name": "cap", "targetEntity": "REWARDS",
                     "targetType": rng.choice(["ALL_POINTS", "PROMOTIONAL_POINTS"]),
                     "enrolmentMethod": "TRANSACTION", "defaultValues": values(3, 40, 160)}],
    }
    agnostic = {
        "name": "Spend and repeat", "trackingType": "DEFAULT",
        "targetEvaluationType": "PERIOD_AGNOSTIC_WINDOW", "frequencyType": "MONTHLY",
        "recurringCycles": rng.randint(0, 3), "targetCycleStartDate": str(START),
        "targets": [{"name": "spend", "targetEntity": "TRANSACTION", "targetType": "SALES",
                     "expression": rng.choice(txn_rules), "enrolmentMethod": "IMPORT",
                     "defaultValues": values(1, 100, 400)}],
    }
    periods = [{"refCode": f"P{i + 1}", "startDate": str(START + timedelta(days=20 * i)),
                "endDate": str(START + timedelta(days=20 * i + 17))} for i in range(4)]
    goal_target: dict[str, Any] = {
        "name": "spin_points", "targetEntity": "EVENT", "targetType": "EVENT_ATTRIBUTE",
        "eventName": "spin", "enrolmentMethod": "IMPORT", "defaultValues": values(4, 1, 5),
        "extendedFieldInfo": {"name": "points", "aggregateFunction": "SUM"},
    }
    if rng.random() < 0.5:
        goal_target["extendedFieldInfo"]["aggregateWindow"] = {
            "windowType": rng.choice(["MIN", "MAX"]), "windowTimeUnit": "DAY", "windowValue": 2}
    goals = {
        "name": "Spin goals", "trackingType": "DEFAULT", "userCreated": True,
        "targetEvaluationType": "FIXED_CALENDAR_WINDOW", "frequencyType": "CUSTOM",
        "totalPeriods": 4, "periods": periods, "targets": [goal_target],
    }
    broken = {
        "name": BROKEN, "trackingType": "DEFAULT",
        "targetEvaluationType": "FIXED_CALENDAR_WINDOW", **monthly,
        "targets": [{"name": "x", "targetEntity": "TRANSACTION", "targetType": "SALES",
                     "expression": "currentTxn.no_such_column > 1",
                     "enrolmentMethod": "TRANSACTION", "defaultValues": values(3, 1, 9)}],
    }
    return [board, unified, streak, cap, agnostic, goals, broken]


def exports(rng: random.Random, text_ids: bool) -> tuple[dict[str, list[dict]], list[dict]]:
    """Records of 40 customers (skewed), and late returns loaded before the second run."""

    def cust(i: int) -> Any:
        return f"C{i:03d}" if text_ids else 1000 + i

    def when(day: int | None = None) -> datetime:
        day = rng.randrange(DAYS) if day is None else day
        return datetime(2024, 1, 1) + timedelta(days=day, minutes=rng.randrange(24 * 60))

    def money() -> str:
        return str(Decimal(rng.randint(100, 25000)) / 100)

    customers = [cust(i) for i in range(40)]
    weights = [1 / (i + 1) for i in range(40)]
    txns: list[dict] = []
    lines: list[dict] = []
    for n in range(360):
        c = rng.choices(customers, weights)[0]
        amount = money()
        txns.append({"txn_id": f"T{n}", "customer_id": c, "txn_time": when(), "amount": amount,
                     "type": "REGULAR", "store_id": rng.choice([s[0] for s in STORES] + [""]),
                     "qty": rng.choice(["", "1", "2", "3"])})
        for k in range(rng.randint(0, 3)):
            lines.append({"txn_id": f"T{n}", "line_no": k + 1, "qty": rng.randint(1, 3),
                          "amount": money(), "category": rng.choice("ABC")})

    def returns(prefix: str, count: int) -> list[dict]:
        out = []
        for n in range(count):
            parent = rng.choice(txns)
            row = {"txn_id": f"{prefix}{n}", "type": "RETURN", "amount": money(),
                   "store_id": parent["store_id"], "qty": "1"}
            if rng.random() < 0.7:  # a return of a bill, a few days later
                row |= {"customer_id": parent["customer_id"], "parent_txn_id": parent["txn_id"],
                        "txn_time": parent["txn_time"] + timedelta(days=rng.randint(0, 12))}
            else:
                row |= {"customer_id": rng.choice(customers), "txn_time": when()}
            out.append(row)
        return out

    rets = returns("R", 30)
    # A return of another customer's bill: sharding must keep both customers together.
    other = customers[-1] if txns[0]["customer_id"] != customers[-1] else customers[-2]
    rets[0] |= {"customer_id": other, "parent_txn_id": "T0",
                "txn_time": txns[0]["txn_time"] + timedelta(hours=2)}
    for r in rets[:12]:
        if r.get("parent_txn_id"):
            bill_lines = [x for x in lines if x["txn_id"] == r["parent_txn_id"]][:1]
            lines += [x | {"txn_id": r["txn_id"]} for x in bill_lines]
    events = [{"event_id": f"E{n}", "customer_id": rng.choices(customers, weights)[0],
               "event_name": rng.choice(["spin", "spin", "visit"]), "event_time": when(),
               "store_id": rng.choice([s[0] for s in STORES]),
               "points": rng.choice(["", "0.5", "1", "2.25", "3"])} for n in range(160)]
    points = [{"points_id": f"P{n}", "customer_id": rng.choices(customers, weights)[0],
               "awarded_at": when(), "points": rng.randint(5, 60),
               "points_type": rng.choice(["REGULAR", "PROMOTIONAL"])} for n in range(140)]
    enrolled = rng.sample(customers, 20)
    enrolments = [
        {"group_name": "Spend and repeat", "customer_id": c,
         "enrolled_at": when(rng.randrange(30)) if rng.random() < 0.5 else "",
         "target_value": rng.choice(["", "150", "250"]),
         "initial_balance": rng.choice(["", "", "20"])}
        for c in enrolled[:12]
    ] + [
        {"group_name": "spin goals", "customer_id": c, "period_ref": p,
         "target_value": str(rng.randint(1, 4))}
        for c in enrolled[8:] for p in ("P1", "P2", "P3", "P4") if rng.random() < 0.8
    ]
    # Late full returns of the heaviest customers' bills: some rewards must be revoked.
    january = [t for t in txns
               if t["customer_id"] in customers[:2] and t["txn_time"] < datetime(2024, 2, 1)]
    late = [{"txn_id": f"L{n}", "customer_id": t["customer_id"], "type": "RETURN",
             "amount": t["amount"], "parent_txn_id": t["txn_id"], "qty": t["qty"],
             "txn_time": t["txn_time"] + timedelta(hours=1)} for n, t in enumerate(january)]
    return {
        "stores": [dict(zip(("store_id", "zone_id", "concept_id"), s, strict=True))
                   for s in STORES],
        "transactions": txns + rets,
        "line_items": lines,
        "events": events,
        "points": points,
        "enrolments": enrolments,
    }, late


def _write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_workspace(folder: Path, seed: int, text_ids: bool) -> tuple[Workspace, Path]:
    """A loaded, registered workspace; returns it and the late returns' file."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    mode = rng.choice(["original", "carry"])
    (folder / "milestones.toml").write_text(
        f'[org]\nleaderboards_enabled = true\n[returns]\nmode = "{mode}"\n'
    )
    ws = Workspace.resolve(str(folder / "w.duckdb"), None)
    records, late = exports(rng, text_ids)
    with ws.connect() as con:
        outcomes = registry.register_bodies(
            con, [("test", b) for b in programme(rng)], config=ws.config, as_of=AS_OF
        )
        assert all(o.registered for o in outcomes), [o for o in outcomes if not o.registered]
        for name, rows in records.items():
            report = load_exports(con, name.replace("_", "-"),
                                  [str(_write_csv(folder / f"{name}.csv", rows))])
            assert report.rows_rejected == 0, (name, report)
    return ws, _write_csv(folder / "late_returns.csv", late)


def clone(ws: Workspace, folder: Path) -> Workspace:
    """A copy of a closed workspace in `folder` (its database and config)."""
    shutil.copytree(ws.db_path.parent, folder)
    return Workspace.resolve(str(folder / ws.db_path.name), None)


def tables(ws: Workspace) -> dict[str, pl.DataFrame]:
    """Every compared table, run ids dropped, sorted on every column."""
    out = {}
    with ws.connect(read_only=True) as con:
        for name in COMPARED:
            frame = con.sql(f"SELECT * FROM {name}").pl()
            frame = frame.drop([c for c in RUN_ID_COLUMNS if c in frame.columns])
            out[name] = frame.sort(frame.columns, nulls_last=True)
    return out


def assert_same_tables(local: Workspace, other: Workspace) -> dict[str, pl.DataFrame]:
    expected, got = tables(local), tables(other)
    for name in COMPARED:
        assert_frame_equal(got[name], expected[name], check_exact=True, check_row_order=True)
    return expected


def invoke(runner: CliRunner, ws: Workspace, *args: str) -> Any:
    return runner.invoke(main, ["--db", str(ws.db_path), "run", "--as-of", str(AS_OF), *args])


# ----------------------------------------------------------- without Dask (always run)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Seed 7, integer ids: loaded and registered, never run (copy it before running)."""
    ws, _ = build_workspace(tmp_path_factory.mktemp("seeded") / "ws", 7, text_ids=False)
    return ws


def test_scheduler_without_dask_engine_is_a_usage_error(runner: CliRunner,
                                                        seeded: Workspace) -> None:
    result = invoke(runner, seeded, "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        "Error: --scheduler only applies to --engine dask; add --engine dask or drop --scheduler"
    )
    with pytest.raises(UsageError, match="not one of local, dask"):
        make_engine("spark")


def test_dask_engine_without_the_extra_says_how_to_install_it(
    runner: CliRunner, seeded: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_engine.importlib.util, "find_spec", lambda name: None)
    result = invoke(runner, seeded, "--engine", "dask")
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "Error: --engine dask needs the optional Dask extra, which is not installed: "
        "pip install 'milestones[dask]', or run with --engine local"
    )
    with seeded.connect(read_only=True) as con:  # refused before a run was recorded
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(0,)]


def test_customer_links_join_chains_of_returns_across_customers(fresh_db) -> None:
    fresh_db.execute(
        "INSERT INTO transactions (txn_id, customer_id, txn_time, amount, type, parent_txn_id, "
        "gross_amount) SELECT * FROM (VALUES "
        "('A', 5, TIMESTAMPTZ '2024-01-01', 1, 'REGULAR', NULL, 1),"
        "('B', 9, TIMESTAMPTZ '2024-01-02', 1, 'RETURN', 'A', 1),"    # 9 returns 5's bill
        "('C', 9, TIMESTAMPTZ '2024-01-02', 1, 'REGULAR', NULL, 1),"
        "('D', 3, TIMESTAMPTZ '2024-01-03', 1, 'RETURN', 'C', 1),"    # 3 returns 9's bill
        "('E', 7, TIMESTAMPTZ '2024-01-03', 1, 'REGULAR', NULL, 1),"
        "('F', 7, TIMESTAMPTZ '2024-01-04', 1, 'RETURN', 'E', 1))"    # own bill: no link
    )
    schema = pl.Schema({"customer_id": pl.Int64})
    links = shards.customer_links(fresh_db, schema)
    assert links is not None
    assert links.to_dict(as_series=False) == {
        "customer_id": [3, 5, 9], "shard_customer": [3, 3, 3]}
    fresh_db.execute("DELETE FROM transactions WHERE txn_id IN ('B', 'D')")
    assert shards.customer_links(fresh_db, schema) is None


def test_a_return_of_another_customers_bill_is_scored_as_in_one_process(fresh_db,
                                                                         tmp_path: Path) -> None:
    shard_of = dict(fresh_db.sql("SELECT i, hash(i) % 2 FROM range(1, 40) t(i)").fetchall())
    a, b = 1, next(i for i, k in shard_of.items() if k != shard_of[1])  # two shards apart
    fresh_db.execute(
        "INSERT INTO transactions (txn_id, customer_id, txn_time, amount, type, parent_txn_id, "
        "gross_amount) VALUES "
        "('T0', $a, TIMESTAMPTZ '2024-01-10 10:00Z', 100, 'REGULAR', NULL, 100),"
        "('T1', $b, TIMESTAMPTZ '2024-01-12 10:00Z', 120, 'REGULAR', NULL, 120),"
        "('R0', $b, TIMESTAMPTZ '2024-01-20 10:00Z', -50, 'RETURN', 'T0', -50)",
        {"a": a, "b": b},
    )
    config = Config()
    body = {"name": "Big bills", "trackingType": "DEFAULT", "frequencyType": "MONTHLY",
            "frequency": 1, "totalPeriods": 2, "targetCycleStartDate": "2024-01-01",
            "targets": [{"name": "sales", "targetEntity": "TRANSACTION", "targetType": "SALES",
                         "expression": "currentTxn.value > 80", "enrolmentMethod": "TRANSACTION",
                         "defaultValues": [{"defaultValue": 100}]}]}
    registry.register_bodies(fresh_db, [("test", body)], config=config, as_of=date(2024, 2, 10))
    groups = registry.load_groups(fresh_db, None, config=config)
    whole = score(runs.read_sources(fresh_db), groups, date(2024, 2, 10), config)
    schemas = shards.export_shards(fresh_db, tmp_path, 2)
    parts = [score(shards.read_shard(tmp_path, k, schemas), groups, date(2024, 2, 10), config)
             for k in range(2)]
    _, merged = staged(fresh_db, parts, groups, tmp_path / "stage")
    expected = whole.tables["target_progress"]
    got = like(merged["target_progress"], expected).sort("customer_id", "period_index")
    assert_frame_equal(got, expected.sort("customer_id", "period_index"))
    # b's return reduces the window of the bill it returns (120 - 50), though that bill is a's;
    # scored apart from a's bill it would be a parentless return of 50, failing the rule.
    assert got.filter(pl.col("customer_id") == b)["value"].to_list() == [Decimal(70), 0]


def test_shards_split_customers_whole_and_keep_every_column(seeded: Workspace,
                                                            tmp_path: Path) -> None:
    with seeded.connect(read_only=True) as con:
        whole = runs.read_sources(con)
        schemas = shards.export_shards(con, tmp_path, 3)
    pieces = [shards.read_shard(tmp_path, k, schemas) for k in range(3)]
    txn_owner = whole["transactions"].select("txn_id", "customer_id").collect()
    for name, frame in whole.items():
        expected = frame.collect()
        parts = [s[name].collect() for s in pieces]
        for part in parts:
            assert part.schema == expected.schema, name
        if name == "stores":
            assert all(p.equals(expected) for p in parts)
            continue
        got = pl.concat(parts)
        assert got.sort(got.columns).equals(expected.sort(expected.columns)), name
        owners = [
            (p if "customer_id" in p.columns else p.join(txn_owner, on="txn_id"))
            ["customer_id"].unique().to_list()
            for p in parts
        ]
        assert all(o for o in owners), f"{name}: a shard is empty; pick another seed"
        seen = [c for o in owners for c in o]
        assert len(seen) == len(set(seen)), f"{name}: a customer is split over shards"
    # The cross-customer return and its parent bill share a shard.
    linked = [s for s in pieces
              if s["transactions"].filter(pl.col("txn_id").is_in(["T0", "R0"])).collect().height]
    assert len(linked) == 1


def test_database_shards_hold_the_rows_of_the_exported_shards(seeded: Workspace,
                                                              tmp_path: Path) -> None:
    """The local engine reads shards from the database, the Dask engine from exported Parquet:
    both must split every export the same way (cross-customer returns, orphan lines included)."""
    ws = clone(seeded, tmp_path / "ws")
    with ws.connect() as con:
        con.execute("INSERT INTO line_items SELECT * REPLACE ('NO SUCH BILL' AS txn_id) "
                    "FROM line_items LIMIT 1")
        schemas = shards.export_shards(con, tmp_path / "parquet", 3)
        with shards.database_shards(con, 3) as read:
            assert len(read) == 3
            for k, frames in enumerate(read):
                exported = shards.read_shard(tmp_path / "parquet", k, schemas)
                for name, frame in frames.items():
                    got, expected = frame.collect(), exported[name].collect()
                    assert got.schema == expected.schema, (k, name)
                    assert got.sort(got.columns).equals(expected.sort(expected.columns)), (k, name)
            orphan = pl.col("txn_id") == "NO SUCH BILL"
            assert read[0]["line_items"].filter(orphan).collect().height == 1
        # Nothing of the shards is left in the session.
        assert not con.sql(f"SELECT * FROM duckdb_tables() WHERE table_name = "
                           f"'{shards.OWNERS}'").fetchall()
        with shards.database_shards(con, 1, tables=("transactions",)) as whole:
            one = whole[0]
            assert one["transactions"].collect().height == con.sql(
                "SELECT count(*) FROM transactions").fetchall()[0][0]
            assert one["line_items"].collect().height == 0
            assert one["line_items"].collect_schema() == schemas["line_items"]
            with pytest.raises(IndexError):
                whole[1]


@pytest.mark.parametrize("odd_word", [None, "return"])
def test_shards_read_word_columns_as_their_words(seeded: Workspace, tmp_path: Path,
                                                 odd_word: str | None) -> None:
    """`type` and `points_type` are read as the position of their word and made text again:
    the frames hold the stored words, and a word the loader would not store (written by other
    means) comes through as stored rather than as a null."""
    ws = clone(seeded, tmp_path / "ws")
    with ws.connect() as con:
        if odd_word is not None:
            con.execute("UPDATE transactions SET type = $w WHERE txn_id = "
                        "(SELECT min(txn_id) FROM transactions WHERE type = 'RETURN')",
                        {"w": odd_word})
        for table, column in shards.WORDS:
            stored = con.sql(f"SELECT {column}, count(*) FROM {table} GROUP BY ALL").fetchall()
            with shards.database_shards(con, 2) as read:
                got = pl.concat([read[k][table].select(column).collect() for k in range(2)])
            assert got.schema[column] == pl.String
            assert sorted(got.group_by(column).len().rows()) == sorted(stored), (table, column)
            assert len(stored) >= 2, (table, column)  # the seeds hold both words
        if odd_word is not None:
            assert (odd_word, 1) in con.sql(
                "SELECT type, count(*) FROM transactions GROUP BY ALL").fetchall()


def test_shard_columns_are_read_when_first_needed_and_stay_aligned(
        seeded: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard reads the columns its queries ask for, when they first ask; a column read later
    joins the rows already held by row id, even when the database hands them over in another
    order (a join in the shard's query may); the next shard reads at once what earlier shards
    needed."""
    with seeded.connect(read_only=True) as con, shards.database_shards(con, 2) as read:
        whole = {k: read[k]["transactions"].collect() for k in range(2)}
    reads: list[tuple[str, int, list[str]]] = []
    plain = shards.DatabaseShards.read

    def read_reversed(self: Any, name: str, k: int, columns: Any, rows: Any = None) -> Any:
        later = any(r[:2] == (name, k) for r in reads)
        assert (rows is not None) == later  # a later read finds the shard's rows by their ids
        reads.append((name, k, list(columns)))
        got = plain(self, name, k, columns, rows)
        return got.reverse() if later else got  # a later read in another order

    monkeypatch.setattr(shards.DatabaseShards, "read", read_reversed)
    with seeded.connect(read_only=True) as con, shards.database_shards(con, 2) as read:
        first = read[0]["transactions"]
        assert first.select("txn_id").collect().equals(whole[0].select("txn_id"))
        assert reads == [("transactions", 0, ["txn_id"])]
        both = first.select("amount", "txn_id").filter(pl.col("amount") > 0).collect()
        assert both.equals(whole[0].select("amount", "txn_id").filter(pl.col("amount") > 0))
        assert reads[-1] == ("transactions", 0, ["amount"])  # only what was missing
        assert first.collect().equals(whole[0])
        read[1]["transactions"].select("customer_id").collect()
        assert reads[-1] == ("transactions", 1, list(whole[1].columns))  # all, once


def test_the_local_engine_probes_its_groups_so_each_shard_reads_each_export_once(
        seeded: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any shard is read, the groups are scored over empty exports to learn the columns
    they ask for: then every shard, the first one too, reads each record export in one query
    (no read again for a column a later query needs), and the probe's rows never reach the
    results."""
    reads: list[tuple[str, int]] = []
    plain = shards.DatabaseShards.read

    def logged(self: Any, name: str, k: int, columns: Any, rows: Any = None) -> Any:
        reads.append((name, k))
        return plain(self, name, k, columns, rows)

    monkeypatch.setattr(shards.DatabaseShards, "read", logged)
    with seeded.connect(read_only=True) as con:
        groups = registry.load_groups(con, None, config=seeded.config)
        with shards.database_shards(con, 3) as read:
            parts = list(LocalEngine(workers=1).parts(read, groups, AS_OF, seeded.config))
    assert len(parts) == 3 * len(groups)
    assert {name for name, _ in reads} >= {"transactions", "line_items", "events", "points"}
    # The record exports; enrolments (small) may be read again: over no rows a group finds
    # no enrolment rows and skips their lookups.
    measured = [r for r in reads if r[0] in shards.MEASURED]
    assert len(measured) == len(set(measured)), sorted(measured)
    with seeded.connect(read_only=True) as con:
        whole = score(runs.read_sources(con), groups, AS_OF, seeded.config)
    got = merge_results(parts)
    for name in ("target_progress", "period_achievements"):
        columns = got.tables[name].columns
        assert_frame_equal(got.tables[name].sort(columns, nulls_last=True),
                           whole.tables[name].sort(columns, nulls_last=True), check_exact=True)


def test_a_probe_that_fails_does_not_fail_the_scoring(
        seeded: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe over empty exports is only a hint: if scoring no rows raised, the shards read
    their columns as queries ask, and the results are those of scoring without a probe."""
    def broken(self: Any) -> dict[str, pl.LazyFrame]:
        raise RuntimeError("a probe that breaks")

    with seeded.connect(read_only=True) as con:
        groups = registry.load_groups(con, None, config=seeded.config)
        with shards.database_shards(con, 2) as read:
            expected = merge_results(LocalEngine(workers=1).parts(read, groups, AS_OF,
                                                                  seeded.config))
        monkeypatch.setattr(shards.DatabaseShards, "probe", broken)
        with shards.database_shards(con, 2) as read:
            got = merge_results(LocalEngine(workers=1).parts(read, groups, AS_OF,
                                                             seeded.config))
    for name in ("target_progress", "period_achievements"):
        assert got.tables[name].height
        columns = got.tables[name].columns
        assert_frame_equal(got.tables[name].sort(columns, nulls_last=True),
                           expected.tables[name].sort(columns, nulls_last=True))


def test_a_shard_whose_rows_change_between_reads_is_an_error_not_a_misalignment(
        seeded: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = shards.DatabaseShards.read

    def one_row_fewer_later(self: Any, name: str, k: int, columns: Any, rows: Any = None) -> Any:
        got = plain(self, name, k, columns, rows)
        return got if rows is None else got.head(-1)

    monkeypatch.setattr(shards.DatabaseShards, "read", one_row_fewer_later)
    with seeded.connect(read_only=True) as con, shards.database_shards(con, 2) as read:
        first = read[0]["transactions"]
        first.select("txn_id").collect()
        with pytest.raises(MilestonesError, match="transactions export changed"):
            first.select("amount").collect()
        assert read[1]["events"].select(pl.len()).collect().item() > 0  # needs no column


def test_missing_shard_folder_gives_empty_frames_with_the_columns(seeded: Workspace,
                                                                  tmp_path: Path) -> None:
    with seeded.connect(read_only=True) as con:
        schemas = shards.export_shards(con, tmp_path, 2)
    frames = shards.read_shard(tmp_path, 99, schemas)
    assert frames["transactions"].collect().height == 0
    assert frames["transactions"].collect_schema() == schemas["transactions"]
    assert frames["stores"].collect().height == len(STORES)


def staged(con: Any, parts: list[ScoreResult], groups: list[Any],
           root: Path) -> tuple[Staging, dict[str, pl.DataFrame]]:
    """`parts` staged as a run stages them, and every staged table read back."""
    staging = Staging(root, groups)
    for part in parts:
        staging.add(part)
    staging.finish(con)
    out = {}
    for name in (*TABLES, EARNED):
        relation = staging.relation(name)
        out[name] = con.sql(f"SELECT * FROM {relation}").pl() if relation else pl.DataFrame()
    return staging, out


def assert_same_rows(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    """The same rows, exactly, in any order."""
    assert_frame_equal(got.sort(got.columns, nulls_last=True),
                       expected.sort(expected.columns, nulls_last=True), check_exact=True)


def like(frame: pl.DataFrame, expected: pl.DataFrame) -> pl.DataFrame:
    """`frame` with `expected`'s columns and types (Parquet and DuckDB widen some types)."""
    return frame.select(expected.columns).cast(dict(expected.schema))


def test_staged_shards_equal_scoring_everyone_at_once(seeded: Workspace, tmp_path: Path) -> None:
    with seeded.connect(read_only=True) as con:
        groups = registry.load_groups(con, None, config=seeded.config)
        whole = score(runs.read_sources(con), groups, AS_OF, seeded.config)
        schemas = shards.export_shards(con, tmp_path, 3)
        parts = [score(shards.read_shard(tmp_path, k, schemas), groups, AS_OF, seeded.config)
                 for k in range(3)]
        staging, merged = staged(con, parts, groups, tmp_path / "stage")
    assert staging.failures == whole.failures and set(whole.failures) == {BROKEN}
    assert staging.scored == whole.groups
    earned = whole.rewards.drop("reward_id", strict=False)
    for name, frame in [*whole.tables.items(), (EARNED, earned)]:
        got = like(merged[name], frame)
        assert frame.height, f"{name} is empty: the programme does not exercise it"
        assert_same_rows(got, frame)
    # A leaderboard is ranked across shards: concatenated shard boards would repeat ranks.
    boards = pl.concat([p.tables["leaderboard"] for p in parts if p.tables["leaderboard"].height])
    assert boards.select(pl.struct("period_index", "rank").is_duplicated().any()).item()


def test_staged_files_hold_one_group_each_and_are_read_by_group(seeded: Workspace,
                                                                 tmp_path: Path) -> None:
    with seeded.connect(read_only=True) as con:
        groups = registry.load_groups(con, None, config=seeded.config)
        result = score(runs.read_sources(con), groups, AS_OF, seeded.config)
        staging, merged = staged(con, [result], groups, tmp_path / "stage")
        progress = merged["target_progress"]
        ids = sorted(progress["group_id"].unique().to_list())
        assert len(ids) > 2  # the one part held several groups: its frame was split
        files = sorted((tmp_path / "stage" / "target_progress").glob("*.parquet"))
        assert sorted(pl.read_parquet(f)["group_id"].unique().item() for f in files) == ids
        relation = staging.relation("target_progress", only=ids[:2])
        assert relation is not None and relation.count(".parquet") == 2  # reads two files
        got = con.sql(f"SELECT * FROM {relation}").pl()
        assert sorted(got["group_id"].unique().to_list()) == ids[:2]
        assert got.height == progress.filter(pl.col("group_id").is_in(ids[:2])).height
        assert staging.relation("target_progress", only=[-1]) is None


def test_fixed_groups_stage_their_window_columns_once_per_period(seeded: Workspace,
                                                                 tmp_path: Path) -> None:
    with seeded.connect(read_only=True) as con:
        groups = registry.load_groups(con, None, config=seeded.config)
        result = score(runs.read_sources(con), groups, AS_OF, seeded.config)
        _, merged = staged(con, [result], groups, tmp_path / "stage")
    fixed = {g.group_id for g in groups if g.evaluation_type is EvaluationType.FIXED}
    others = {g.group_id for g in groups} - fixed
    files = [pl.read_parquet(f) for table in ("target_progress", "period_achievements")
             for f in (tmp_path / "stage" / table).glob("*.parquet")]
    lean = {f["group_id"][0] for f in files if "ref_code" not in f.columns}
    full = {f["group_id"][0] for f in files if "ref_code" in f.columns}
    assert lean and lean <= fixed  # FIXED groups: no window columns in their files...
    assert full and full <= others  # ...the others (per-customer windows) keep them
    for table in ("target_progress", "period_achievements"):  # ...and read back whole
        frame = result.tables[table]
        got = like(merged[table], frame)
        assert got.filter(pl.col("group_id").is_in(list(fixed)))["window_end"].null_count() == 0
        assert_same_rows(got, frame)


def test_one_target_groups_stage_no_period_achievements(seeded: Workspace,
                                                       tmp_path: Path) -> None:
    """Their windows' rows are read from their staged target_progress, and come back exactly
    as the engine made them."""
    with seeded.connect(read_only=True) as con:
        groups = registry.load_groups(con, None, config=seeded.config)
        result = score(runs.read_sources(con), groups, AS_OF, seeded.config)
        _, merged = staged(con, [result], groups, tmp_path / "stage")
    one = {g.group_id for g in groups if len(g.targets) == 1}
    files = list((tmp_path / "stage" / "period_achievements").glob("*.parquet"))
    staged_ids = {pl.read_parquet(f)["group_id"][0] for f in files}
    expected = result.tables["period_achievements"]
    scored_ids = set(expected["group_id"].to_list())
    assert scored_ids & one and scored_ids - one  # the programme has both kinds
    assert staged_ids == scored_ids - one
    assert_same_rows(like(merged["period_achievements"], expected), expected)


def test_a_group_failing_in_one_part_fails_everywhere(seeded: Workspace, tmp_path: Path) -> None:
    with seeded.connect(read_only=True) as con:
        groups = registry.load_groups(con, None, config=seeded.config)
        result = score(runs.read_sources(con), groups, AS_OF, seeded.config)
        board = next(g for g in groups if g.leaderboard_enabled)
        failing = ScoreResult(tables=dict(result.tables), rewards=result.rewards,
                              failures={board.name: "boom"}, groups=result.groups)
        staging, merged = staged(con, [result, failing], groups, tmp_path / "stage")
    assert staging.failures == {BROKEN: result.failures[BROKEN], board.name: "boom"}
    for frame in merged.values():
        if frame.width:
            assert board.group_id not in frame["group_id"].to_list()
    assert merged["streak_progress"].height == 2 * result.tables["streak_progress"].height


@pytest.mark.parametrize("seed, text_ids", [
    pytest.param(11, True, id="seed 11, text customer ids"),
    pytest.param(23, False, id="seed 23, integer customer ids"),
])
def test_local_engine_in_shards_equals_local_engine_in_one_piece(
    tmp_path: Path, seed: int, text_ids: bool
) -> None:
    whole, late = build_workspace(tmp_path / "whole", seed, text_ids)
    sharded = clone(whole, tmp_path / "sharded")
    engine = LocalEngine(rows_per_shard=250)  # ~1,100 records: 5 shards
    for step in ("first", "after late returns"):
        request = runs.RunRequest(as_of=AS_OF)
        a = runs.run(whole, request)
        b = runs.run(sharded, request, engine=engine)
        assert (a.status, b.status) == ("PARTIAL", "PARTIAL"), step
        assert (a.awards, a.revocations) == (b.awards, b.revocations), step
        expected = assert_same_tables(whole, sharded)
        for ws in (whole, sharded):
            with ws.connect() as con:
                assert load_exports(con, "transactions", [str(late)]).rows_rejected == 0
    assert expected["rewards"]["status"].to_list().count("REVOKED") >= 1
    assert expected["leaderboard"].height
    assert not list((tmp_path / "sharded").glob(".milestones-*"))


@pytest.mark.parametrize("group", ["Monthly sales board", "Fortnight mix"])
def test_local_engine_splits_shards_when_its_groups_leave_a_thread_idle(
    tmp_path: Path, group: str
) -> None:
    """One group is one chain: with two workers each shard is split in two, scored side by
    side. The rows are those of one thread scoring the shards whole (a leaderboard ranked
    across the finer shards, line items following their bills)."""
    whole, late = build_workspace(tmp_path / "whole", 23, False)
    split = clone(whole, tmp_path / "split")
    said: list[str] = []
    one = LocalEngine(rows_per_shard=600, workers=1)
    two = LocalEngine(rows_per_shard=600, workers=2, split_from=0, progress=said.append)
    for step in ("first", "after late returns"):
        request = runs.RunRequest(as_of=AS_OF, groups=(group,))
        a = runs.run(whole, request, engine=one)
        b = runs.run(split, request, engine=two)
        assert (a.status, a.awards, a.revocations) == (b.status, b.awards, b.revocations), step
        expected = assert_same_tables(whole, split)
        assert expected["target_progress"].height, step
        for ws in (whole, split):
            with ws.connect() as con:
                assert load_exports(con, "transactions", [str(late)]).rows_rejected == 0
    assert "local: 6 customer shards, 2 at a time" in said  # 3 shards of ~600 records


# ---------------------------------------------------------------- with a Dask cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One 2-worker LocalCluster for the `--scheduler` tests (the start is most of their time)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:
        yield c


def _both_engines(runner: CliRunner, local: Workspace, other: Workspace, *dask_args: str,
                  late: Path) -> dict[str, pl.DataFrame]:
    """Run both, load the late returns into both, run both again; compare after each run."""
    for step in ("first", "after late returns"):
        a = invoke(runner, local)
        b = invoke(runner, other, "--engine", "dask", *dask_args)
        assert (a.exit_code, b.exit_code) == (3, 3), (step, a.output, b.output)
        assert BROKEN in a.output and BROKEN in b.output
        expected = assert_same_tables(local, other)
        for ws in (local, other):
            with ws.connect() as con:
                assert load_exports(con, "transactions", [str(late)]).rows_rejected == 0
    return expected


@pytest.mark.parametrize("seed, text_ids", [
    pytest.param(11, True, id="seed 11, text customer ids"),
    pytest.param(23, False, id="seed 23, integer customer ids"),
])
def test_dask_on_a_scheduler_equals_local(cluster: Any, runner: CliRunner, tmp_path: Path,
                                          seed: int, text_ids: bool) -> None:
    local, late = build_workspace(tmp_path / "local", seed, text_ids)
    other = clone(local, tmp_path / "dask")
    expected = _both_engines(runner, local, other, "--scheduler", cluster.scheduler_address,
                             late=late)
    for name in COMPARED:
        assert expected[name].height, f"{name} is empty: the programme does not exercise it"
    assert expected["rewards"]["status"].to_list().count("REVOKED") >= 1


def test_dask_with_its_own_local_cluster_equals_local(runner: CliRunner, seeded: Workspace,
                                                      tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    local, other = clone(seeded, tmp_path / "local"), clone(seeded, tmp_path / "dask")
    a = invoke(runner, local)
    b = invoke(runner, other, "--engine", "dask")
    assert (a.exit_code, b.exit_code) == (3, 3), (a.output, b.output)
    assert_same_tables(local, other)
    with other.connect(read_only=True) as con:
        status = con.sql("SELECT status, error FROM runs").fetchall()
    assert status[0][0] == "PARTIAL" and BROKEN in status[0][1]
    assert not list(tmp_path.glob("dask/.milestones-shards-*"))


def test_unreachable_scheduler_is_one_error_line(runner: CliRunner, seeded: Workspace,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", "1s")
    ws = clone(seeded, tmp_path / "ws")
    result = invoke(runner, ws, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 1, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' (")
    assert last.endswith("leave out --scheduler to start a local cluster")


@pytest.mark.parametrize("ids, expected", [
    ([7, 7, 7], False), ([7, 8, 7], True), ([None, 7], True), ([None, None], False), ([7], False),
])
def test_staging_splits_a_part_only_when_it_holds_several_groups(ids, expected) -> None:
    from pipeline.staging import _several

    assert _several(pl.Series(ids, dtype=pl.Int64)) is expected
