"""Group bodies -> typed groups: dates, generated periods, synonyms, warnings, the envelope.

The per-code error cases (each also asserting that nothing was registered) are in
test_registry.py; this file covers what needs no database.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Config
from pipeline.definitions.envelope import envelope, to_json
from pipeline.definitions.model import (
    EnrolmentMethod,
    EvaluationType,
    FrequencyType,
    TargetEntity,
    TrackingType,
)
from pipeline.definitions.parse import ParsedGroup, parse_group, read_bodies
from pipeline.definitions.periods import (
    WindowStatus,
    add_months,
    generate_periods,
    local_date,
    window_status,
)
from pipeline.errors import InputError
from pipeline.rules.tree import TRUE

GROUPS_DIR = Path(__file__).resolve().parent.parent / "data" / "groups"
UTC = Config()
LEADERBOARDS = Config(leaderboards_enabled=True)


def body(**changes: Any) -> dict[str, Any]:
    """A small valid DEFAULT group with two given periods; `changes` override top-level keys."""
    b: dict[str, Any] = {
        "name": "Spend 100",
        "trackingType": "DEFAULT",
        "targetEvaluationType": "FIXED_CALENDAR_WINDOW",
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
                "defaultValues": [{"defaultValue": 100}, {"defaultValue": "150.50"}],
            }
        ],
    }
    b.update(changes)
    return b


def parse(b: Any, config: Config = UTC) -> ParsedGroup:
    return parse_group(copy.deepcopy(b), config=config)


def warnings_of(parsed: ParsedGroup) -> list[tuple[int, str]]:
    return [(w.code, w.path) for w in parsed.warnings]


# --------------------------------------------------------------------------------- periods


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        pytest.param(date(2024, 1, 31), 1, date(2024, 2, 29), id="leap February clamps"),
        pytest.param(date(2023, 1, 31), 1, date(2023, 2, 28), id="plain February clamps"),
        pytest.param(date(2024, 1, 31), 2, date(2024, 3, 31), id="counted from the first start"),
        pytest.param(date(2024, 11, 30), 3, date(2025, 2, 28), id="across the year"),
    ],
)
def test_add_months_clamps_to_the_last_day(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_monthly_periods_from_31_january_follow_spec_example() -> None:
    periods = generate_periods(date(2024, 1, 31), FrequencyType.MONTHLY, 1, 3)
    assert [(p.index, p.start, p.end, p.ref_code) for p in periods] == [
        (1, date(2024, 1, 31), date(2024, 2, 28), None),
        (2, date(2024, 2, 29), date(2024, 3, 30), None),
        (3, date(2024, 3, 31), date(2024, 4, 29), None),
    ]


@pytest.mark.parametrize(
    ("frequency_type", "frequency", "expected_ends"),
    [
        pytest.param(FrequencyType.DAILY, 0, ["2026-03-01", "2026-03-02"], id="daily, 0 means 1"),
        pytest.param(FrequencyType.WEEKLY, 2, ["2026-03-14", "2026-03-28"], id="fortnightly"),
        pytest.param(FrequencyType.QUARTERLY, 1, ["2026-05-31", "2026-08-31"], id="quarterly"),
        pytest.param(FrequencyType.HALF_YEARLY, 1, ["2026-08-31", "2027-02-28"], id="half"),
        pytest.param(FrequencyType.YEARLY, 1, ["2027-02-28", "2028-02-29"], id="yearly"),
    ],
)
def test_generated_periods_are_back_to_back(
    frequency_type: FrequencyType, frequency: int, expected_ends: list[str]
) -> None:
    periods = generate_periods(date(2026, 3, 1), frequency_type, frequency, 2)
    assert [p.end.isoformat() for p in periods] == expected_ends
    assert (periods[1].start - periods[0].end).days == 1


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        pytest.param("2024-10-08T23:30:00Z", "Asia/Kolkata", date(2024, 10, 9), id="Z converted"),
        pytest.param("2024-10-08T23:30:00+05:30", "UTC", date(2024, 10, 8), id="offset converted"),
        pytest.param("2024-10-08T01:00:00+0530", "UTC", date(2024, 10, 7), id="offset no colon"),
        pytest.param("2024-10-08T23:30:00", "Asia/Kolkata", date(2024, 10, 8), id="as written"),
        pytest.param("2024-10-08", "America/New_York", date(2024, 10, 8), id="date only"),
    ],
)
def test_local_date_converts_offsets_to_the_group_zone(
    value: str, zone: str, expected: date
) -> None:
    assert local_date(value, ZoneInfo(zone)) == expected


@pytest.mark.parametrize("value", ["2026-02-30", "20260201", "2026-W01-1", "yesterday", 20260201])
def test_local_date_rejects_what_is_not_an_iso_date(value: object) -> None:
    with pytest.raises(ValueError, match="date"):
        local_date(value, ZoneInfo("UTC"))


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        pytest.param(date(2026, 1, 31), WindowStatus.NOT_STARTED, id="day before start"),
        pytest.param(date(2026, 2, 1), WindowStatus.RUNNING, id="first day"),
        pytest.param(date(2026, 2, 27), WindowStatus.RUNNING, id="day before end"),
        pytest.param(date(2026, 2, 28), WindowStatus.ENDED, id="end date is ENDED"),
    ],
)
def test_window_status_as_of(as_of: date, expected: WindowStatus) -> None:
    assert window_status(date(2026, 2, 1), date(2026, 2, 28), as_of) is expected


def test_fixed_group_without_periods_generates_them() -> None:
    parsed = parse(body(periods=None, frequencyType="monthly", totalPeriods=3,
                        fromDate="2024-01-31T10:00:00Z"))
    assert parsed.errors == ()
    assert parsed.group is not None
    assert [(p.start, p.end) for p in parsed.group.periods] == [
        (date(2024, 1, 31), date(2024, 2, 28)),
        (date(2024, 2, 29), date(2024, 3, 30)),
        (date(2024, 3, 31), date(2024, 4, 29)),
    ]
    assert parsed.group.start_date == date(2024, 1, 31)
    assert parsed.group.end_date == date(2024, 4, 29)  # FIXED: the last period's end


def test_given_period_bounds_use_the_group_zone() -> None:
    parsed = parse(body(timeZoneName="Asia/Kolkata", periods=[
        {"startDate": "2026-01-01T00:00:00+05:30", "endDate": "2026-01-31T20:00:00Z"},
    ], targets=[{**body()["targets"][0], "defaultValues": [{"defaultValue": 1}]}]))
    assert parsed.group is not None
    period = parsed.group.periods[0]
    assert (period.start, period.end, period.ref_code, period.key) == (
        date(2026, 1, 1), date(2026, 2, 1), None, "1")
    assert parsed.group.time_zone == "Asia/Kolkata"


# --------------------------------------------------------------------------------- typed group


def test_valid_body_gives_typed_group() -> None:
    parsed = parse(body())
    assert parsed.errors == () and parsed.warnings == ()
    group = parsed.group
    assert group is not None
    assert group.tracking_type is TrackingType.DEFAULT
    assert group.evaluation_type is EvaluationType.FIXED
    (target,) = group.targets
    assert target.entity is TargetEntity.TRANSACTION
    assert target.default_values == (Decimal(100), Decimal("150.50"))
    assert target.enrolment_method is EnrolmentMethod.IMPORT  # default, as the seeds show
    assert target.event_name == "TransactionAdd"
    assert group.start_date == date(2026, 1, 1) and group.end_date == date(2026, 2, 28)


@pytest.mark.parametrize(
    ("changes", "tracking", "continuous"),
    [
        pytest.param({"trackingType": "streaks"}, TrackingType.STREAK, True, id="STREAKS"),
        pytest.param({"trackingType": "Streak"}, TrackingType.STREAK, True, id="Streak"),
        pytest.param({"trackingType": "non_continuous_streak"}, TrackingType.STREAK, False,
                     id="NON_CONTINUOUS_STREAK"),
        pytest.param({"trackingType": "STREAK", "streakContinuous": False},
                     TrackingType.STREAK, False, id="streakContinuous false"),
    ],
)
def test_streak_synonyms(changes: dict[str, Any], tracking: TrackingType, continuous: bool) -> None:
    parsed = parse(body(streaks=[{"name": "two", "targetCountOfSequence": 2}], **changes))
    assert parsed.group is not None, parsed.errors
    assert parsed.group.tracking_type is tracking
    assert parsed.group.streak_continuous is continuous


def test_points_is_rewards_and_enums_ignore_case() -> None:
    b = body(trackingType="capping", targetEvaluationType="fixed_calendar_window")
    b["targets"][0].update(targetEntity="points", targetType="promotional_points",
                           expression=None, enrolmentMethod="transaction")
    parsed = parse(b)
    assert parsed.group is not None, parsed.errors
    (target,) = parsed.group.targets
    assert target.entity is TargetEntity.REWARDS
    assert target.rule == TRUE
    assert target.enrolment_method is EnrolmentMethod.TRANSACTION


def test_streak_levels_given_unsorted_are_sorted() -> None:
    parsed = parse(body(trackingType="STREAK", streaks=[
        {"name": "two", "targetCountOfSequence": 2},
        {"name": "one", "targetCountOfSequence": 1},
    ]))
    assert parsed.group is not None
    assert [(s.name, s.count) for s in parsed.group.streak_levels] == [("one", 1), ("two", 2)]


def test_inactive_targets_are_kept_but_not_scored() -> None:
    b = body(trackingType="UNIFIED")
    second = {**b["targets"][0], "name": "visits", "targetType": "VISIT"}
    third = {**b["targets"][0], "name": "old", "active": False}
    b["targets"] += [second, third]
    parsed = parse(b)
    assert parsed.group is not None, parsed.errors
    assert [t.name for t in parsed.group.targets] == ["spend", "visits"]
    assert [(d.target.name, d.active) for d in parsed.target_defs] == [
        ("spend", True), ("visits", True), ("old", False)]


def test_every_problem_is_reported_at_once() -> None:
    b = body(trackingType="SOMETIMES", frequency="often")
    b["targets"][0].update(targetType="SALEZ", expression="currentTxn.value >")
    b["periods"][1]["endDate"] = "2025-01-01"
    paths = [e.path for e in parse(b).errors]
    assert paths == ["trackingType", "frequency", "periods[1].endDate",
                     "targets[0].targetType", "targets[0].expression"]


def test_error_message_names_the_field_path() -> None:
    b = body()
    b["targets"][0]["targetType"] = "SALEZ"
    (error,) = parse(b).errors
    assert error.as_dict() == {
        "code": 300004,
        "message": "targets[0].targetType: 'SALEZ' is not one of ALL_POINTS, COUNT, "
        "EVENT_ATTRIBUTE, EXTENDED_FIELD, GROSS_SALES, PROMOTIONAL_POINTS, QUANTITY, "
        "REGULAR_POINTS, SALES, VISIT",
    }


def test_a_non_object_body_is_one_error() -> None:
    parsed = parse(["not", "a", "group"])
    assert [(e.code, e.path) for e in parsed.errors] == [(300004, "")]


# --------------------------------------------------------------------------------- warnings


def test_warning_total_periods_differs_from_periods_given() -> None:
    parsed = parse(body(totalPeriods=4))
    assert parsed.group is not None
    assert warnings_of(parsed) == [(390001, "totalPeriods")]


def test_warning_fewer_default_values_than_windows() -> None:
    b = body()
    b["targets"][0]["defaultValues"] = [{"defaultValue": 100}]
    parsed = parse(b)
    assert parsed.group is not None
    assert warnings_of(parsed) == [(390002, "targets[0].defaultValues")]
    assert parsed.group.targets[0].default_value(2) == Decimal(100)  # the last one repeats


def test_warning_streak_level_longer_than_the_windows() -> None:
    parsed = parse(body(trackingType="STREAK", streaks=[
        {"name": "two", "targetCountOfSequence": 2},
        {"name": "three", "targetCountOfSequence": 3},
    ]))
    assert parsed.group is not None
    assert warnings_of(parsed) == [(390003, "streaks[1].targetCountOfSequence")]


def test_warning_unknown_fields_are_kept() -> None:
    b = body(colour="blue")
    b["targets"][0]["emfRuleSetId"] = 12
    b["periods"][0]["id"] = 7
    parsed = parse(b)
    assert parsed.group is not None
    assert warnings_of(parsed) == [
        (390004, "colour"), (390004, "periods[0].id"), (390004, "targets[0].emfRuleSetId")]
    assert parsed.group.definition["colour"] == "blue"


def test_warning_leading_and_trailing_spaces_in_names() -> None:
    b = body(name="  Spend 100 ")
    b["targets"][0]["name"] = "spend "
    parsed = parse(b)
    assert parsed.group is not None
    assert warnings_of(parsed) == [(390005, "name"), (390005, "targets[0].name")]
    assert parsed.group.name == "Spend 100"
    assert parsed.group.targets[0].name == "spend"


def test_warning_ignored_extra_default_values() -> None:
    b = body()
    b["targets"][0]["defaultValues"].append({"defaultValue": 1})
    parsed = parse(b)
    assert parsed.group is not None
    assert warnings_of(parsed) == [(390006, "targets[0].defaultValues")]


def test_warning_empty_filter_passes_nothing() -> None:
    b = body()
    b["targets"][0]["filters"] = [{"entityType": "store", "entityIds": []}]
    parsed = parse(b)
    assert parsed.group is not None
    assert warnings_of(parsed) == [(390007, "targets[0].filters[0].entityIds")]
    assert parsed.group.targets[0].filters[0].ids == ()


# --------------------------------------------------------------------------------- the seeds


@pytest.mark.parametrize("path", sorted(GROUPS_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_sample_group_validates(path: Path) -> None:
    for _, b in read_bodies(path):
        parsed = parse_group(b, config=LEADERBOARDS)
        assert parsed.errors == (), parsed.errors


def test_streak_seed_warns_about_total_periods_only() -> None:
    ((_, b),) = read_bodies(GROUPS_DIR / "seed_streak.json")
    parsed = parse_group(b, config=UTC)
    assert warnings_of(parsed) == [(390001, "totalPeriods")]


def test_streak_seed_envelope_has_the_return_bill_leg() -> None:
    ((_, b),) = read_bodies(GROUPS_DIR / "seed_streak.json")
    env = envelope(parse_group(b, config=UTC), as_of=date(2023, 11, 18))
    data = env["data"]
    assert [(t["name"], t["eventName"]) for t in data["targets"]] == [
        ("streakTestt123", "TransactionAdd"), ("streakTestt123_ReturnBill", "ReturnBill")]
    leg = data["targets"][1]
    assert leg["expression"] == "currentTxn.value>500"
    assert leg["filters"] == [{"entityType": "STORE", "entityIds": [50679757, 50679770]}]
    assert [v["defaultValue"] for v in leg["defaultValues"]] == [500, 1000]
    assert [p["periodStatus"] for p in data["periods"]] == ["ENDED", "RUNNING"]
    assert (data["targetCycleStartDate"], data["targetCycleEndDate"]) == (
        "2023-11-17T00:00:00.000Z", "2023-11-20T23:59:59.000Z")
    assert env["errors"] is None
    assert env["warnings"] == [{
        "code": 390001,
        "message": "totalPeriods: is 1 but 2 periods are given; the periods given are used",
    }]


def test_no_return_leg_for_counts_and_events() -> None:
    b = body()
    b["targets"][0]["targetType"] = "COUNT"
    data = envelope(parse(b), as_of=date(2026, 1, 1))["data"]
    assert [t["name"] for t in data["targets"]] == ["spend"]


def test_envelope_of_a_bad_body_has_no_data() -> None:
    env = envelope(parse(body(trackingType=None)), as_of=date(2026, 1, 1))
    assert env == {"data": None, "errors": [{"code": 300004, "message": "trackingType: is "
                   "required; one of CAPPING, DEFAULT, NON_CONTINUOUS_STREAK, STREAK, UNIFIED"}],
                   "warnings": None}


def test_to_json_writes_decimals_exactly() -> None:
    text = to_json({"v": [Decimal("0.1"), Decimal("500.000"), Decimal("1E+3")], "s": "é"},
                   indent=None)
    assert text == '{"v": [0.1, 500.000, 1E+3], "s": "é"}'
    assert json.loads(text, parse_float=Decimal)["v"] == [Decimal("0.1"), Decimal("500.000"),
                                                           Decimal("1000")]


# --------------------------------------------------------------------------------- files


def test_read_bodies_labels_list_elements(tmp_path: Path) -> None:
    path = tmp_path / "two.json"
    path.write_text(json.dumps([body(), body(name="other")]), encoding="utf-8")
    assert [label for label, _ in read_bodies(path)] == [f"{path}[0]", f"{path}[1]"]


def test_read_bodies_keeps_numbers_exact(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text('{"name": "x", "v": 0.1}', encoding="utf-8")
    ((_, b),) = read_bodies(path)
    assert b["v"] == Decimal("0.1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"name": "x",\n  "targets": [}', "line 2, column 15", id="malformed"),
        pytest.param("[]", "found an empty list", id="empty list"),
        pytest.param('"a group"', "found str", id="a string"),
        pytest.param('{"v": NaN}', "NaN is not a number", id="NaN"),
    ],
)
def test_read_bodies_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_bodies(path)


# --------------------------------------------------------------------------------- robustness

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=12)
    | st.decimals(allow_nan=False, allow_infinity=False, places=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
_GROUP_KEYS = ["name", "trackingType", "targetEvaluationType", "frequencyType", "frequency",
               "totalPeriods", "recurringCycles", "fromDate", "periods", "targets", "streaks",
               "timeZoneName", "combinationType", "combinationCount", "streakGraceWindows",
               "leaderboardEnabled", "userCreated"]
_TARGET_KEYS = ["name", "targetEntity", "targetType", "eventName", "expression",
                "expressionJson", "filters", "defaultValues", "extendedFieldInfo",
                "enrolmentMethod", "active"]


@settings(max_examples=300, deadline=None)
@given(
    group_edits=st.dictionaries(st.sampled_from(_GROUP_KEYS), _JSON, max_size=3),
    target_edits=st.dictionaries(st.sampled_from(_TARGET_KEYS), _JSON, max_size=3),
)
def test_any_json_gives_problems_never_an_exception(
    group_edits: dict[str, Any], target_edits: dict[str, Any]
) -> None:
    b = body()
    b["targets"][0].update(target_edits)
    b.update(group_edits)
    parsed = parse_group(b, config=LEADERBOARDS)
    assert parsed.ok == (parsed.group is not None)
    assert all(p.code in (310008, 310132, 310033, 310094, 300004) for p in parsed.errors)
    if parsed.ok:
        envelope(parsed, as_of=date(2026, 1, 1))
