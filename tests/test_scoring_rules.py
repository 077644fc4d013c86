"""One engine test per SPEC rule of §5-§7 and §13 not covered by the seed goldens."""

from __future__ import annotations

from decimal import Decimal as D

import polars as pl
import pytest

from pipeline.config import Config
from pipeline.definitions import model as m
from tests.engine_helpers import group, periods, ret, rows, run, target, ts, txn

JAN = periods(("2024-01-01", "2024-01-31", "JAN"))
JAN_FEB = periods(("2024-01-01", "2024-01-31", "JAN"), ("2024-02-01", "2024-02-29", "FEB"))


def spend(values=("100",), **kw) -> m.Target:
    return target(1, "spend", values=values, **kw)


def test_a_record_belongs_to_the_window_of_its_local_date():
    g = group(targets=(spend(),), periods=JAN_FEB, time_zone="Asia/Kolkata")
    # 31 Jan 20:00 UTC is 1 Feb 01:30 in Kolkata.
    res = run([g], "2024-02-29", transactions=[txn("a", 1, "2024-01-31T20:00:00", "150")])
    assert rows(res.tables["target_progress"], "period_index", "value") == [
        (1, D("0")),
        (2, D("150")),
    ]


@pytest.mark.parametrize("amount", ["-50", "50"], ids=["negative return", "positive return"])
def test_returns_reduce_by_their_absolute_value_whatever_their_sign(amount):
    g = group(targets=(spend(),), periods=JAN)
    data = [
        txn("a", 1, "2024-01-05T10:00:00", "150"),
        ret("r", 1, "2024-01-06T10:00:00", amount, "a"),
    ]
    res = run([g], "2024-01-31", transactions=data)
    assert rows(res.tables["target_progress"], "value", "achieved") == [(D("100"), True)]


def test_a_filter_with_an_empty_id_list_passes_nothing():
    g = group(targets=(spend(filters=(m.StoreFilter("STORE", ()),)),), periods=JAN)
    res = run([g], "2024-01-31", transactions=[txn("a", 1, "2024-01-05T10:00:00", "150", "S1")])
    assert res.tables["target_progress"].height == 0


def test_zone_filter_reads_the_stores_export_and_a_record_without_store_fails():
    g = group(targets=(spend(filters=(m.StoreFilter("ZONE", ("Z1",)),)),), periods=JAN)
    data = [
        txn("a", 1, "2024-01-05T10:00:00", "150", "S1"),
        txn("b", 1, "2024-01-06T10:00:00", "70"),
        txn("c", 1, "2024-01-07T10:00:00", "30", "S2"),
    ]
    stores = [{"store_id": "S1", "zone_id": "Z1"}, {"store_id": "S2", "zone_id": "Z2"}]
    res = run([g], "2024-01-31", transactions=data, stores=stores)
    assert rows(res.tables["target_progress"], "value") == [(D("150"),)]


def test_visit_counts_distinct_local_dates():
    g = group(targets=(spend(ttype="VISIT", values=("2",)),), periods=JAN)
    data = [
        txn("a", 1, "2024-01-05T08:00:00", "1"),
        txn("b", 1, "2024-01-05T18:00:00", "1"),
        txn("c", 1, "2024-01-09T10:00:00", "1"),
    ]
    res = run([g], "2024-01-31", transactions=data)
    tp = res.tables["target_progress"]
    assert rows(tp, "value", "achieved") == [(D("2"), True)]
    assert tp["achieved_at"][0] == ts("2024-01-09T10:00:00")


def test_lineitem_count_is_distinct_bills_with_a_qualifying_line():
    from pipeline.rules import tree

    rule = tree.Binary("==", tree.Name("currentLineItem", "category"), tree.Literal("A"))
    g = group(
        targets=(target(1, "lines", entity="LINEITEM", ttype="COUNT", rule=rule, values=("2",)),),
        periods=JAN,
    )
    bills = [txn("a", 1, "2024-01-05T08:00:00", "10"), txn("b", 1, "2024-01-06T08:00:00", "10")]
    lines = [
        {"txn_id": "a", "line_no": 1, "qty": D("1"), "amount": D("5"), "category": "A"},
        {"txn_id": "a", "line_no": 2, "qty": D("1"), "amount": D("5"), "category": "A"},
        {"txn_id": "b", "line_no": 1, "qty": D("1"), "amount": D("10"), "category": "B"},
    ]
    res = run([g], "2024-01-31", transactions=bills, line_items=lines)
    assert rows(res.tables["target_progress"], "value", "achieved") == [(D("1"), False)]


def test_aggregate_window_max_sums_the_highest_value_of_each_block():
    ext = m.ExtendedField("points", "SUM", m.AggregateWindow("MAX", 1))
    g = group(
        targets=(
            target(
                1,
                "steps",
                entity="EVENT",
                ttype="EVENT_ATTRIBUTE",
                event_name="walk",
                values=("10",),
                extended_field=ext,
            ),
        ),
        periods=JAN,
    )
    ev = [
        {
            "event_id": "1",
            "customer_id": 1,
            "event_name": "walk",
            "event_time": ts("2024-01-02T08:00:00"),
            "points": D("3"),
        },
        {
            "event_id": "2",
            "customer_id": 1,
            "event_name": "walk",
            "event_time": ts("2024-01-02T09:00:00"),
            "points": D("5"),
        },
        {
            "event_id": "3",
            "customer_id": 1,
            "event_name": "walk",
            "event_time": ts("2024-01-03T09:00:00"),
            "points": D("4"),
        },
    ]
    res = run([g], "2024-01-31", events=ev)
    assert rows(res.tables["target_progress"], "value", "achieved") == [(D("9"), False)]


