"""Engine golden cases, hand-computed, one per SPEC rule (§5-§8, §13)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal as D

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Config
from pipeline.definitions import model as m
from tests.engine_helpers import group, gt, periods, ret, rows, run, target, ts, txn

STREAK_SEED = group(
    "streakTestt123",
    kind="STREAK",
    targets=(
        target(
            10,
            "streakTestt123",
            rule=gt("amount", "500"),
            values=("500", "1000"),
            filters=(m.StoreFilter("STORE", ("50679757", "50679770")),),
        ),
    ),
    periods=periods(
        ("2023-11-17", "2023-11-17", "period44"), ("2023-11-18", "2023-11-20", "period45")
    ),
    streak_levels=(m.StreakLevel(1, "streakTestt193", 1), m.StreakLevel(2, "streakTestt123", 2)),
)
SEED_TXNS = [
    txn("t1", 1, "2023-11-17T10:00:00", "600", "50679757"),
    txn("t2", 1, "2023-11-19T10:00:00", "700", "50679770"),
    txn("t3", 1, "2023-11-20T10:00:00", "400", "50679770"),  # rule false
    txn("t4", 2, "2023-11-17T09:00:00", "300", "50679757"),  # rule false
    txn("t5", 2, "2023-11-17T11:00:00", "800", "999"),  # store filter fails
    txn("t6", 2, "2023-11-18T12:00:00", "1200", "50679770"),
    txn("t7", 2, "2023-11-19T12:00:00", "600", "50679770"),
    txn("t8", 3, "2023-11-19T12:00:00", "100", "50679770"),  # never counts: not enrolled
]


def test_streak_seed_golden_values_and_filters():
    res = run([STREAK_SEED], "2023-11-20", transactions=SEED_TXNS)
    tp = res.tables["target_progress"]
    assert rows(tp, "customer_id", "period_index", "ref_code", "status", "value", "achieved") == [
        (1, 1, "period44", "ENDED", D("600"), True),
        (1, 2, "period45", "ENDED", D("700"), False),
        (2, 1, "period44", "ENDED", D("0"), False),
        (2, 2, "period45", "ENDED", D("1800"), True),
    ]
    ach = tp.filter(pl.col("customer_id") == 2, pl.col("period_index") == 2)["achieved_at"][0]
    assert ach == ts("2023-11-18T12:00:00")


def test_transaction_enrolment_scores_only_customers_with_a_counted_record():
    res = run([STREAK_SEED], "2023-11-20", transactions=SEED_TXNS)
    assert set(res.tables["target_progress"]["customer_id"]) == {1, 2}


def test_original_mode_late_return_unachieves_the_bill_window():
    late = [*SEED_TXNS, ret("r1", 1, "2023-11-21T08:00:00", "-200", parent="t1", store="1")]
    res = run([STREAK_SEED], "2023-11-21", transactions=late)
    tp = res.tables["target_progress"]
    row = tp.filter(pl.col("customer_id") == 1, pl.col("period_index") == 1)
    assert row["value"][0] == D("400")
    assert row["achieved"][0] is False
    assert row["last_activity_at"][0] == ts("2023-11-21T08:00:00")


def test_a_return_naming_no_known_bill_is_parentless_one_naming_an_uncounted_bill_takes_nothing():
    """SPEC §13 "Returns and parents", for parent ids a loader would not have checked: an id no
    transaction has makes the return parentless (its own rule and window), a regular bill that
    did not count makes it take nothing, a counted bill's return reduces that bill's window."""
    g = group(
        targets=(target(1, "big", rule=gt("amount", "-100"), values=("100",)),),
        periods=periods(("2024-01-01", "2024-01-31", "JAN"), ("2024-02-01", "2024-02-29", "FEB")),
    )
    data = [
        txn("a", 1, "2024-01-05T10:00:00", "150"),
        txn("small", 1, "2024-01-06T10:00:00", "-150"),  # fails the rule: never counts
        ret("r1", 1, "2024-02-03T10:00:00", "20", parent="a"),  # counted: January
        ret("r2", 1, "2024-02-04T10:00:00", "30", parent="small"),  # did not count: nothing
        ret("r3", 1, "2024-02-05T10:00:00", "40", parent="gone"),  # unknown: parentless, Feb
        txn("b", 1, "2024-02-06T10:00:00", "100"),
    ]
    res = run([g], "2024-02-29", transactions=data)
    assert rows(res.tables["target_progress"], "period_index", "value", "achieved") == [
        (1, D("130"), True),
        (2, D("60"), False),
    ]
    # Every named parent counted: the lookup among all bills is skipped, same answer.
    plain = [r for r in data if r["txn_id"] not in ("r2", "r3")]
    res = run([g], "2024-02-29", transactions=plain)
    assert rows(res.tables["target_progress"], "period_index", "value") == [
        (1, D("130")), (2, D("100"))]


def test_records_after_the_end_of_as_of_are_ignored():
    res = run([STREAK_SEED], "2023-11-18", transactions=SEED_TXNS)
    tp = res.tables["target_progress"]
    assert rows(tp, "customer_id", "period_index", "status", "value") == [
        (1, 1, "ENDED", D("600")),
        (1, 2, "RUNNING", D("0")),
        (2, 1, "ENDED", D("0")),
        (2, 2, "RUNNING", D("1200")),
    ]


def test_carry_mode_return_in_same_window_reduces_next_window():
    g = group(
        targets=(target(1, "spend", values=("100",)),),
        periods=periods(("2024-01-01", "2024-01-31", "JAN"), ("2024-02-01", "2024-02-29", "FEB")),
    )
    data = [
        txn("a", 1, "2024-01-05T10:00:00", "150"),
        txn("b", 1, "2024-02-05T10:00:00", "120"),
        ret("r", 1, "2024-01-20T10:00:00", "50", parent="a"),
    ]
    res = run([g], "2024-02-29", Config(returns_mode="carry"), transactions=data)
    assert rows(res.tables["target_progress"], "period_index", "value", "achieved") == [
        (1, D("150"), True),
        (2, D("70"), False),
    ]


def test_ignore_mode_returns_change_nothing():
    g = group(
        targets=(target(1, "spend", values=("100",)),),
        periods=periods(("2024-01-01", "2024-01-31", "JAN")),
    )
    data = [
        txn("a", 1, "2024-01-05T10:00:00", "150"),
        ret("r", 1, "2024-01-20T10:00:00", "100", parent="a"),
    ]
    res = run([g], "2024-01-31", Config(returns_mode="ignore"), transactions=data)
    assert rows(res.tables["target_progress"], "value") == [(D("150"),)]


def test_unified_any_two_of_three_achieved_at_second_achievement():
    g = group(
        kind="UNIFIED",
        combination_type="ANY",
        combination_count=2,
        targets=(
            target(1, "spend", values=("100",)),
            target(2, "bills", ttype="COUNT", values=("2",)),
            target(3, "visits", ttype="VISIT", values=("5",)),
        ),
        periods=periods(("2024-01-01", "2024-01-31", "JAN")),
    )
    data = [txn("a", 1, "2024-01-05T10:00:00", "60"), txn("b", 1, "2024-01-06T10:00:00", "60")]
    res = run([g], "2024-01-31", transactions=data)
    pa = res.tables["period_achievements"]
    assert rows(pa, "targets_achieved", "targets_total", "achieved") == [(2, 3, True)]
    assert pa["achieved_at"][0] == ts("2024-01-06T10:00:00")
    kinds = sorted(res.rewards["kind"].to_list())
    assert kinds == ["TARGET_ACHIEVED", "TARGET_ACHIEVED", "UNIFIED_ACHIEVED"]


def test_generated_cyclic_windows_start_at_first_qualifying_record():
    g = group(
        evaluation="CYCLIC_WINDOW",
        frequency_type=m.FrequencyType.MONTHLY,
        frequency=1,
        recurring_cycles=3,
        targets=(target(1, "spend", values=("100",)),),
    )
    data = [txn("a", 1, "2024-01-31T10:00:00", "100"), txn("b", 1, "2024-03-01T10:00:00", "30")]
    res = run([g], "2024-03-15", transactions=data)
    tp = res.tables["target_progress"]
    assert rows(tp, "period_index", "window_start", "window_end", "status", "value") == [
        (1, datetime(2024, 1, 31), datetime(2024, 2, 28, 23, 59, 59, 999999), "ENDED", D("100")),
        (2, datetime(2024, 2, 29), datetime(2024, 3, 30, 23, 59, 59, 999999), "RUNNING", D("30")),
    ]


def test_period_agnostic_cycle_closes_at_reaching_record_without_carry_over():
    g = group(evaluation="PERIOD_AGNOSTIC_WINDOW", targets=(target(1, "spend", values=("100",)),))
    data = [
        txn("a", 1, "2024-01-01T10:00:00", "70"),
        txn("b", 1, "2024-01-02T10:00:00", "50"),
        txn("c", 1, "2024-01-03T10:00:00", "20"),
    ]
    res = run([g], "2024-01-31", transactions=data)
    assert rows(res.tables["target_progress"], "period_index", "status", "value", "achieved") == [
        (1, "ENDED", D("120"), True),
        (2, "RUNNING", D("20"), False),
    ]


def test_period_agnostic_return_of_an_unknown_bill_is_parentless_of_an_uncounted_one_nothing():
    """The agnostic stream matches returns to parents as FIXED windows do (`returns.by_parent`):
    an unknown parent id counts on the return's own rule at its own time; a regular bill that
    did not count takes nothing."""
    g = group(evaluation="PERIOD_AGNOSTIC_WINDOW",
              targets=(target(1, "spend", rule=gt("amount", "-100"), values=("100",)),))
    data = [
        txn("a", 1, "2024-01-01T10:00:00", "70"),
        txn("small", 1, "2024-01-02T10:00:00", "-150"),  # fails the rule: never counts
        ret("r1", 1, "2024-01-03T10:00:00", "30", parent="small"),  # takes nothing
        ret("r2", 1, "2024-01-04T10:00:00", "20", parent="gone"),  # parentless: -20
        txn("b", 1, "2024-01-05T10:00:00", "60"),
    ]
    res = run([g], "2024-01-31", transactions=data)
    assert rows(res.tables["target_progress"], "period_index", "status", "value", "achieved") == [
        (1, "ENDED", D("110"), True),
    ]


@pytest.mark.parametrize(
    "values, expected",
    [
        pytest.param(("100", "200"), [D("100"), D("200"), D("200")], id="last default repeats"),
        pytest.param(("5", "5", "5", "5"), [D("5"), D("5"), D("5")], id="one value repeated"),
        pytest.param(("3", "1.5", "9", "4"), [D("3"), D("1.5"), D("9")], id="one per window"),
        pytest.param(("7",), [D("7"), D("7"), D("7")], id="a single default"),
    ],
)
def test_default_values_last_one_repeats(values, expected):
    g = group(
        targets=(target(1, "spend", values=values),),
        periods=periods(
            ("2024-01-01", "2024-01-01", None),
            ("2024-01-02", "2024-01-02", None),
            ("2024-01-03", "2024-01-03", None),
        ),
    )
    res = run([g], "2024-01-03", transactions=[txn("a", 1, "2024-01-01T10:00:00", "1")])
    assert res.tables["target_progress"].sort("period_index")["target_value"].to_list() == expected


# --- records outside the group's dates are cut early (records.record_span) ----------------


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"])
def test_short_campaign_counts_records_at_its_local_edges_in_any_zone(zone):
    """A two-day campaign in a year of records: the early cut by UTC instant must not lose
    a record inside the campaign's local days, even 14 hours from UTC."""
    from zoneinfo import ZoneInfo

    def local(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))

    g = group(
        targets=(target(1, "spend", values=("1000",)),),
        periods=periods(("2024-06-10", "2024-06-10", None), ("2024-06-11", "2024-06-11", None)),
        time_zone=zone,
    )
    data = [
        txn("before", 1, "2024-01-01T00:00:00", "1"),
        txn("eve", 1, "2024-06-09T23:59:00", "2"),  # local: the day before
        txn("first", 1, "2024-06-10T00:01:00", "4"),
        txn("last", 1, "2024-06-11T23:59:00", "8"),
        txn("after", 1, "2024-06-12T00:01:00", "16"),
        txn("later", 1, "2024-12-01T12:00:00", "32"),
    ]
    for row in data:
        row["txn_time"] = local(row["txn_time"].replace(tzinfo=None).isoformat())
    res = run([g], "2024-12-31", transactions=data)
    assert rows(res.tables["target_progress"], "period_index", "value") == [
        (1, D("4")),
        (2, D("8")),
    ]


