"""Hand-computed golden cases for the reference evaluator, one (or more) per SPEC rule.

Why: the property tests trust `tests/reference.py` as the oracle for the engine, so the oracle
itself is pinned to numbers worked out by hand from SPEC §5–§8, §13 and §14. Rules are built from
`pipeline.rules.tree` nodes by hand so these tests do not depend on the parser.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from pipeline.rules.tree import Binary, Call, Literal, Name, Unary
from tests.reference import evaluate

Q1 = [
    {"refCode": "P1", "startDate": "2024-01-01", "endDate": "2024-01-31"},
    {"refCode": "P2", "startDate": "2024-02-01", "endDate": "2024-02-29"},
    {"refCode": "P3", "startDate": "2024-03-01", "endDate": "2024-03-31"},
]


def D(value: Any) -> Decimal:
    return Decimal(str(value))


def at(text: str, tz: Any = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def target(
    name: str = "spend",
    entity: str = "TRANSACTION",
    type_: str = "SALES",
    defaults: tuple = (100,),
    method: str = "TRANSACTION",
    rule: Any = None,
    **extra: Any,
) -> dict:
    body = {
        "name": name,
        "targetEntity": entity,
        "targetType": type_,
        "enrolmentMethod": method,
        "defaultValues": [{"defaultValue": v} for v in defaults],
        **extra,
    }
    if rule is not None:
        body["expressionJson"] = rule  # a tree node: the reference uses it as is
    return body


def group(*targets: dict, name: str = "G", tracking: str = "DEFAULT", **extra: Any) -> dict:
    body = {"name": name, "trackingType": tracking, "targets": list(targets) or [target()]}
    if "periods" not in extra and extra.get("targetEvaluationType") is None:
        body["periods"] = Q1
    body.update(extra)
    return body


def txn(txn_id: str, customer: Any, when: str, amount: Any, **extra: Any) -> dict:
    row = {"txn_id": txn_id, "customer_id": customer, "txn_time": at(when), "amount": D(amount)}
    return {**row, **extra}


def ret(txn_id: str, customer: Any, when: str, amount: Any, parent: Any = None, **extra) -> dict:
    return txn(txn_id, customer, when, amount, type="RETURN", parent_txn_id=parent, **extra)


def line(txn_id: str, no: int, qty: Any, amount: Any, **extra: Any) -> dict:
    return {"txn_id": txn_id, "line_no": no, "qty": D(qty), "amount": D(amount), **extra}


def run(bodies: dict | list, as_of: date, config: dict | None = None, **records: Any) -> dict:
    return evaluate(bodies if isinstance(bodies, list) else [bodies], records, as_of, config)


def rows(out: dict, table: str, **match: Any) -> list[dict]:
    return [r for r in out[table] if all(r.get(k) == v for k, v in match.items())]


def one(out: dict, table: str, **match: Any) -> dict:
    found = rows(out, table, **match)
    assert len(found) == 1, found
    return found[0]


def values(out: dict, **match: Any) -> dict:
    """(target, period_index) -> value of target_progress rows."""
    return {
        (r["target"], r["period_index"]): r["value"] for r in rows(out, "target_progress", **match)
    }


def col(ns: str, column: str) -> Name:
    return Name(ns, column)


def txn_gt(column: str, number: Any) -> Binary:
    return Binary(">", Name("currentTxn", column), Literal(D(number)))


def eq(left: Any, right: Any) -> Binary:
    return Binary("==", left, right)


# --------------------------------------------------------------------------------------------
# §5 Windows
# --------------------------------------------------------------------------------------------


def test_fixed_window_status_as_of_d_and_only_started_windows_get_rows() -> None:
    records = {"transactions": [txn("T1", 1, "2024-01-05T10:00", 10)]}
    out = run(group(), date(2024, 2, 29), **records)
    got = [(r["ref_code"], r["status"]) for r in out["target_progress"]]
    assert got == [("P1", "ENDED"), ("P2", "ENDED")]  # a window whose end is D is ENDED
    out = run(group(), date(2024, 2, 15), **records)
    p2 = one(out, "target_progress", period_index=2)
    assert p2["status"] == "RUNNING"
    assert p2["window_start"] == datetime(2024, 2, 1)
    assert p2["window_end"] == datetime(2024, 2, 29, 23, 59, 59, 999999)


def test_generated_monthly_periods_clamp_from_the_first_start() -> None:
    body = group(
        periods=[], targetCycleStartDate="2024-01-31", frequencyType="MONTHLY", totalPeriods=3
    )
    body.pop("periods")
    out = run(body, date(2024, 5, 1), transactions=[txn("T1", 1, "2024-02-01T10:00", 5)])
    got = [(r["ref_code"], r["window_start"].date(), r["window_end"].date()) for r in
           out["target_progress"]]  # fmt: skip
    assert got == [
        (None, date(2024, 1, 31), date(2024, 2, 28)),
        (None, date(2024, 2, 29), date(2024, 3, 30)),
        (None, date(2024, 3, 31), date(2024, 4, 29)),
    ]
    assert values(out) == {("spend", 1): D(5), ("spend", 2): D(0), ("spend", 3): D(0)}


def test_period_bound_with_offset_is_converted_to_the_group_zone() -> None:
    periods = [
        # 20:00Z is 01:30 the next day in Kolkata; 18:00Z on 29 Feb is 23:30 the same day.
        {"refCode": "A", "startDate": "2024-01-31T20:00:00Z", "endDate": "2024-02-29T18:00:00Z"},
        {"refCode": "B", "startDate": "2024-03-01T00:00:00", "endDate": "2024-03-31T23:59:59"},
    ]
    out = run(
        group(periods=periods, timeZoneName="Asia/Kolkata"),
        date(2024, 3, 5),
        transactions=[txn("T1", 1, "2024-01-31T19:00", 7)],  # 00:30 on 1 Feb in Kolkata
    )
    a, b = out["target_progress"]
    assert (a["window_start"], a["window_end"].date()) == (datetime(2024, 2, 1), date(2024, 2, 29))
    assert b["window_start"] == datetime(2024, 3, 1)
    assert a["value"] == D(7)


def test_record_belongs_to_the_window_holding_its_local_timestamp() -> None:
    # 03:00Z on 1 Feb is 22:00 on 31 Jan in New York.
    out = run(
        group(timeZoneName="America/New_York"),
        date(2024, 2, 10),
        transactions=[txn("T1", 1, "2024-02-01T03:00", 40)],
    )
    assert values(out) == {("spend", 1): D(40), ("spend", 2): D(0)}


def test_records_after_the_end_of_d_in_the_group_zone_are_ignored() -> None:
    out = run(
        group(timeZoneName="Asia/Tokyo"),
        date(2024, 1, 10),
        transactions=[
            txn("T1", 1, "2024-01-10T14:00", 10),  # 23:00 on 10 Jan in Tokyo: counts
            txn("T2", 1, "2024-01-10T16:00", 20),  # 01:00 on 11 Jan in Tokyo: after D
        ],
    )
    assert values(out) == {("spend", 1): D(10)}


def test_target_value_repeats_the_last_default_value() -> None:
    body = group(target(defaults=(100, 200)))
    out = run(body, date(2024, 3, 10), transactions=[txn("T1", 1, "2024-01-05T10:00", 1)])
    got = [r["target_value"] for r in out["target_progress"]]
    assert got == [D(100), D(200), D(200)]


def cyclic(**extra: Any) -> dict:
    body = group(
        target(rule=txn_gt("amount", 5)),
        targetEvaluationType="CYCLIC_WINDOW",
        frequencyType="WEEKLY",
        frequency=1,
        fromDate="2024-01-01",
        **extra,
    )
    return body


def test_cyclic_window_starts_per_customer_at_first_qualifying_record() -> None:
    out = run(
        cyclic(recurringCycles=3),
        date(2024, 1, 20),
        transactions=[
            txn("T0", 1, "2023-12-30T10:00", 50),  # before the group start: opens nothing
            txn("T1", 1, "2024-01-02T10:00", 3),  # fails the rule: opens nothing
            txn("T2", 1, "2024-01-03T10:00", 10),
            txn("T3", 2, "2024-01-10T10:00", 20),
        ],
    )
    c1 = [(r["window_start"].date(), r["window_end"].date(), r["status"], r["ref_code"])
          for r in rows(out, "target_progress", customer_id=1)]  # fmt: skip
    assert c1 == [
        (date(2024, 1, 3), date(2024, 1, 9), "ENDED", None),
        (date(2024, 1, 10), date(2024, 1, 16), "ENDED", None),
        (date(2024, 1, 17), date(2024, 1, 23), "RUNNING", None),
    ]
    c2 = [r["window_start"].date() for r in rows(out, "target_progress", customer_id=2)]
    assert c2 == [date(2024, 1, 10), date(2024, 1, 17)]
    assert values(out, customer_id=1) == {("spend", 1): D(10), ("spend", 2): 0, ("spend", 3): 0}


def test_cyclic_cycle_count_and_no_cycle_starts_after_the_group_end() -> None:
    records = {"transactions": [txn("T1", 1, "2024-01-03T10:00", 10)]}
    out = run(cyclic(recurringCycles=5, toDate="2024-01-12"), date(2024, 3, 1), **records)
    got = [(r["period_index"], r["window_end"].date()) for r in out["target_progress"]]
    assert got == [(1, date(2024, 1, 9)), (2, date(2024, 1, 16))]  # not cut at 12 Jan
    out = run(cyclic(recurringCycles=0, totalPeriods=2), date(2024, 3, 1), **records)
    assert len(out["target_progress"]) == 2
    out = run(cyclic(), date(2024, 3, 1), **records)
    assert len(out["target_progress"]) == 1


def agnostic(*targets: dict, **extra: Any) -> dict:
    return group(*(targets or [target()]), targetEvaluationType="PERIOD_AGNOSTIC_WINDOW", **extra)


def test_period_agnostic_cycle_closes_at_the_reaching_record_and_excess_does_not_carry() -> None:
    out = run(
        agnostic(),
        date(2024, 1, 10),
        transactions=[
            txn("T1", 1, "2024-01-01T10:00", 60),
            txn("T2", 1, "2024-01-02T11:00", 70),
            txn("T3", 1, "2024-01-03T12:00", 30),
            txn("T4", 1, "2024-01-04T13:00", 20),
        ],
    )
    c1, c2 = out["target_progress"]
    assert (c1["value"], c1["status"], c1["achieved"]) == (D(130), "ENDED", True)
    assert (c1["window_start"], c1["window_end"]) == (
        datetime(2024, 1, 1, 10),
        datetime(2024, 1, 2, 11),
    )
    assert c1["achieved_at"] == at("2024-01-02T11:00")
    assert (c2["value"], c2["status"], c2["window_end"], c2["achieved"]) == (
        D(50), "RUNNING", None, False,
    )  # fmt: skip
    assert c2["window_start"] == datetime(2024, 1, 3, 12)
    assert [(r["kind"], r["period_index"]) for r in out["rewards"]] == [("TARGET_ACHIEVED", 1)]


def test_period_agnostic_ties_in_time_are_broken_by_record_key() -> None:
    same = "2024-01-05T10:00"
    out = run(
        agnostic(),
        date(2024, 1, 10),
        transactions=[txn("C", 1, same, 40), txn("B", 1, same, 50), txn("A", 1, same, 60)],
    )
    assert [r["value"] for r in out["target_progress"]] == [D(110), D(40)]


def test_period_agnostic_holds_at_most_recurring_cycles() -> None:
    out = run(
        agnostic(recurringCycles=1),
        date(2024, 1, 10),
        transactions=[txn("T1", 1, "2024-01-01T10:00", 100), txn("T2", 1, "2024-01-02T10", 100)],
    )
    (only,) = out["target_progress"]
    assert (only["value"], only["last_activity_at"]) == (D(100), at("2024-01-01T10:00"))


def test_period_agnostic_records_outside_the_group_dates_do_not_count() -> None:
    out = run(
        agnostic(fromDate="2024-01-05", toDate="2024-01-20"),
        date(2024, 2, 1),
        transactions=[
            txn("T1", 1, "2024-01-04T10:00", 30),
            txn("T2", 1, "2024-01-06T10:00", 40),
            txn("T3", 1, "2024-01-21T10:00", 90),
        ],
    )
    (only,) = out["target_progress"]
    assert (only["value"], only["window_start"]) == (D(40), datetime(2024, 1, 6, 10))


# --------------------------------------------------------------------------------------------
# §6.1 Measures, filters, aggregate windows, balances
# --------------------------------------------------------------------------------------------


def unified(*targets: dict, **extra: Any) -> dict:
    return group(*targets, tracking="UNIFIED", **extra)


def test_transaction_sales_gross_sales_and_quantity() -> None:
    body = unified(
        target("sales"), target("gross", type_="GROSS_SALES"), target("qty", type_="QUANTITY")
    )
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 90, gross_amount=D(100), qty=D(3)),
            txn("T2", 1, "2024-01-06T10:00", 10),  # gross defaults to amount, no qty: adds 0
        ],
    )
    assert values(out) == {("sales", 1): D(100), ("gross", 1): D(110), ("qty", 1): D(3)}


def test_transaction_quantity_falls_back_to_its_line_items_qty() -> None:
    out = run(
        group(target(type_="QUANTITY")),
        date(2024, 1, 31),
        transactions=[txn("T1", 1, "2024-01-05T10:00", 90)],
        line_items=[line("T1", 1, 2, 40), line("T1", 2, 3, 50)],
    )
    assert values(out) == {("spend", 1): D(5)}


def test_count_counts_bills_and_visit_counts_distinct_local_dates() -> None:
    body = unified(
        target("count", type_="COUNT", defaults=(3,)),
        target("visit", type_="VISIT", defaults=(3,)),
        timeZoneName="Europe/Berlin",
    )
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 1),
            txn("T2", 1, "2024-01-05T22:30", 1),  # 23:30 on 5 Jan in Berlin
            txn("T3", 1, "2024-01-05T23:30", 1),  # 00:30 on 6 Jan in Berlin
        ],
    )
    assert values(out) == {("count", 1): D(3), ("visit", 1): D(2)}
    pa = one(out, "period_achievements")
    assert (pa["achieved"], pa["targets_achieved"], pa["targets_total"]) == (False, 1, 2)


def test_lineitem_measures_sum_qualifying_lines_and_count_distinct_bills() -> None:
    code_a = eq(col("currentLineItem", "item_code"), Literal("A"))
    body = unified(
        target("sales", "LINEITEM", "SALES", rule=code_a),
        target("gross", "LINEITEM", "GROSS_SALES", rule=code_a),
        target("qty", "LINEITEM", "QUANTITY", rule=code_a),
        target("bills", "LINEITEM", "COUNT", rule=code_a),
        target("visits", "LINEITEM", "VISIT", rule=code_a),
    )
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 130),
            txn("T2", 1, "2024-01-05T12:00", 5),
            txn("T3", 1, "2024-01-09T12:00", 50),  # no line with code A
        ],
        line_items=[
            line("T1", 1, 2, 20, item_code="A", value=D(25)),
            line("T1", 2, 1, 100, item_code="B"),
            line("T1", 3, 1, 10, item_code="A"),  # value defaults to amount
            line("T2", 1, 1, 5, item_code="A", value=D(6)),
            line("T3", 1, 1, 50, item_code="B"),
        ],
    )
    assert values(out) == {
        ("sales", 1): D(35),
        ("gross", 1): D(41),
        ("qty", 1): D(4),
        ("bills", 1): D(2),
        ("visits", 1): D(1),
    }


def test_lineitem_extended_field_reads_the_line_column_else_the_transaction_column() -> None:
    body = group(target("pts", "LINEITEM", "EXTENDED_FIELD", extendedFieldInfo={"name": "bonus"}))
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[txn("T1", 1, "2024-01-05T10:00", 30, bonus=D(7))],
        line_items=[line("T1", 1, 1, 10, bonus=D(2)), line("T1", 2, 1, 20)],
    )
    assert values(out) == {("pts", 1): D(9)}


def test_event_count_matches_event_name_and_event_attribute_sums_the_attribute() -> None:
    body = unified(
        target("spins", "EVENT", "COUNT", eventName="spin"),
        target("points", "EVENT", "EVENT_ATTRIBUTE", eventName="spin",
               extendedFieldInfo={"name": "points", "aggregateFunction": "SUM"}),
    )  # fmt: skip
    out = run(
        body,
        date(2024, 1, 31),
        events=[
            {"event_id": "e1", "customer_id": 1, "event_name": "spin",
             "event_time": at("2024-01-02T10:00"), "attrs": {"points": D(5)}},
            {"event_id": "e2", "customer_id": 1, "event_name": "spin",
             "event_time": at("2024-01-03T10:00"), "points": D(7)},
            {"event_id": "e3", "customer_id": 1, "event_name": "other",
             "event_time": at("2024-01-03T10:00"), "points": D(100)},
        ],
    )  # fmt: skip
    assert values(out) == {("spins", 1): D(2), ("points", 1): D(12)}


def test_transaction_add_event_counts_regular_bills_and_return_bill_counts_returns() -> None:
    body = unified(
        target("adds", "EVENT", "COUNT", eventName="TransactionAdd"),
        target("returns", "EVENT", "COUNT", eventName="ReturnBill"),
        target("spent", "EVENT", "EVENT_ATTRIBUTE", eventName="TransactionAdd",
               extendedFieldInfo={"name": "amount"}),
    )  # fmt: skip
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 30),
            txn("T2", 1, "2024-01-06T10:00", 20),
            ret("R1", 1, "2024-01-07T10:00", -5, parent="T1"),
        ],
    )
    assert values(out) == {("adds", 1): D(2), ("returns", 1): D(1), ("spent", 1): D(50)}


def test_extended_field_count_counts_non_null_values() -> None:
    body = group(
        target("carts", type_="EXTENDED_FIELD",
               extendedFieldInfo={"name": "cartId", "aggregateFunction": "COUNT"}),
    )  # fmt: skip
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 1, cartId="x"),
            txn("T2", 1, "2024-01-06T10:00", 1, cartId=None),
            txn("T3", 1, "2024-01-07T10:00", 1),
        ],
    )
    assert values(out) == {("carts", 1): D(1)}


def test_counted_record_with_a_null_measured_attribute_adds_nothing_but_counts() -> None:
    body = group(target("bonus", type_="EXTENDED_FIELD", extendedFieldInfo={"name": "bonus"}))
    out = run(body, date(2024, 1, 31), transactions=[txn("T1", 1, "2024-01-05T10:00", 10)])
    row = one(out, "target_progress")
    assert (row["value"], row["last_activity_at"]) == (D(0), at("2024-01-05T10:00"))


def test_points_targets_sum_points_of_their_type() -> None:
    body = unified(
        target("regular", "REWARDS", "REGULAR_POINTS"),
        target("promo", "POINTS", "PROMOTIONAL_POINTS"),  # POINTS is a synonym of REWARDS
        target("all", "REWARDS", "ALL_POINTS"),
    )
    pts = [
        ("p1", "REGULAR", 10),
        ("p2", "PROMOTIONAL", 5),
        ("p3", "regular", 3),
    ]
    out = run(
        body,
        date(2024, 1, 31),
        points=[
            {"points_id": i, "customer_id": 1, "awarded_at": at("2024-01-05T10:00"),
             "points": D(n), "points_type": kind}
            for i, kind, n in pts
        ],
    )  # fmt: skip
    assert values(out) == {("regular", 1): D(13), ("promo", 1): D(5), ("all", 1): D(18)}


def test_store_zone_and_concept_filters_and_a_record_without_store_fails() -> None:
    def f(kind: str, *ids: Any) -> list[dict]:
        return [{"entityType": kind, "entityIds": list(ids)}]

    body = unified(
        target("store", filters=f("STORE", "S1")),
        target("zone", filters=f("ZONE", "Z2")),
        target("concept", filters=f("CONCEPT", "C1")),
        target("nothing", filters=f("STORE")),  # an empty entityIds list passes nothing
        target("numeric", filters=f("STORE", 7)),  # ids compared as text
    )
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 10, store_id="S1"),
            txn("T2", 1, "2024-01-05T11:00", 20, store_id="S2"),
            txn("T3", 1, "2024-01-05T12:00", 40),  # no store: fails every filter
            txn("T4", 1, "2024-01-05T13:00", 80, store_id="7"),
        ],
        stores=[
            {"store_id": "S1", "zone_id": "Z1", "concept_id": "C1"},
            {"store_id": "S2", "zone_id": "Z2", "concept_id": "C1"},
            {"store_id": 7, "zone_id": "Z3", "concept_id": "C2"},
        ],
    )
    assert values(out) == {
        ("store", 1): D(10),
        ("zone", 1): D(20),
        ("concept", 1): D(30),
        ("nothing", 1): D(0),
        ("numeric", 1): D(80),
    }


def steps(kind: str, days: int, target_value: int = 100) -> dict:
    info = {
        "name": "steps",
        "aggregateWindow": {"windowType": kind, "windowTimeUnit": "DAY", "windowValue": days},
    }
    return target(
        "steps", "EVENT", "EVENT_ATTRIBUTE", defaults=(target_value,), eventName="walk",
        extendedFieldInfo=info,
    )  # fmt: skip


def walks(*pairs: tuple[str, int], customer: Any = 1) -> list[dict]:
    return [
        {"event_id": f"{customer}-{k}", "customer_id": customer, "event_name": "walk",
         "event_time": at(when), "steps": D(n)}
        for k, (when, n) in enumerate(pairs)
    ]  # fmt: skip


def test_aggregate_window_max_sums_the_highest_value_of_each_block() -> None:
    events = walks(
        ("2024-01-01T08:00", 5),
        ("2024-01-01T09:00", 8),
        ("2024-01-02T09:00", 3),
        ("2024-01-03T09:00", 4),
    )
    out = run(group(steps("MAX", 1)), date(2024, 1, 31), events=events)
    assert values(out) == {("steps", 1): D(15)}  # 8 + 3 + 4
    out = run(group(steps("MAX", 2)), date(2024, 1, 31), events=events)
    assert values(out) == {("steps", 1): D(12)}  # blocks 1-2 Jan: 8, 3-4 Jan: 4


def test_aggregate_window_min_running_value_can_fall_achieved_uses_the_final_value() -> None:
    events = walks(
        ("2024-01-01T10:00", 12), ("2024-01-01T11:00", 4), ("2024-01-02T10:00", 7)
    ) + walks(("2024-01-01T10:00", 12), ("2024-01-01T11:00", 4), customer=2)
    out = run(group(steps("MIN", 1, target_value=10)), date(2024, 1, 31), events=events)
    c1 = one(out, "target_progress", customer_id=1)
    assert (c1["value"], c1["achieved"]) == (D(11), True)
    assert c1["achieved_at"] == at("2024-01-01T10:00")  # first reached, then fell, then back
    c2 = one(out, "target_progress", customer_id=2)
    assert (c2["value"], c2["achieved"], c2["achieved_at"]) == (D(4), False, None)


def test_achieved_at_is_the_record_at_which_the_running_value_first_reached_the_target() -> None:
    out = run(
        group(),
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-03T10:00", 60),
            txn("T2", 1, "2024-01-05T10:00", 50),
            txn("T3", 1, "2024-01-07T10:00", 30),
        ],
    )
    row = one(out, "target_progress")
    assert (row["value"], row["achieved"]) == (D(140), True)
    assert row["achieved_at"] == at("2024-01-05T10:00")
    assert row["last_activity_at"] == at("2024-01-07T10:00")


def enrol(customer: Any, group_name: str = "G", **extra: Any) -> dict:
    return {"group_name": group_name, "customer_id": customer, **extra}


def test_initial_balance_is_added_and_achieved_at_is_null_when_the_balance_reaches() -> None:
    out = run(
        group(target(method="IMPORT")),
        date(2024, 1, 31),
        transactions=[txn("T1", 1, "2024-01-05T10:00", 5), txn("T2", 2, "2024-01-05T10", 70)],
        enrolments=[enrol(1, initial_balance=D(100)), enrol(2, initial_balance=D(40))],
    )
    c1 = one(out, "target_progress", customer_id=1)
    assert (c1["value"], c1["achieved"], c1["achieved_at"]) == (D(105), True, None)
    c2 = one(out, "target_progress", customer_id=2)
    assert (c2["value"], c2["achieved_at"]) == (D(110), at("2024-01-05T10:00"))


# --------------------------------------------------------------------------------------------
# §6.2 / §6.3 / §13 Returns
# --------------------------------------------------------------------------------------------


def test_original_mode_late_return_reduces_the_bill_window_and_unachieves_it() -> None:
    records = {
        "transactions": [
            txn("T1", 1, "2024-01-10T10:00", 120),
            ret("R1", 1, "2024-02-03T10:00", -30, parent="T1"),
        ]
    }
    before = run(group(), date(2024, 1, 31), **records)
    assert [r["kind"] for r in before["rewards"]] == ["TARGET_ACHIEVED"]  # rewarded at once
    out = run(group(), date(2024, 2, 10), **records)
    p1 = one(out, "target_progress", period_index=1)
    assert (p1["value"], p1["achieved"], p1["achieved_at"]) == (D(90), False, None)
    assert p1["last_activity_at"] == at("2024-02-03T10:00")  # outside the window's dates
    assert one(out, "target_progress", period_index=2)["value"] == D(0)
    assert out["rewards"] == []


def test_carry_mode_return_in_same_window_reduces_next_window() -> None:
    records = {
        "transactions": [
            txn("T1", 1, "2024-01-10T10:00", 120),
            ret("R1", 1, "2024-01-20T10:00", 30, parent="T1"),
        ]
    }
    out = run(group(), date(2024, 2, 10), {"returns_mode": "carry"}, **records)
    p1 = one(out, "target_progress", period_index=1)
    assert (p1["value"], p1["achieved"]) == (D(120), True)
    p2 = one(out, "target_progress", period_index=2)
    assert (p2["value"], p2["last_activity_at"]) == (D(-30), at("2024-01-20T10:00"))


def test_carry_mode_return_without_a_next_started_window_has_no_effect_yet() -> None:
    records = {
        "transactions": [
            txn("T1", 1, "2024-01-10T10:00", 120),
            ret("R1", 1, "2024-01-20T10:00", 30, parent="T1"),
        ]
    }
    out = run(group(), date(2024, 1, 25), {"returns_mode": "carry"}, **records)
    (p1,) = out["target_progress"]
    assert (p1["value"], p1["last_activity_at"]) == (D(120), at("2024-01-10T10:00"))


def test_carry_mode_return_dated_between_periods_goes_to_the_first_window_after_it() -> None:
    periods = [
        {"refCode": "A", "startDate": "2024-01-01", "endDate": "2024-01-10"},
        {"refCode": "B", "startDate": "2024-01-21", "endDate": "2024-01-31"},
    ]
    out = run(
        group(periods=periods),
        date(2024, 1, 31),
        {"returns_mode": "carry"},
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 50),
            ret("R1", 1, "2024-01-15T10:00", -20, parent="T1"),
        ],
    )
    assert values(out) == {("spend", 1): D(50), ("spend", 2): D(-20)}


def test_ignore_mode_returns_change_nothing() -> None:
    out = run(
        group(),
        date(2024, 2, 10),
        {"returns_mode": "ignore"},
        transactions=[
            txn("T1", 1, "2024-01-10T10:00", 120),
            ret("R1", 1, "2024-01-20T10:00", 30, parent="T1"),
        ],
    )
    p1 = one(out, "target_progress", period_index=1)
    assert (p1["value"], p1["last_activity_at"]) == (D(120), at("2024-01-10T10:00"))


def test_count_and_visit_are_never_reduced_by_returns() -> None:
    body = unified(
        target("count", type_="COUNT", defaults=(1,)), target("visit", type_="VISIT", defaults=(1,))
    )
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-10T10:00", 120),
            ret("R1", 1, "2024-01-20T10:00", 120, parent="T1"),
        ],
    )
    assert values(out) == {("count", 1): D(1), ("visit", 1): D(1)}
    assert {r["last_activity_at"] for r in out["target_progress"]} == {at("2024-01-10T10:00")}


def test_return_counts_only_when_its_parent_bill_counted_for_the_target() -> None:
    body = group(target(rule=txn_gt("amount", 50), filters=[{"entityType": "STORE",
                                                              "entityIds": ["S1"]}]))  # fmt: skip
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 40, store_id="S1"),  # fails the rule
            txn("T2", 1, "2024-01-06T10:00", 100, store_id="S1"),
            ret("R1", 1, "2024-01-07T10:00", -40, parent="T1"),  # parent did not count
            # Its own store and rule do not matter: the parent counted.
            ret("R2", 1, "2024-01-08T10:00", -10, parent="T2", store_id="S9"),
        ],
    )
    row = one(out, "target_progress")
    assert (row["value"], row["last_activity_at"]) == (D(90), at("2024-01-08T10:00"))


def test_parentless_return_uses_its_own_rule_and_filters_and_reduces_its_own_window() -> None:
    body = group(target(filters=[{"entityType": "STORE", "entityIds": ["S1"]}]))
    out = run(
        body,
        date(2024, 2, 10),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 100, store_id="S1"),
            ret("R1", 1, "2024-02-03T10:00", -15, store_id="S1"),
            ret("R2", 1, "2024-02-04T10:00", -20, parent="UNKNOWN", store_id="S2"),
        ],
    )
    assert values(out) == {("spend", 1): D(100), ("spend", 2): D(-15)}


def test_return_reduces_by_its_absolute_amount_whatever_the_sign() -> None:
    out = run(
        group(),
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 100),
            ret("R1", 1, "2024-01-06T10:00", -10, parent="T1"),
            ret("R2", 1, "2024-01-07T10:00", 10, parent="T1"),
        ],
    )
    assert values(out) == {("spend", 1): D(80)}


def test_return_quantity_is_its_qty_else_its_line_items_qty_else_zero() -> None:
    out = run(
        group(target(type_="QUANTITY")),
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 100, qty=D(10)),
            ret("R1", 1, "2024-01-06T10:00", -10, parent="T1", qty=D(-2)),
            ret("R2", 1, "2024-01-07T10:00", -10, parent="T1"),
            ret("R3", 1, "2024-01-08T10:00", -10, parent="T1"),
        ],
        line_items=[line("R2", 1, -1, -5), line("R2", 2, -1, -5)],
    )
    row = one(out, "target_progress")
    assert (row["value"], row["last_activity_at"]) == (D(6), at("2024-01-08T10:00"))


def test_lineitem_returned_line_reduces_when_the_bill_had_a_counted_line_and_it_passes() -> None:
    code_a = eq(col("currentLineItem", "item_code"), Literal("A"))
    out = run(
        group(target(entity="LINEITEM", rule=code_a)),
        date(2024, 1, 31),
        transactions=[
            txn("T1", 1, "2024-01-05T10:00", 80),
            txn("T2", 1, "2024-01-05T11:00", 40),
            ret("R1", 1, "2024-01-06T10:00", -30, parent="T1"),
            ret("R2", 1, "2024-01-06T11:00", -5, parent="T2"),  # T2 had no counted line
            ret("R3", 1, "2024-01-06T12:00", -9, parent="T1"),  # no line items: no effect
        ],
        line_items=[
            line("T1", 1, 1, 50, item_code="A"),
            line("T1", 2, 1, 30, item_code="B"),
            line("T2", 1, 1, 40, item_code="B"),
            line("R1", 1, 1, -20, item_code="A"),
            line("R1", 2, 1, -10, item_code="B"),  # fails the rule
            line("R2", 1, 1, -5, item_code="A"),
        ],
    )
    row = one(out, "target_progress")
    assert (row["value"], row["last_activity_at"]) == (D(30), at("2024-01-06T10:00"))


def test_period_agnostic_return_applies_at_its_own_time_and_is_dropped_with_no_open_cycle() -> None:
    out = run(
        agnostic(),
        date(2024, 1, 31),
        {"returns_mode": "original"},
        transactions=[
            txn("T1", 1, "2024-01-01T10:00", 120),
            ret("R1", 1, "2024-01-02T10:00", -50, parent="T1"),  # no cycle open: dropped
            txn("T2", 1, "2024-01-03T10:00", 30),
            ret("R2", 1, "2024-01-04T10:00", -10, parent="T2"),
        ],
    )
    assert [r["value"] for r in out["target_progress"]] == [D(120), D(20)]


def test_return_never_enrols_a_customer() -> None:
    out = run(
        group(),
        date(2024, 1, 31),
        transactions=[ret("R1", 2, "2024-01-06T10:00", -5)],
    )
    assert out["target_progress"] == []


# --------------------------------------------------------------------------------------------
# §7 Enrolment and the target value lookup
# --------------------------------------------------------------------------------------------


def test_transaction_enrolment_gives_every_started_window_to_customers_with_a_counted_record() -> (
    None
):
    out = run(
        group(target(rule=txn_gt("amount", 50))),
        date(2024, 3, 15),
        transactions=[txn("T1", 1, "2024-01-05T10:00", 60), txn("T2", 2, "2024-01-05T10", 10)],
    )
    got = [(r["customer_id"], r["period_index"], r["status"]) for r in out["target_progress"]]
    assert got == [(1, 1, "ENDED"), (1, 2, "ENDED"), (1, 3, "RUNNING")]


def test_import_enrolment_scores_only_enrolled_customers_with_the_group_name_folded() -> None:
    out = run(
        group(target(method="IMPORT")),
        date(2024, 1, 31),
        transactions=[txn("T1", 2, "2024-01-05T10:00", 60)],
        enrolments=[enrol(1, group_name="  g "), enrol(3, group_name="other")],
    )
    row = one(out, "target_progress")
    assert (row["customer_id"], row["value"], row["last_activity_at"]) == (1, D(0), None)


def test_import_group_without_enrolments_scores_nobody() -> None:
    out = run(
        group(target(method="IMPORT")),
        date(2024, 1, 31),
        transactions=[txn("T1", 1, "2024-01-05T10:00", 60)],
    )
    assert out["target_progress"] == []


def test_unenrolled_at_stops_later_windows_and_later_records() -> None:
    out = run(
        group(target(method="IMPORT")),
        date(2024, 3, 15),
        transactions=[
            txn("T1", 1, "2024-01-31T10:00", 10),
            txn("T2", 1, "2024-02-01T10:00", 20),  # after unenrolled_at
        ],
        enrolments=[enrol(1, unenrolled_at=at("2024-02-01T00:00"))],
    )
    # P2 starts exactly at unenrolled_at and is evaluated; P3 starts after it.
    assert values(out) == {("spend", 1): D(10), ("spend", 2): D(0)}


def test_track_from_enrolment_ignores_records_before_enrolled_at() -> None:
    records = {
        "transactions": [txn("T1", 1, "2024-01-10T10:00", 10), txn("T2", 1, "2024-01-20T10", 20)],
        "enrolments": [enrol(1, enrolled_at=at("2024-01-15T00:00"))],
    }
    body = group(target(method="IMPORT"))
    assert values(run(body, date(2024, 1, 31), **records)) == {("spend", 1): D(30)}
    tracked = run(body, date(2024, 1, 31), {"track_from_enrolment": True}, **records)
    assert values(tracked) == {("spend", 1): D(20)}


def test_user_created_customer_is_scored_only_where_they_set_a_target_value() -> None:
    out = run(
        group(target(method="IMPORT"), userCreated=True),
        date(2024, 3, 15),
        transactions=[txn("T1", 1, "2024-02-05T10:00", 60)],
        enrolments=[enrol(1, period_ref="P2", target_value=D(50)), enrol(2)],
    )
    row = one(out, "target_progress")
    assert (row["customer_id"], row["ref_code"], row["target_value"], row["achieved"]) == (
        1, "P2", D(50), True,
    )  # fmt: skip


def test_target_value_lookup_order_target_window_then_target_then_window_then_none() -> None:
    body = unified(target("a", method="IMPORT"), target("b", method="IMPORT"))
    out = run(
        body,
        date(2024, 3, 15),
        enrolments=[
            enrol(1, target_name="a", period_ref="P1", target_value=D(11)),
            enrol(1, target_name="a", target_value=D(12)),
            enrol(1, period_ref="P2", target_value=D(13)),
            enrol(1, target_value=D(14)),
        ],
    )
    got = {(r["target"], r["ref_code"]): r["target_value"] for r in out["target_progress"]}
    assert got == {
        ("a", "P1"): D(11),
        ("a", "P2"): D(12),
        ("a", "P3"): D(12),
        ("b", "P1"): D(14),
        ("b", "P2"): D(13),
        ("b", "P3"): D(14),
    }


def test_enrolment_period_ref_matches_a_given_ref_code_only() -> None:
    body = group(
        target(method="IMPORT"), targetCycleStartDate="2024-01-01", frequencyType="MONTHLY",
        totalPeriods=2,
    )  # fmt: skip
    body.pop("periods")
    out = run(body, date(2024, 2, 15), enrolments=[enrol(1, period_ref="1", target_value=D(5))])
    assert [r["target_value"] for r in out["target_progress"]] == [D(100), D(100)]


def test_initial_balance_goes_to_the_first_window_not_ended_before_enrolled_at() -> None:
    out = run(
        group(target(method="IMPORT")),
        date(2024, 3, 15),
        transactions=[txn("T1", 1, "2024-01-05T10:00", 10)],
        enrolments=[enrol(1, enrolled_at=at("2024-02-10T00:00"), initial_balance=D(25))],
    )
    # P1 ended before enrolled_at but is still evaluated, with its records.
    assert values(out) == {("spend", 1): D(10), ("spend", 2): D(25), ("spend", 3): D(0)}


def test_several_enrolment_rows_take_the_earliest_enrolled_at_and_latest_unenrolled_at() -> None:
    out = run(
        group(target(method="IMPORT")),
        date(2024, 3, 15),
        {"track_from_enrolment": True},
        transactions=[
            txn("T1", 1, "2024-01-12T10:00", 10),
            txn("T2", 1, "2024-02-20T10:00", 20),
        ],
        enrolments=[
            enrol(1, enrolled_at=at("2024-01-20T00:00"), unenrolled_at=at("2024-01-31T00:00")),
            enrol(1, enrolled_at=at("2024-01-10T00:00"), unenrolled_at=at("2024-02-25T00:00")),
        ],
    )
    assert values(out) == {("spend", 1): D(10), ("spend", 2): D(20)}


# --------------------------------------------------------------------------------------------
# §8 Group kinds and §9 rewards
# --------------------------------------------------------------------------------------------


def test_unified_all_is_achieved_when_the_last_target_is_reached() -> None:
    body = unified(target("a", defaults=(50,)), target("b", type_="COUNT", defaults=(2,)))
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[txn("T1", 1, "2024-01-03T10:00", 60), txn("T2", 1, "2024-01-09T10", 5)],
    )
    pa = one(out, "period_achievements")
    assert (pa["achieved"], pa["achieved_at"], pa["targets_achieved"], pa["targets_total"]) == (
        True, at("2024-01-09T10:00"), 2, 2,
    )  # fmt: skip
    kinds = sorted((r["kind"], r["name"], r["value"], r["target_value"]) for r in out["rewards"])
    assert kinds == [
        ("TARGET_ACHIEVED", "a", D(65), D(50)),
        ("TARGET_ACHIEVED", "b", D(2), D(2)),
        ("UNIFIED_ACHIEVED", "G", D(2), D(2)),
    ]


def test_unified_any_n_achieved_at_is_the_nth_earliest_target() -> None:
    body = unified(
        target("a", defaults=(10,)),
        target("b", type_="COUNT", defaults=(2,)),
        target("c", defaults=(1000,)),
        combinationType="ANY",
        combinationCount=2,
    )
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[txn("T1", 1, "2024-01-03T10:00", 60), txn("T2", 1, "2024-01-09T10", 5)],
    )
    pa = one(out, "period_achievements")
    assert (pa["achieved"], pa["achieved_at"], pa["targets_achieved"]) == (
        True, at("2024-01-09T10:00"), 2,
    )  # fmt: skip
    unified_reward = one(out, "rewards", kind="UNIFIED_ACHIEVED")
    assert (unified_reward["value"], unified_reward["target_value"]) == (D(2), D(2))


def monthly_streak(achieved: list[bool], **extra: Any) -> tuple[dict, dict]:
    """A monthly STREAK group over len(achieved) months of 2024; target 100 per month."""
    periods = [
        {"refCode": f"M{m}", "startDate": f"2024-{m:02d}-01",
         "endDate": f"2024-{m:02d}-{28 if m == 2 else 30}"}
        for m in range(1, len(achieved) + 1)
    ]  # fmt: skip
    body = group(
        tracking="STREAK",
        periods=periods,
        streaks=[{"name": "three", "targetCountOfSequence": 3},
                 {"name": "two", "targetCountOfSequence": 2}],
        **extra,
    )  # fmt: skip
    txns = [
        txn(f"T{m}", 1, f"2024-{m:02d}-10T10:00", 100 if hit else 1)
        for m, hit in enumerate(achieved, start=1)
    ]
    return body, {"transactions": txns}


def streak_runs(out: dict) -> list[tuple]:
    return [
        (r["start_period_index"], r["end_period_index"], r["length"], r["is_current"],
         r["graces_used"])
        for r in out["streak_runs"]
    ]  # fmt: skip


def test_streak_continuous_ended_miss_breaks_and_running_window_neither_breaks_nor_extends() -> (
    None
):
    body, records = monthly_streak([True, True, False, False])
    out = run(body, date(2024, 4, 15), **records)  # month 4 RUNNING, not achieved
    assert streak_runs(out) == [(1, 2, 2, False, 0)]
    progress = one(out, "streak_progress")
    assert (progress["current_count"], progress["longest_count"]) == (0, 2)

    body, records = monthly_streak([False, True, True, True])
    out = run(body, date(2024, 4, 15), **records)  # month 4 RUNNING and already achieved
    assert streak_runs(out) == [(2, 4, 3, True, 0)]
    assert one(out, "streak_progress")["current_count"] == 3

    body, records = monthly_streak([False, False, True, False])
    out = run(body, date(2024, 4, 15), **records)
    assert one(out, "streak_progress")["current_count"] == 1


def test_streak_level_is_awarded_once_when_the_count_first_reaches_n() -> None:
    body, records = monthly_streak([True, True, False, True, True, True])
    out = run(body, date(2024, 7, 1), **records)
    got = [(r["kind"], r["name"], r["period_index"], r["value"], r["target_value"],
            r["achieved_at"]) for r in out["rewards"]]  # fmt: skip
    assert got == [
        ("STREAK_LEVEL_ACHIEVED", "two", 2, D(2), D(2), at("2024-02-10T10:00")),
        ("STREAK_LEVEL_ACHIEVED", "three", 6, D(3), D(3), at("2024-06-10T10:00")),
    ]  # no TARGET_ACHIEVED for a streak group; "two" is not awarded again in month 5
    progress = one(out, "streak_progress")
    assert (progress["levels_achieved"], progress["next_level_name"]) == (2, None)
    assert (progress["current_count"], progress["longest_count"]) == (3, 3)


def test_streak_non_continuous_counts_every_achieved_window() -> None:
    body, records = monthly_streak([True, False, True, False, True], streakContinuous=False)
    out = run(body, date(2024, 6, 1), **records)
    got = [(r["name"], r["period_index"]) for r in out["rewards"]]
    assert got == [("two", 3), ("three", 5)]
    progress = one(out, "streak_progress")
    assert (progress["current_count"], progress["longest_count"]) == (3, 3)
    body["trackingType"] = "NON_CONTINUOUS_STREAK"
    body.pop("streakContinuous")
    assert run(body, date(2024, 6, 1), **records)["rewards"] == out["rewards"]


def test_streak_grace_forgives_up_to_g_ended_misses_within_a_run() -> None:
    pattern = [True, False, True, False, False, True]
    body, records = monthly_streak(pattern, streakGraceWindows=1)
    out = run(body, date(2024, 7, 1), **records)
    assert streak_runs(out) == [(1, 3, 2, False, 1), (6, 6, 1, True, 0)]
    body, records = monthly_streak(pattern, streakGraceWindows=2)
    out = run(body, date(2024, 7, 1), **records)
    assert streak_runs(out) == [(1, 3, 2, False, 2), (6, 6, 1, True, 0)]
    body, records = monthly_streak([True, False, True, True], streakGraceWindows=1)
    out = run(body, date(2024, 5, 1), **records)
    assert streak_runs(out) == [(1, 4, 3, True, 1)]
    assert one(out, "streak_progress")["current_count"] == 3


def test_streak_window_without_a_row_neither_breaks_nor_extends() -> None:
    body, records = monthly_streak([True, False, True])
    body["userCreated"] = True
    body["targets"][0]["enrolmentMethod"] = "IMPORT"
    records["enrolments"] = [
        enrol(1, period_ref="M1", target_value=D(100)),
        enrol(1, period_ref="M3", target_value=D(100)),
    ]
    out = run(body, date(2024, 4, 1), **records)
    assert streak_runs(out) == [(1, 3, 2, True, 0)]


def test_capping_allowed_excess_capped_at_and_per_points_row_adjustments() -> None:
    body = group(target("cap", "REWARDS", "ALL_POINTS"), tracking="CAPPING")
    same = at("2024-01-06T10:00")
    out = run(
        body,
        date(2024, 2, 10),
        points=[
            {"points_id": "p1", "customer_id": 1, "awarded_at": at("2024-01-05T10:00"),
             "points": D(60), "points_type": "REGULAR"},
            {"points_id": "p3", "customer_id": 1, "awarded_at": same, "points": D(25),
             "points_type": "PROMOTIONAL"},
            {"points_id": "p2", "customer_id": 1, "awarded_at": same, "points": D(30),
             "points_type": "REGULAR"},
            {"points_id": "p4", "customer_id": 1, "awarded_at": at("2024-01-07T10:00"),
             "points": D(10), "points_type": "REGULAR"},
        ],
    )  # fmt: skip
    cap = one(out, "capping")
    assert (cap["period_index"], cap["earned"], cap["cap"], cap["allowed"], cap["excess"]) == (
        1, D(125), D(100), D(100), D(25),
    )  # fmt: skip
    assert cap["capped_at"] == same  # p3 took the sum from 90 to 115
    got = [(r["points_id"], r["allowed_points"], r["excess_points"])
           for r in out["capping_adjustments"]]  # fmt: skip
    assert got == [("p1", D(60), D(0)), ("p2", D(30), D(0)), ("p3", D(10), D(15)),
                   ("p4", D(0), D(10))]  # fmt: skip
    assert out["rewards"] == []


@pytest.mark.parametrize(
    ("amounts", "capped_at"),
    [
        pytest.param([5, -5], None, id="over, then back under: not capped"),
        pytest.param([5, -5, 3], at("2024-01-07T10:00"), id="over twice: the last crossing"),
    ],
)  # fmt: skip
def test_capped_at_after_a_reversal_is_the_last_crossing(amounts: list[int],
                                                         capped_at: datetime | None) -> None:
    """SPEC §13 "Streaks and caps" with reversals (docs/decisions.md, capping readings)."""
    body = group(target("cap", "REWARDS", "ALL_POINTS", defaults=(1,)), tracking="CAPPING")
    days = ["2024-01-05T10:00", "2024-01-06T10:00", "2024-01-07T10:00"]
    out = run(body, date(2024, 2, 10), points=[
        {"points_id": f"p{i}", "customer_id": 1, "awarded_at": at(days[i]), "points": D(n),
         "points_type": "REGULAR"} for i, n in enumerate(amounts)])  # fmt: skip
    assert one(out, "capping")["capped_at"] == capped_at


def test_leaderboard_ranks_by_value_then_last_activity_then_numeric_customer_id() -> None:
    body = group(leaderboardEnabled=True)
    out = run(
        body,
        date(2024, 1, 31),
        transactions=[
            txn("A", 10, "2024-01-05T10:00", 100),
            txn("B", 9, "2024-01-05T10:00", 100),
            txn("C", 2, "2024-01-03T10:00", 100),
            txn("D", 3, "2024-01-02T10:00", 50),
        ],
    )
    got = [(r["customer_id"], r["rank"]) for r in out["leaderboard"]]
    assert got == [(2, 1), (9, 2), (10, 3), (3, 4)]


def test_leaderboard_customer_ids_order_as_text_when_not_all_integers() -> None:
    out = run(
        group(leaderboardEnabled=True),
        date(2024, 1, 31),
        transactions=[txn("A", "b9", "2024-01-05T10:00", 5), txn("B", "b10", "2024-01-05T10", 5)],
    )
    assert [r["customer_id"] for r in out["leaderboard"]] == ["b10", "b9"]


def test_return_that_reduces_a_window_puts_the_customer_on_its_leaderboard() -> None:
    out = run(
        group(leaderboardEnabled=True),
        date(2024, 2, 10),
        {"returns_mode": "carry"},
        transactions=[
            txn("T1", 1, "2024-01-10T10:00", 120),
            ret("R1", 1, "2024-01-20T10:00", 30, parent="T1"),
        ],
    )
    board = one(out, "leaderboard", period_index=2)
    assert (board["customer_id"], board["value"], board["rank"]) == (1, D(-30), 1)


# --------------------------------------------------------------------------------------------
# §4 / §13 Expressions
# --------------------------------------------------------------------------------------------


def counted(rule: Any, *rows: dict, zone: str | None = None, **records: Any) -> set[str]:
    """The txn_ids that a TRANSACTION target with `rule` counts, each bill scored on its own."""
    extra = {"timeZoneName": zone} if zone else {}
    body = group(target("n", type_="SALES", rule=rule), **extra)
    found = set()
    for r in rows:
        out = run(body, date(2024, 1, 31), transactions=[r], **records)
        if any(p["last_activity_at"] is not None for p in out["target_progress"]):
            found.add(r["txn_id"])
    return found


def test_comparison_with_null_is_null_so_the_record_does_not_count() -> None:
    web = eq(col("currentTxn", "channel"), Literal("web"))
    bills = [txn("T1", 1, "2024-01-05T10:00", 1, channel="web"),
             txn("T2", 1, "2024-01-05T10:00", 1)]  # fmt: skip
    assert counted(web, *bills) == {"T1"}
    assert counted(Unary("!", web), *bills) == set()  # !null is null


def test_or_is_three_valued_null_or_true_is_true() -> None:
    rule = Binary("||", eq(col("currentTxn", "channel"), Literal("web")), txn_gt("amount", 50))
    bills = [txn("T1", 1, "2024-01-05T10:00", 60), txn("T2", 1, "2024-01-05T10:00", 40)]
    assert counted(rule, *bills) == {"T1"}


def test_matches_is_a_search_not_a_full_match() -> None:
    rule = Call("matches", (col("currentTxn", "note"), Literal("gift")))
    bills = [txn("T1", 1, "2024-01-05T10:00", 1, note="a gift card"),
             txn("T2", 1, "2024-01-05T10:00", 1, note="cash")]  # fmt: skip
    assert counted(rule, *bills) == {"T1"}


def test_date_functions_use_the_group_zone_and_weekday_monday_is_one() -> None:
    # 20:00Z on Sunday 7 Jan is 05:00 on Monday 8 Jan in Tokyo.
    when = col("currentTxn", "txn_time")
    monday = eq(Call("weekday", (when,)), Literal(D(1)))
    day8 = eq(Call("day", (when,)), Literal(D(8)))
    bill = txn("T1", 1, "2024-01-07T20:00", 1)
    assert counted(monday, bill, zone="Asia/Tokyo") == {"T1"}
    assert counted(day8, bill, zone="Asia/Tokyo") == {"T1"}
    assert counted(monday, bill) == set()  # Sunday in UTC
    assert counted(Call("isWeekend", (when,)), bill) == {"T1"}


def test_is_hour_between_is_inclusive_exclusive() -> None:
    rule = Call("isHourBetween", (col("currentTxn", "txn_time"), Literal(D(9)), Literal(D(17))))
    bills = [
        txn("T1", 1, "2024-01-05T09:00", 1),
        txn("T2", 1, "2024-01-05T16:59", 1),
        txn("T3", 1, "2024-01-05T17:00", 1),
        txn("T4", 1, "2024-01-05T08:59", 1),
    ]
    assert counted(rule, *bills) == {"T1", "T2"}


def test_in_matches_any_listed_value() -> None:
    rule = Call("in", (col("currentTxn", "store_id"), Literal("S1"), Literal("S3")))
    bills = [txn("T1", 1, "2024-01-05T10:00", 1, store_id="S3"),
             txn("T2", 1, "2024-01-05T10:00", 1, store_id="S2")]  # fmt: skip
    assert counted(rule, *bills) == {"T1"}


def test_current_store_reads_the_stores_row_of_the_record_store() -> None:
    rule = eq(col("currentStore", "zone_id"), Literal("Z1"))
    bills = [txn("T1", 1, "2024-01-05T10:00", 1, store_id="S1"),
             txn("T2", 1, "2024-01-05T10:00", 1, store_id="S2"),
             txn("T3", 1, "2024-01-05T10:00", 1)]  # fmt: skip
    stores = [{"store_id": "S1", "zone_id": "Z1"}, {"store_id": "S2", "zone_id": "Z2"}]
    assert counted(rule, *bills, stores=stores) == {"T1"}


def test_contains_and_is_null() -> None:
    has = Call("contains", (col("currentTxn", "note"), Literal("gift")))
    missing = Call("isNull", (col("currentTxn", "note"),))
    bills = [txn("T1", 1, "2024-01-05T10:00", 1, note="gift"), txn("T2", 1, "2024-01-05T10", 1)]
    assert counted(has, *bills) == {"T1"}
    assert counted(missing, *bills) == {"T2"}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param("original", {1: D(90), 2: D(0)}, id="original: the bill's window"),
        pytest.param("carry", {1: D(120), 2: D(-30)}, id="carry: the next window"),
        pytest.param("ignore", {1: D(120), 2: D(0)}, id="ignore: nothing"),
    ],
)
def test_returns_mode_decides_which_window_a_return_reduces(
    mode: str, expected: dict[int, Decimal]
) -> None:
    out = run(
        group(),
        date(2024, 2, 10),
        {"returns_mode": mode},
        transactions=[
            txn("T1", 1, "2024-01-10T10:00", 120),
            ret("R1", 1, "2024-01-20T10:00", -30, parent="T1"),
        ],
    )
    assert {r["period_index"]: r["value"] for r in out["target_progress"]} == expected


def test_streak_progress_only_for_customers_with_a_started_window() -> None:
    body, _ = monthly_streak([True])
    body["targets"][0]["enrolmentMethod"] = "IMPORT"
    out = run(body, date(2023, 12, 31), enrolments=[enrol(1)])
    assert out["streak_progress"] == []
    out = run(body, date(2024, 1, 15), enrolments=[enrol(1)])
    assert one(out, "streak_progress")["current_count"] == 0