def test_import_enrolment_scores_only_enrolled_customers_and_no_window_after_unenrolment():
    g = group(targets=(spend(method="IMPORT"),), periods=JAN_FEB)
    data = [
        txn("a", 1, "2024-01-05T10:00:00", "150"),
        txn("b", 2, "2024-01-05T10:00:00", "150"),
        txn("c", 1, "2024-01-25T10:00:00", "50"),
    ]
    enrol = [{"group_name": "G", "customer_id": 1, "unenrolled_at": ts("2024-01-20T00:00:00")}]
    res = run([g], "2024-02-29", transactions=data, enrolments=enrol)
    assert rows(res.tables["target_progress"], "customer_id", "period_index", "value") == [
        (1, 1, D("150"))
    ]


def test_track_from_enrolment_ignores_records_before_enrolled_at():
    g = group(targets=(spend(method="IMPORT"),), periods=JAN)
    data = [txn("a", 1, "2024-01-05T10:00:00", "150"), txn("b", 1, "2024-01-25T10:00:00", "50")]
    enrol = [{"group_name": "g", "customer_id": 1, "enrolled_at": ts("2024-01-20T00:00:00")}]
    counted = run(
        [g], "2024-01-31", Config(track_from_enrolment=True), transactions=data, enrolments=enrol
    )
    everything = run([g], "2024-01-31", transactions=data, enrolments=enrol)
    assert rows(counted.tables["target_progress"], "value") == [(D("50"),)]
    assert rows(everything.tables["target_progress"], "value") == [(D("200"),)]


def test_initial_balance_goes_to_the_first_window_not_ended_before_enrolment():
    g = group(targets=(spend(method="IMPORT"),), periods=JAN_FEB)
    enrol = [
        {
            "group_name": "g",
            "customer_id": 1,
            "enrolled_at": ts("2024-02-10T00:00:00"),
            "initial_balance": D("40"),
        }
    ]
    res = run(
        [g], "2024-02-29", transactions=[txn("a", 1, "2024-02-15T10:00:00", "70")], enrolments=enrol
    )
    assert rows(res.tables["target_progress"], "period_index", "value", "achieved") == [
        (1, D("0"), False),
        (2, D("110"), True),
    ]


def test_target_value_lookup_prefers_target_and_window_over_defaults():
    g = group(targets=(spend(method="IMPORT", values=("100",)),), periods=JAN_FEB)
    enrol = [
        {
            "group_name": "g",
            "customer_id": 1,
            "target_name": "SPEND",
            "period_ref": "FEB",
            "target_value": D("300"),
        },
        {"group_name": "g", "customer_id": 1, "target_value": D("200")},
    ]
    res = run(
        [g], "2024-02-29", transactions=[txn("a", 1, "2024-01-05T10:00:00", "1")], enrolments=enrol
    )
    assert res.tables["target_progress"].sort("period_index")["target_value"].to_list() == [
        D("200"),
        D("300"),
    ]


def test_achieved_at_is_null_when_the_balance_alone_meets_the_target():
    g = group(targets=(spend(method="IMPORT", values=("30",)),), periods=JAN)
    enrol = [{"group_name": "g", "customer_id": 1, "initial_balance": D("40")}]
    res = run(
        [g], "2024-01-31", transactions=[txn("a", 1, "2024-01-05T10:00:00", "1")], enrolments=enrol
    )
    tp = res.tables["target_progress"]
    assert rows(tp, "value", "achieved") == [(D("41"), True)]
    assert tp["achieved_at"][0] is None


def test_carry_mode_return_with_no_next_window_started_has_no_effect_yet():
    g = group(targets=(spend(),), periods=JAN_FEB)
    data = [
        txn("a", 1, "2024-01-05T10:00:00", "150"),
        ret("r", 1, "2024-01-20T10:00:00", "100", "a"),
    ]
    res = run([g], "2024-01-31", Config(returns_mode="carry"), transactions=data)
    assert rows(res.tables["target_progress"], "period_index", "value") == [(1, D("150"))]


def test_a_return_never_enrols_a_customer():
    g = group(targets=(spend(),), periods=JAN)
    res = run([g], "2024-01-31", transactions=[ret("r", 9, "2024-01-20T10:00:00", "100")])
    assert res.tables["target_progress"].height == 0


def test_a_missing_rule_attribute_fails_only_its_group():
    from pipeline.rules import tree

    bad = group(
        "bad",
        gid=2,
        targets=(
            spend(
                rule=tree.Binary(">", tree.Name("currentTxn", "loyalty_tier"), tree.Literal(D("1")))
            ),
        ),
        periods=JAN,
    )
    good = group("good", targets=(spend(),), periods=JAN)
    res = run([bad, good], "2024-01-31", transactions=[txn("a", 1, "2024-01-05T10:00:00", "150")])
    assert list(res.failures) == ["bad"]
    assert "loyalty_tier" in res.failures["bad"] and "'spend'" in res.failures["bad"]
    assert res.tables["target_progress"]["group_id"].unique().to_list() == [1]


def test_exact_decimals_make_thirty_times_3_33_plus_0_10_exactly_100():
    g = group(targets=(spend(values=("100",)),), periods=JAN)
    data = [txn(f"t{i}", 1, f"2024-01-{i % 28 + 1:02d}T10:00:00", "3.33") for i in range(30)]
    data.append(txn("x", 1, "2024-01-29T10:00:00", "0.10"))
    res = run([g], "2024-01-31", transactions=data)
    assert rows(res.tables["target_progress"], "value", "achieved") == [(D("100"), True)]
    assert res.tables["target_progress"].schema["value"] == pl.Decimal(38, 4)
