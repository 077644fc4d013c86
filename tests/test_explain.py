"""`milestones explain` (SPEC §14): records counted and not, reasons, reward history.

The acceptance case is the demo: the streak seed customer 1004 loses level 2 of
`streakTestt123` when the late return S23-012 of bill S23-008 arrives.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from pipeline import registry
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.demo import AS_OF, DATA, run_demo
from pipeline.rules import tree
from pipeline.runs import read_sources
from pipeline.scoring import engine
from pipeline.scoring.context import GroupContext
from pipeline.scoring.trace import REASONS, trace_group
from pipeline.tools.explain import customer_sources
from tests import engine_helpers as h

CONFIG = load_config(DATA / "milestones.toml")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo workspace (two runs, the second revoking 1004's level 2); read only below."""
    folder = tmp_path_factory.mktemp("demo")
    run_demo(folder)
    return folder / "milestones.duckdb"


def _cli(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["--db", str(db), "--config", str(DATA / "milestones.toml"), *args]
    )
    return result.exit_code, result.stdout, result.stderr


def _explain_json(db: Path, *args: str) -> dict:
    code, out, err = _cli(db, "explain", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


# --- acceptance ----------------------------------------------------------------------------


def test_late_return_names_record_revoking_run_and_records_that_still_count(demo: Path) -> None:
    [(revoking_run,)] = _query(
        demo,
        "SELECT revoked_run_id FROM rewards WHERE customer_id = 1004 AND status = 'REVOKED' "
        "AND group_name = 'streakTestt123'",
    )
    code, out, _ = _cli(demo, "explain", "1004", "--group", "streakTestt123")
    assert code == 0
    assert "because of return S23-012 of bill S23-008" in out
    assert f"revoked by run {revoking_run}" in out
    assert "S23-009  +1200  running 1200  <- target reached" in out

    report = _explain_json(demo, "1004", "--group", "streakTestt123")
    windows = {w["ref_code"]: w for w in report["windows"]}
    p44 = windows["period44"]["targets"][0]
    p45 = windows["period45"]["targets"][0]
    assert [(r["record"], r["contribution"], r["running"]) for r in p44["counted"]] == [
        ("S23-008", "560", "560"),
        ("S23-012", "-100", "460"),
    ]
    assert (p44["value"], p44["achieved"]) == ("460", False)
    assert [(r["record"], r["reached"]) for r in p45["counted"]] == [("S23-009", True)]
    assert windows["period45"]["achieved"] is True

    level2 = next(r for r in report["rewards"] if r["name"] == "streakTestt123")
    assert level2["status"] == "REVOKED" and level2["revoked_run_id"] == revoking_run
    revoked = [e for e in level2["history"] if e["action"] == "REVOKED"]
    assert [e["run_id"] for e in revoked] == [revoking_run]
    [cause] = revoked[0]["because"]
    assert (cause["record"], cause["parent"], cause["window"]) == ("S23-012", "S23-008", "period44")
    assert cause["loads_between_runs"][0]["path"].endswith("transactions_late_returns.csv")

    level1 = next(r for r in report["rewards"] if r["name"] == "streakTestt193")
    assert (level1["status"], level1["earned_as_of"], level1["earned_now_in"]) == (
        "ISSUED",
        True,
        "period45",
    )


def test_explain_reads_only(demo: Path) -> None:
    before = hashlib.sha256(demo.read_bytes()).hexdigest()
    code, _, _ = _cli(demo, "explain", "1004", "--group", "streakTestt123", "--json")
    assert code == 0
    assert hashlib.sha256(demo.read_bytes()).hexdigest() == before


def test_window_option_keeps_one_window_by_ref_code_or_number(demo: Path) -> None:
    by_ref = _explain_json(demo, "1004", "--group", "streakTestt123", "--window", "PERIOD45")
    by_number = _explain_json(demo, "1004", "--group", "streakTestt123", "--window", "2")
    assert [w["ref_code"] for w in by_ref["windows"]] == ["period45"]
    assert by_number["windows"] == by_ref["windows"]
    assert by_ref["not_in_any_window"] == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(
            ["1004", "--group", "streakTestt123", "--window", "9"],
            "Error: --window '9': group 'streakTestt123' has no such window for this customer "
            "(windows: period44 (#1), period45 (#2)); give a window number or refCode",
            id="unknown window",
        ),
        pytest.param(
            ["1004", "--group", "no such group"],
            "Error: no registered group named 'no such group'; see `milestones groups list`",
            id="unknown group",
        ),
        pytest.param(
            ["abc", "--group", "streakTestt123"],
            "Error: customer id 'abc' is not an integer, and this workspace's ids are integers",
            id="text id in an integer workspace",
        ),
        pytest.param(
            ["999999", "--group", "streakTestt123"],
            "Error: customer 999999 has no record, window or reward in group 'streakTestt123' "
            "as of 2026-11-22; check the id and the group (`milestones progress 999999`)",
            id="unknown customer",
        ),
    ],
)
def test_explain_errors(demo: Path, args: list[str], error: str) -> None:
    code, _, err = _cli(demo, "explain", *args)
    assert (code, err.strip()) == (1, error)