def test_a_return_before_a_campaign_still_reaches_it_in_carry_mode():
    """Only regular records are cut by the group's dates: in carry mode a parentless return
    dated before the first window reduces that window (SPEC §13)."""
    g = group(
        targets=(target(1, "spend", values=("100",)),),
        periods=periods(("2024-06-10", "2024-06-16", "W1")),
    )
    data = [
        ret("r", 1, "2024-03-01T10:00:00", "30"),
        txn("old", 1, "2024-03-01T09:00:00", "500"),  # outside every window
        txn("a", 1, "2024-06-12T10:00:00", "120"),
    ]
    res = run([g], "2024-06-30", Config(returns_mode="carry"), transactions=data)
    assert rows(res.tables["target_progress"], "period_index", "value", "achieved") == [
        (1, D("90"), False),
    ]


def test_record_span_pads_the_group_dates_by_a_day_and_leaves_cyclic_ends_open():
    from pipeline.scoring.context import GroupContext
    from pipeline.scoring.records import record_span

    fixed = group(
        targets=(target(1, "spend"),),
        periods=periods(("2024-06-10", "2024-06-11", None), ("2024-07-01", "2024-07-02", None)),
    )
    ctx = GroupContext(fixed, date(2024, 6, 20), Config(), {})
    # Only started windows: July's has not started on 20 June.
    assert record_span(ctx) == (ts("2024-06-09T00:00:00"), ts("2024-06-13T00:00:00"))
    cyclic = group(
        targets=(target(1, "spend"),),
        evaluation="CYCLIC_WINDOW",
        start_date=date(2024, 3, 1),
    )
    assert record_span(GroupContext(cyclic, date(2024, 6, 20), Config(), {})) == (
        ts("2024-02-29T00:00:00"),
        None,
    )


