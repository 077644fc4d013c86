"""Hand-computed golden cases for the seed bodies of ../shared/seeds (as in data/groups)."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal as D

import polars as pl

from pipeline.config import Config
from pipeline.definitions.parse import parse_group
from tests.conftest import SEEDS_DIR
from tests.engine_helpers import rows, run, ts, txn


def seed(file: str, config: Config | None = None):
    body = json.loads((SEEDS_DIR / file).read_text())
    parsed = parse_group(body, config=config or Config(leaderboards_enabled=True))
    assert parsed.ok, parsed.errors
    g = parsed.group
    targets = tuple(dataclasses.replace(t, target_id=i + 1) for i, t in enumerate(g.targets))
    return dataclasses.replace(g, group_id=7, targets=targets)


def spin(event_id: str, cust: int, when: str, points: str | None) -> dict:
    return {
        "event_id": event_id,
        "customer_id": cust,
        "event_name": "spinTheWheel",
        "event_time": ts(when),
        "points": None if points is None else D(points),
    }


def test_spin_the_wheel_daily_event_attribute_sum_scores_imported_customers_only():
    g = seed("seed_spin_the_wheel.json")
    events = [
        spin("e1", 1, "2024-10-08T09:00:00", "1"),
        spin("e2", 1, "2024-10-09T09:00:00", "0.5"),
        spin("e3", 1, "2024-10-09T10:00:00", "0.25"),
        spin("e4", 1, "2024-10-09T11:00:00", None),  # counted, adds nothing
        spin("e5", 2, "2024-10-08T09:00:00", "5"),  # not enrolled
    ]
    enrolments = [{"group_name": "  ucctesttarget2 ", "customer_id": 1}]
    res = run([g], "2024-10-10", events=events, enrolments=enrolments)
    assert rows(
        res.tables["target_progress"], "customer_id", "ref_code", "status", "value", "achieved"
    ) == [
        (1, "Cycle_1", "ENDED", D("1"), True),
        (1, "Cycle_2", "ENDED", D("0.75"), False),
        (1, "Cycle_3", "ENDED", D("0"), False),
    ]
    assert res.rewards["ref_code"].to_list() == ["Cycle_1"]


def test_user_created_goal_scores_only_windows_with_the_customers_own_target():
    g = seed("seed_spin_the_wheel_user.json")
    events = [
        spin("e1", 1, "2024-10-08T09:00:00", "1"),
        spin("e2", 1, "2024-10-08T10:00:00", "1.5"),
        spin("e3", 1, "2024-10-09T10:00:00", "9"),
    ]
    enrolments = [
        {"group_name": g.name, "customer_id": 1, "period_ref": "Cycle_1", "target_value": D("2")}
    ]
    res = run([g], "2024-10-11", events=events, enrolments=enrolments)
    tp = res.tables["target_progress"]
    assert rows(tp, "ref_code", "value", "target_value", "achieved") == [
        ("Cycle_1", D("2.5"), D("2"), True)
    ]
    assert tp["achieved_at"][0] == ts("2024-10-08T10:00:00")


def test_leaderboard_seed_counts_transaction_add_and_breaks_ties_by_activity_then_id():
    g = seed("seed_leaderboard_monthly.json")
    bills = [
        txn("a1", 1, "2024-08-21T10:00:00", "10"),
        txn("a2", 1, "2024-08-22T10:00:00", "10"),
        txn("a3", 1, "2024-08-25T10:00:00", "10"),
        txn("b1", 2, "2024-08-21T10:00:00", "10"),
        txn("b2", 2, "2024-08-23T10:00:00", "10"),
        txn("b3", 2, "2024-08-26T10:00:00", "10"),
        txn("c1", 3, "2024-09-01T10:00:00", "10"),
        txn("d1", 4, "2024-08-20T07:00:00", "10"),
        txn("d2", 4, "2024-08-21T07:00:00", "10"),
        txn("d3", 4, "2024-08-25T10:00:00", "10"),  # same count and last activity as customer 1
    ]
    enrolments = [{"group_name": g.name, "customer_id": c} for c in (1, 2, 3, 4, 5)]
    res = run([g], "2024-09-19", transactions=bills, enrolments=enrolments)
    board = res.tables["leaderboard"].sort("rank")
    assert board.select("customer_id", "value", "rank").rows() == [
        (1, D("3"), 1),
        (4, D("3"), 2),
        (2, D("3"), 3),
        (3, D("1"), 4),
    ]
    # Customer 5 is enrolled but has no counted record: a row in progress, none on the board.
    tp = res.tables["target_progress"]
    assert tp.filter(pl.col("customer_id") == 5)["value"].to_list() == [D("0")]