def test_no_run_needs_as_of(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    from pipeline.workspace import migrate

    migrate(con)
    registry.register_bodies(
        con, [("s", json.loads((DATA / "groups" / "seed_streak.json").read_text()))],
        config=CONFIG,
    )
    con.close()
    code, _, err = _cli(db, "explain", "1004", "--group", "streakTestt123")
    assert code == 1
    assert err.startswith("Error: no run has been committed in this workspace")
    code, _, err = _cli(db, "explain", "1004", "--group", "streakTestt123", "--as-of",
                        "2023-11-30")
    assert (code, err.strip()) == (
        1,
        "Error: customer 1004 has no record, window or reward in group 'streakTestt123' as of "
        "2023-11-30; check the id and the group (`milestones progress 1004`)",
    )


def test_period_agnostic_cycles_close_at_the_reaching_record(demo: Path) -> None:
    [(cust,)] = _query(
        demo,
        "SELECT customer_id FROM target_progress JOIN target_groups g USING (group_id) "
        "WHERE g.name = 'Every 5 Visits' AND achieved ORDER BY customer_id LIMIT 1",
    )
    report = _explain_json(demo, str(cust), "--group", "Every 5 Visits")
    closed = [w for w in report["windows"] if w["achieved"]]
    assert closed
    for w in closed:
        [t] = w["targets"]
        reached = [r for r in t["counted"] if r["reached"]]
        assert len(reached) == 1 and reached[0] is t["counted"][-1]
        assert reached[0]["running"] == t["value"] and t["value"] == t["target_value"]


# --- one code path with the engine ---------------------------------------------------------


def _demo_groups(db: Path) -> tuple[list, dict[str, pl.LazyFrame], duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(db), read_only=True)
    groups = registry.load_groups(con, config=CONFIG)
    con.complete()
    return groups, read_sources(con), con


def test_traces_add_up_to_the_engine_values_for_every_demo_group(demo: Path) -> None:
    groups, sources, con = _demo_groups(demo)
    con.close()
    checked = 0
    for g in groups:
        ctx = GroupContext(group=g, as_of=AS_OF, config=CONFIG, sources=sources)
        traced = trace_group(ctx)
        reference = engine.score_group(ctx).progress
        for t in traced.targets:
            mine = reference.filter(pl.col("target_id") == t.target.target_id)
            assert t.progress.sort("customer_id", "period_index").equals(
                mine.sort("customer_id", "period_index")
            )
            last = t.counted.group_by("_cust", "_win").agg(
                pl.col("_running").last(),
                pl.col("_ts").filter(pl.col("_reached")).first().alias("_at"),
            )
            joined = t.progress.join(
                last,
                left_on=["customer_id", "period_index"],
                right_on=["_cust", "_win"],
                how="inner",
            )
            assert (joined["_running"] == joined["value"]).all(), g.name
            # The marked record is the engine's achieved_at (windows reached by a record).
            assert (
                joined.filter(pl.col("achieved_at").is_not_null())["_at"]
                == joined.filter(pl.col("achieved_at").is_not_null())["achieved_at"]
            ).all(), g.name
            reasons = t.excluded["_reasons"].explode().unique().to_list()
            assert set(reasons) <= set(REASONS) - {"not_counted"}, (g.name, reasons)
            checked += joined.height
    assert checked > 100


@pytest.mark.parametrize("name", ["streakTestt123", "Welcome Journey", "Every 5 Visits",
                                  "Quarterly Challenge 3 of 4"])
def test_one_customer_sources_give_that_customer_the_same_rows(demo: Path, name: str) -> None:
    groups, sources, con = _demo_groups(demo)
    g = next(x for x in groups if x.name == name)
    full = engine.score_group(GroupContext(group=g, as_of=AS_OF, config=CONFIG, sources=sources))
    customers = full.progress["customer_id"].unique().sort().to_list()[:5]
    assert customers
    for cid in customers:
        ctx = GroupContext(group=g, as_of=AS_OF, config=CONFIG,
                           sources=customer_sources(con, cid))
        alone = trace_group(ctx).score.progress.sort("target_id", "period_index")
        expected = full.progress.filter(pl.col("customer_id") == cid).sort(
            "target_id", "period_index"
        )
        assert alone.equals(expected), (name, cid)
    con.close()


# --- reasons -------------------------------------------------------------------------------


def test_every_exclusion_reason() -> None:
    rule = h.gt("amount", "50")
    t = h.target(1, "spend", rule=rule, values=("500", "500"), method="IMPORT",
                 filters=(h.m.StoreFilter("STORE", ("S1",)),))
    g = h.group(
        targets=(t,),
        periods=h.periods(("2023-11-01", "2023-11-10", "A"), ("2023-11-11", "2023-11-20", "B")),
        start_date=date(2023, 11, 1),
        end_date=date(2023, 11, 20),
    )
    rows = {
        "transactions": [
            h.txn("A", 1, "2023-11-05 10:00", "100", "S1"),
            h.txn("B", 1, "2023-11-06 10:00", "100", "S2"),
            h.txn("C", 1, "2023-11-07 10:00", "10", "S1"),
            h.txn("D", 1, "2023-11-25 10:00", "100", "S1"),
            h.txn("E", 1, "2023-10-25 10:00", "100", "S1"),
            h.txn("F", 1, "2023-11-02 10:00", "100", "S1"),
            h.txn("G", 1, "2023-11-18 12:00", "100", "S1"),
            h.txn("H", 2, "2023-11-05 10:00", "100", "S1"),
            h.ret("R1", 1, "2023-11-12 10:00", "40", parent="B", store="S1"),
            h.ret("R2", 1, "2023-11-12 11:00", "30", parent="A", store="S1"),
        ],
        "stores": [{"store_id": "S1"}, {"store_id": "S2"}],
        "enrolments": [
            {"group_name": "g", "customer_id": 1, "enrolled_at": h.ts("2023-11-03 00:00"),
             "unenrolled_at": h.ts("2023-11-18 00:00")},
        ],
    }
    config = replace(CONFIG, track_from_enrolment=True)
    ctx = GroupContext(group=g, as_of=date(2023, 11, 19), config=config,
                       sources=h.sources(**rows))
    [trace] = trace_group(ctx).targets
    got = {
        r["_k1"]: (r["_win"], r["_reasons"])
        for r in trace.excluded.iter_rows(named=True)
    }
    assert got == {
        "B": (1, ["store_filter"]),
        "C": (1, ["rule_false"]),
        "D": (None, ["after_as_of", "after_unenrolment", "outside_windows"]),
        "E": (None, ["before_enrolment", "outside_windows"]),
        "F": (1, ["before_enrolment"]),
        "G": (2, ["after_unenrolment"]),
        "H": (1, ["not_enrolled"]),
        "R1": (2, ["bill_not_counted"]),
    }
    assert [
        (r["_k1"], r["_win"], str(r["_contrib"]), str(r["_running"]))
        for r in trace.counted.iter_rows(named=True)
    ] == [("A", 1, "100.0000", "100.0000"), ("R2", 1, "-30.0000", "70.0000")]


def test_carry_mode_return_without_a_next_window() -> None:
    t = h.target(1, "spend", values=("50",))
    g = h.group(targets=(t,), periods=h.periods(("2023-11-01", "2023-11-30", None),
                                                 ("2023-12-01", "2023-12-31", None)))
    rows = {
        "transactions": [
            h.txn("A", 1, "2023-11-05 10:00", "100"),
            h.ret("R", 1, "2023-11-06 10:00", "60", parent="A"),
        ],
    }
    config = replace(CONFIG, returns_mode="carry")
    ctx = GroupContext(group=g, as_of=date(2023, 11, 20), config=config,
                       sources=h.sources(**rows))
    [trace] = trace_group(ctx).targets
    assert trace.excluded.select("_k1", "_reasons").rows() == [("R", ["no_next_window"])]
    # Once December has started the return reduces it.
    ctx = replace(ctx, as_of=date(2023, 12, 2))
    [trace] = trace_group(ctx).targets
    assert trace.counted.select("_k1", "_win").rows() == [("A", 1), ("R", 2)]
    assert trace.excluded.is_empty()


def test_opening_balance_is_the_first_running_value() -> None:
    t = h.target(1, "spend", values=("100",), method="IMPORT")
    g = h.group(targets=(t,), periods=h.periods(("2023-11-01", "2023-11-30", None)))
    rows = {
        "transactions": [h.txn("A", 1, "2023-11-05 10:00", "30"),
                         h.txn("B", 1, "2023-11-06 10:00", "30")],
        "enrolments": [{"group_name": "g", "customer_id": 1, "initial_balance": Decimal("50")}],
    }
    ctx = GroupContext(group=g, as_of=date(2023, 11, 20), config=CONFIG,
                       sources=h.sources(**rows))
    [trace] = trace_group(ctx).targets
    assert [
        (r["_k1"], str(r["_running"]), r["_reached"])
        for r in trace.counted.iter_rows(named=True)
    ] == [("A", "80.0000", False), ("B", "110.0000", True)]


def test_rule_tree_true_counts_everything() -> None:
    """Regression guard: a group without a rule excludes nothing but by window and date."""
    t = h.target(1, "visits", ttype="VISIT", rule=tree.TRUE, values=("1",))
    g = h.group(targets=(t,), periods=h.periods(("2023-11-01", "2023-11-30", None)))
    rows = {"transactions": [h.txn("A", 1, "2023-11-05 10:00", "1"),
                             h.txn("B", 1, "2023-12-05 10:00", "1")]}
    ctx = GroupContext(group=g, as_of=date(2023, 11, 20), config=CONFIG,
                       sources=h.sources(**rows))
    [trace] = trace_group(ctx).targets
    assert trace.excluded.select("_k1", "_reasons").rows() == [
        ("B", ["after_as_of", "outside_windows"])
    ]
