"""The registry: every error code of SPEC §2.2 blocks registration; ids, periods, legs and the
stored body as the engine and analysts read them back."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline import registry
from pipeline.config import Config
from pipeline.definitions.parse import read_bodies
from pipeline.errors import InputError

GROUPS_DIR = Path(__file__).resolve().parent.parent / "data" / "groups"
UTC = Config()
LEADERBOARDS = Config(leaderboards_enabled=True)


def valid(**changes: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "name": "Spend 100",
        "trackingType": "DEFAULT",
        "frequencyType": "CUSTOM",
        "periods": [
            {"refCode": "P1", "startDate": "2026-01-01", "endDate": "2026-01-31"},
            {"refCode": "P2", "startDate": "2026-02-01", "endDate": "2026-02-28"},
        ],
        "targets": [
            {
                "name": "spend",
                "targetEntity": "TRANSACTION",
                "targetType": "SALES",
                "expression": "currentTxn.value > 10",
                "defaultValues": [{"defaultValue": 100}, {"defaultValue": 100}],
            }
        ],
    }
    b.update(changes)
    return b


def streak(**changes: Any) -> dict[str, Any]:
    return valid(**{"trackingType": "STREAK",
                    "streaks": [{"name": "two", "targetCountOfSequence": 2}], **changes})


def counts(con: duckdb.DuckDBPyConnection) -> tuple[int, ...]:
    tables = ("target_groups", "target_periods", "targets", "streak_levels",
              "target_default_values")
    return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables)


def register(
    con: duckdb.DuckDBPyConnection, *bodies: Any, config: Config = UTC
) -> list[registry.Outcome]:
    items = [(f"test[{i}]", copy.deepcopy(b)) for i, b in enumerate(bodies)]
    return registry.register_bodies(con, items, config=config, as_of=date(2026, 1, 15))


def target(t: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**t, **changes}


def with_target(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(b: dict[str, Any]) -> None:
        b["targets"][0].update(changes)
        for key, value in changes.items():
            if value is None:
                del b["targets"][0][key]

    return edit


def with_group(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(b: dict[str, Any]) -> None:
        b.update(changes)
        for key, value in changes.items():
            if value is None:
                del b[key]

    return edit


def with_periods(*periods: tuple[str, str]) -> Callable[[dict[str, Any]], None]:
    def edit(b: dict[str, Any]) -> None:
        b["periods"] = [{"startDate": s, "endDate": e} for s, e in periods]
        b["targets"][0]["defaultValues"] = [{"defaultValue": 1}] * len(periods)

    return edit


def two_targets(tracking: str, **group: Any) -> Callable[[dict[str, Any]], None]:
    def edit(b: dict[str, Any]) -> None:
        b.update(trackingType=tracking, **group)
        b["targets"].append(target(b["targets"][0], name="visits", targetType="VISIT"))

    return edit


def chain(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(b: dict[str, Any]) -> None:
        for e in edits:
            e(b)

    return edit


def _days(n: int) -> list[str]:
    return [(date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(n)]


def _levels(n: int) -> list[dict[str, Any]]:
    return [{"name": f"L{i}", "targetCountOfSequence": i} for i in range(1, n + 1)]


# (edit of the valid body, config, expected code, expected field path)
ERROR_CASES = [
    pytest.param(with_group(name="x" * 201), UTC, 310008, "name", id="310008 group name"),
    pytest.param(with_target(name="t" * 201), UTC, 310008, "targets[0].name",
                 id="310008 target name"),
    pytest.param(with_group(leaderboardEnabled=True, targetEvaluationType="CYCLIC_WINDOW",
                            frequencyType="MONTHLY", periods=None),
                 LEADERBOARDS, 310132, "targetEvaluationType", id="310132 cyclic leaderboard"),
    pytest.param(two_targets("UNIFIED", leaderboardEnabled=True), LEADERBOARDS, 310132,
                 "trackingType", id="310132 unified leaderboard"),
    pytest.param(with_group(leaderboardEnabled=True), UTC, 310133, "leaderboardEnabled",
                 id="310133 leaderboards off for the org"),
    pytest.param(with_target(targetEntity="EVENT", eventName="AppOpen"), UTC, 310033,
                 "targets[0].targetType", id="310033 EVENT SALES"),
    pytest.param(with_target(targetEntity="REWARDS", targetType="VISIT"), UTC, 310033,
                 "targets[0].targetType", id="310033 REWARDS VISIT"),
    pytest.param(with_target(targetEntity="EVENT", eventName="spin",
                             targetType="EVENT_ATTRIBUTE"),
                 UTC, 310094, "targets[0].extendedFieldInfo.name", id="310094 EVENT_ATTRIBUTE"),
    pytest.param(with_target(targetType="EXTENDED_FIELD", extendedFieldInfo={"name": " "}),
                 UTC, 310094, "targets[0].extendedFieldInfo.name", id="310094 EXTENDED_FIELD"),
    pytest.param(with_group(name=None), UTC, 300004, "name", id="missing name"),
    pytest.param(with_target(targetEntity=None), UTC, 300004, "targets[0].targetEntity",
                 id="missing targetEntity"),
    pytest.param(with_group(targets=None), UTC, 300004, "targets", id="missing targets"),
    pytest.param(with_target(targetType="SALEZ"), UTC, 300004, "targets[0].targetType",
                 id="unknown enum"),
    pytest.param(with_group(targetEvaluationType="ROLLING"), UTC, 300004,
                 "targetEvaluationType", id="unknown evaluation type"),
    pytest.param(with_periods(("2026-02-30", "2026-03-01")), UTC, 300004, "periods[0].startDate",
                 id="bad date"),
    pytest.param(with_periods(("2026-03-01", "2026-02-01")), UTC, 300004, "periods[0].endDate",
                 id="end before start"),
    pytest.param(with_group(fromDate="2026-03-01", toDate="2026-02-01"), UTC, 300004, "toDate",
                 id="toDate before fromDate"),
    pytest.param(with_periods(("2026-01-01", "2026-01-31"), ("2026-01-31", "2026-02-28")), UTC,
                 300004, "periods[1].startDate", id="overlapping periods"),
    pytest.param(with_periods(("2026-02-01", "2026-02-28"), ("2026-01-01", "2026-01-31")), UTC,
                 300004, "periods[1].startDate", id="unordered periods"),
    pytest.param(with_target(expression="currentTxn.value >"), UTC, 300004,
                 "targets[0].expression", id="expression does not parse"),
    pytest.param(with_target(expression="currentShop.id == 1"), UTC, 300004,
                 "targets[0].expression", id="unknown namespace"),
    pytest.param(with_target(expression="sqrt(currentTxn.value) > 1"), UTC, 300004,
                 "targets[0].expression", id="unknown function"),
    pytest.param(with_target(expressionJson='{"arity": "literal", "value": "7"}'), UTC, 300004,
                 "targets[0].expressionJson", id="expressionJson not boolean"),
    pytest.param(with_group(trackingType="STREAK"), UTC, 300004, "streaks",
                 id="streak levels missing"),
    pytest.param(chain(with_group(streaks=[{"name": "a", "targetCountOfSequence": 2},
                                           {"name": "b", "targetCountOfSequence": 2}],
                                  trackingType="STREAK")),
                 UTC, 300004, "streaks[1].targetCountOfSequence",
                 id="streak levels not strictly ascending"),
    pytest.param(with_group(trackingType="STREAK", streaks=_levels(11)), UTC, 300004, "streaks",
                 id="more than 10 streak levels"),
    pytest.param(with_group(trackingType="STREAK", streaks=_levels(1),
                            targetEvaluationType="PERIOD_AGNOSTIC_WINDOW", periods=None),
                 UTC, 300004, "targetEvaluationType", id="streak on PERIOD_AGNOSTIC"),
    pytest.param(two_targets("UNIFIED", userCreated=True), UTC, 300004, "targets",
                 id="userCreated with two targets"),
    pytest.param(with_periods(*[(d, d) for d in _days(101)]), UTC, 300004, "periods",
                 id="more than 100 periods"),
    pytest.param(with_group(periods=None, frequencyType="DAILY", totalPeriods=101,
                            fromDate="2026-01-01"),
                 UTC, 300004, "totalPeriods", id="more than 100 generated periods"),
    pytest.param(with_group(periods=None, targetEvaluationType="CYCLIC_WINDOW",
                            frequencyType="WEEKLY", recurringCycles=101),
                 UTC, 300004, "recurringCycles", id="more than 100 cycles"),
    pytest.param(with_group(periods=None, fromDate="2026-01-01", totalPeriods=2), UTC, 300004,
                 "periods", id="CUSTOM frequency without periods"),
    pytest.param(with_group(trackingType="CAPPING"), UTC, 300004, "targets[0].targetType",
                 id="CAPPING target that is not points"),
    pytest.param(two_targets("UNIFIED", targetEvaluationType="PERIOD_AGNOSTIC_WINDOW",
                             periods=None),
                 UTC, 300004, "targets", id="PERIOD_AGNOSTIC with two targets"),
    pytest.param(with_group(trackingType="UNIFIED"), UTC, 300004, "targets",
                 id="UNIFIED with one target"),
    pytest.param(two_targets("DEFAULT"), UTC, 300004, "targets", id="DEFAULT with two targets"),
    pytest.param(two_targets("UNIFIED", combinationType="ANY", combinationCount=3), UTC, 300004,
                 "combinationCount", id="ANY n above the targets"),
    pytest.param(with_group(timeZoneName="Mars/Olympus"), UTC, 300004, "timeZoneName",
                 id="unknown time zone"),
    pytest.param(with_target(defaultValues=[{"defaultValue": "0.00001"}] * 2), UTC, 300004,
                 "targets[0].defaultValues[0].defaultValue", id="more than 4 decimals"),
    pytest.param(with_group(streakGraceWindows=1), UTC, 300004, "streakGraceWindows",
                 id="grace on a non-streak group"),
]


@pytest.mark.parametrize(("edit", "config", "code", "path"), ERROR_CASES)
def test_error_code_blocks_registration(
    fresh_db: duckdb.DuckDBPyConnection,
    edit: Callable[[dict[str, Any]], None],
    config: Config,
    code: int,
    path: str,
) -> None:
    b = valid()
    edit(b)
    (outcome,) = register(fresh_db, b, config=config)
    errors = outcome.envelope["errors"]
    assert (code, path) in [(e.code, e.path) for e in outcome.parsed.errors], errors
    assert any(e["code"] == code and e["message"].startswith(f"{path}: ") for e in errors)
    assert outcome.envelope["data"] is None
    assert not outcome.registered
    assert counts(fresh_db) == (0, 0, 0, 0, 0)


def test_310069_name_taken_trimmed_and_case_insensitive(
    fresh_db: duckdb.DuckDBPyConnection,
) -> None:
    (first,) = register(fresh_db, valid())
    before = counts(fresh_db)
    (second,) = register(fresh_db, valid(name="  spend 100 "))
    assert first.registered and not second.registered
    assert [(e.code, e.path) for e in second.parsed.errors] == [(310069, "name")]
    assert counts(fresh_db) == before


def test_310069_within_one_batch(fresh_db: duckdb.DuckDBPyConnection) -> None:
    outcomes = register(fresh_db, valid(), valid(name="SPEND 100"))
    assert [o.registered for o in outcomes] == [True, False]
    assert outcomes[1].parsed.errors[0].code == 310069


def test_list_with_one_bad_group_registers_the_good_ones(
    fresh_db: duckdb.DuckDBPyConnection,
) -> None:
    bad = valid(name="bad", trackingType="WEEKLY")
    outcomes = register(fresh_db, valid(name="a"), bad, valid(name="c"))
    assert [o.registered for o in outcomes] == [True, False, True]
    names = fresh_db.execute("SELECT name FROM target_groups ORDER BY group_id").fetchall()
    assert names == [("a",), ("c",)]


def test_warnings_do_not_block_registration(fresh_db: duckdb.DuckDBPyConnection) -> None:
    (outcome,) = register(fresh_db, valid(totalPeriods=9, colour="blue"))
    assert outcome.registered
    assert [w["code"] for w in outcome.envelope["warnings"]] == [390004, 390001]


# --------------------------------------------------------------------------------- stored rows


def test_definition_keeps_the_body_as_given(fresh_db: duckdb.DuckDBPyConnection) -> None:
    b = valid(name=" Spend 100", colour={"r": 1}, trackingType="default")
    b["targets"][0]["defaultValues"] = [{"defaultValue": Decimal("100.50")}] * 2
    register(fresh_db, b)
    ((name, definition),) = fresh_db.execute(
        "SELECT name, definition FROM target_groups").fetchall()
    assert name == "Spend 100"
    assert json.loads(definition, parse_float=Decimal) == b
    assert "100.50" in definition


def test_generated_periods_are_materialised(fresh_db: duckdb.DuckDBPyConnection) -> None:
    b = valid(periods=None, frequencyType="MONTHLY", totalPeriods=3,
              targetCycleStartDate="2024-01-31")
    b["targets"][0]["defaultValues"] = [{"defaultValue": 1}] * 3
    (outcome,) = registry.register_bodies(fresh_db, [("g", b)], config=UTC,
                                          as_of=date(2024, 3, 1))
    assert outcome.registered
    rows = fresh_db.execute(
        "SELECT period_index, ref_code, start_date, end_date, status FROM target_periods "
        "ORDER BY period_index").fetchall()
    assert rows == [
        (1, None, date(2024, 1, 31), date(2024, 2, 28), "ENDED"),
        (2, None, date(2024, 2, 29), date(2024, 3, 30), "RUNNING"),
        (3, None, date(2024, 3, 31), date(2024, 4, 29), "NOT_STARTED"),
    ]


def test_return_bill_leg_is_stored_with_its_parent(fresh_db: duckdb.DuckDBPyConnection) -> None:
    (outcome,) = register(fresh_db, valid())
    rows = fresh_db.execute(
        "SELECT target_id, name, event_name, parent_target_id, expression FROM targets "
        "ORDER BY target_id").fetchall()
    (tid, name, event, parent, expr), (leg_id, leg_name, leg_event, leg_parent, leg_expr) = rows
    assert (name, event, parent) == ("spend", "TransactionAdd", None)
    assert (leg_name, leg_event, leg_parent, leg_expr) == (
        "spend_ReturnBill", "ReturnBill", tid, expr)
    data = outcome.envelope["data"]
    assert [t["id"] for t in data["targets"]] == [tid, leg_id]


def test_ids_are_stable_across_show(fresh_db: duckdb.DuckDBPyConnection) -> None:
    (outcome,) = register(fresh_db, streak())
    first = registry.show_group(fresh_db, "Spend 100", config=UTC, as_of=date(2026, 1, 15))
    again = registry.show_group(fresh_db, str(first["data"]["id"]), config=UTC,
                                as_of=date(2026, 1, 15))
    assert first == again == outcome.envelope
    ids = [first["data"]["id"], *[p["id"] for p in first["data"]["periods"]],
           *[s["id"] for s in first["data"]["streaks"]],
           *[t["id"] for t in first["data"]["targets"]],
           *[v["id"] for t in first["data"]["targets"] for v in t["defaultValues"]]]
    assert None not in ids and len(set(ids)) == len(ids)


def test_show_computes_status_as_of(fresh_db: duckdb.DuckDBPyConnection) -> None:
    register(fresh_db, valid())
    statuses = {
        day: [p["periodStatus"] for p in registry.show_group(
            fresh_db, "spend 100", config=UTC, as_of=day)["data"]["periods"]]
        for day in (date(2025, 12, 31), date(2026, 1, 31), date(2026, 2, 28))
    }
    assert statuses == {
        date(2025, 12, 31): ["NOT_STARTED", "NOT_STARTED"],
        date(2026, 1, 31): ["ENDED", "NOT_STARTED"],
        date(2026, 2, 28): ["ENDED", "ENDED"],
    }


def test_default_values_map_is_keyed_by_period_id(fresh_db: duckdb.DuckDBPyConnection) -> None:
    (outcome,) = register(fresh_db, valid())
    data = outcome.envelope["data"]
    spend = data["targets"][0]
    period_ids = [p["id"] for p in data["periods"]]
    assert [v["periodId"] for v in spend["defaultValues"]] == period_ids
    assert list(spend["targetPeriodDefaultValuesMap"]) == [str(i) for i in period_ids]
    assert spend["enrolmentMethod"] == "IMPORT"


def test_show_unknown_group_says_what_to_do(fresh_db: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(InputError, match="no registered group named 'nope'; see `milestones "
                       "groups list`"):
        registry.show_group(fresh_db, "nope", config=UTC)


# --------------------------------------------------------------------------------- load_groups


def test_load_groups_gives_ids_legs_and_sorted_levels(
    fresh_db: duckdb.DuckDBPyConnection,
) -> None:
    b = streak(streaks=[{"name": "two", "targetCountOfSequence": 2},
                        {"name": "one", "targetCountOfSequence": 1}])
    (outcome,) = register(fresh_db, b)
    (group,) = registry.load_groups(fresh_db, config=UTC)
    data = outcome.envelope["data"]
    assert group.group_id == data["id"]
    assert [p.period_id for p in group.periods] == [p["id"] for p in data["periods"]]
    (t,) = group.targets
    assert (t.target_id, t.return_target_id) == (data["targets"][0]["id"],
                                                 data["targets"][1]["id"])
    assert [(s.name, s.count) for s in group.streak_levels] == [("one", 1), ("two", 2)]
    assert all(s.streak_id for s in group.streak_levels)


def test_load_groups_by_name_and_inactive(fresh_db: duckdb.DuckDBPyConnection) -> None:
    register(fresh_db, valid(name="a"), valid(name="b"))
    gid, name, was_active = registry.deactivate_group(fresh_db, " A ")
    assert (name, was_active) == ("a", True)
    assert registry.deactivate_group(fresh_db, "a")[2] is False
    assert [g.name for g in registry.load_groups(fresh_db, config=UTC)] == ["b"]
    all_groups = registry.load_groups(fresh_db, config=UTC, include_inactive=True)
    assert [(g.name, g.active) for g in all_groups] == [("a", False), ("b", True)]
    b_id = [r["group_id"] for r in registry.list_groups(fresh_db) if r["name"] == "b"]
    assert [g.group_id for g in registry.load_groups(fresh_db, ["B"], config=UTC)] == b_id
    assert gid not in b_id
    with pytest.raises(InputError, match="group 'a' is deactivated"):
        registry.load_groups(fresh_db, ["a"], config=UTC)
    with pytest.raises(InputError, match="no registered group named 'zz'"):
        registry.load_groups(fresh_db, ["zz"], config=UTC)


def test_load_groups_survives_leaderboards_switched_off(
    fresh_db: duckdb.DuckDBPyConnection,
) -> None:
    register(fresh_db, valid(leaderboardEnabled=True), config=LEADERBOARDS)
    (group,) = registry.load_groups(fresh_db, config=UTC)
    assert group.leaderboard_enabled


def test_all_samples_register(fresh_db: duckdb.DuckDBPyConnection) -> None:
    items = [item for p in sorted(GROUPS_DIR.glob("*.json")) for item in read_bodies(p)]
    outcomes = registry.register_bodies(fresh_db, items, config=LEADERBOARDS,
                                        as_of=date(2026, 11, 22))
    assert [o.source for o in outcomes if not o.registered] == []
    groups = registry.load_groups(fresh_db, config=LEADERBOARDS)
    assert len(groups) == len(items) == 9