def test_has_rows_reads_an_enrolments_frame_once_and_never_answers_for_another():
    from polars.io.plugins import register_io_source

    from pipeline.scoring import enrolment
    from pipeline.scoring.context import GroupContext
    from tests.engine_helpers import SCHEMAS

    scans: list[str] = []

    def enrolments(*names: str | None) -> pl.LazyFrame:
        rows = pl.DataFrame(
            {"group_name": list(names), "customer_id": list(range(len(names)))},
            schema_overrides={"group_name": pl.String},
        ).select(pl.col(c).cast(t) if c in ("group_name", "customer_id") else pl.lit(None, t)
                 .alias(c) for c, t in SCHEMAS["enrolments"].items())

        def scan(with_columns, predicate, n_rows, batch_size):
            scans.append(names[0] or "")
            out = rows if predicate is None else rows.filter(predicate)
            yield out if with_columns is None else out.select(with_columns)

        return register_io_source(scan, schema=rows.schema)

    def has_rows(name: str, frame: pl.LazyFrame) -> bool:
        g = group(name, targets=(target(1, "spend"),))
        return enrolment.has_rows(GroupContext(g, date(2024, 1, 1), Config(),
                                               {"enrolments": frame}))

    first = enrolments(" Spend Club ", None)
    assert has_rows("spend club", first) and not has_rows("Other", first)
    assert has_rows("SPEND CLUB", first)
    assert scans == [" Spend Club "]  # one read for three answers
    second = enrolments("Other")
    assert has_rows("other", second) and not has_rows("Spend Club", second)
    assert scans == [" Spend Club ", "Other"]


@settings(max_examples=60, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9)), max_size=6),
    days=st.lists(st.one_of(st.none(), st.integers(-5, 80)), min_size=1, max_size=40),
)
def test_fixed_windows_take_each_record_to_the_period_holding_its_date(spans, days):
    """The day-table lookup of `assign_fixed` against the plain rule: a record belongs to the
    period whose first and last days hold its date; between periods and outside, to none."""
    from datetime import timedelta

    from pipeline.scoring import windows
    from pipeline.scoring.context import GroupContext

    base, spec = date(2024, 2, 20), []
    at = 0
    for gap, length in spans:  # periods in order, with gaps, never overlapping
        at += gap
        spec.append((base + timedelta(days=at), base + timedelta(days=at + length)))
        at += length + 1
    g = group(targets=(target(1, "spend"),), periods=periods(
        *((s.isoformat(), e.isoformat(), None) for s, e in spec)))
    records = pl.DataFrame(
        {"_date": [None if d is None else base + timedelta(days=d) for d in days],
         "_row": list(range(len(days)))},
        schema={"_date": pl.Date, "_row": pl.Int64},
    )
    got = windows.assign_fixed(records.lazy(), GroupContext(g, base, Config(), {})).collect()
    expected = [
        (row, k) for row, d in enumerate(days) if d is not None
        for k, (s, e) in enumerate(spec, start=1) if s <= base + timedelta(days=d) <= e
    ]
    assert sorted(got.select("_row", "_win").rows()) == expected
    assert got.schema["_win"] == pl.Int32
