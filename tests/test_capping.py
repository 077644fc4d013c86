"""capping_tables: golden splits by hand (SPEC §8, §13) and a per-row loop to compare with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scoring.capping import capping_tables

DEC = pl.Decimal(38, 4)
POINTS = {
    "customer_id": pl.Int64,
    "period_index": pl.Int32,
    "points_id": pl.String,
    "awarded_at": pl.Datetime("us", "UTC"),
    "points": DEC,
}
CAPS = {"customer_id": pl.Int64, "period_index": pl.Int32, "cap": DEC}
T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def points(rows: list[tuple[Any, int, str, int, str]], customer: Any = pl.Int64) -> pl.DataFrame:
    """(customer, window, points_id, hour, points) per row."""
    return pl.DataFrame(
        [
            {"customer_id": c, "period_index": w, "points_id": p, "awarded_at": at(h),
             "points": Decimal(v)}
            for c, w, p, h, v in rows
        ],
        schema={**POINTS, "customer_id": customer},
    )  # fmt: skip


def caps(rows: list[tuple[Any, int, str | None]], customer: Any = pl.Int64) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"customer_id": c, "period_index": w, "cap": None if v is None else Decimal(v)}
            for c, w, v in rows
        ],
        schema={**CAPS, "customer_id": customer},
    )


def split(adjustments: pl.DataFrame) -> list[tuple[str, str, str]]:
    return [
        (p, f"{a:f}", f"{e:f}")
        for p, a, e in adjustments.select("points_id", "allowed_points", "excess_points").rows()
    ]


def window(capping: pl.DataFrame) -> list[tuple[str, str, str, str, datetime | None]]:
    return [
        (f"{e:f}", f"{c:f}" if c is not None else "-", f"{a:f}", f"{x:f}", t)
        for e, c, a, x, t in capping.select(
            "earned", "cap", "allowed", "excess", "capped_at"
        ).rows()
    ]


def test_row_that_crosses_the_cap_is_split() -> None:
    capping, adjustments = capping_tables(
        points([(1, 1, "p1", 0, "60"), (1, 1, "p2", 1, "70"), (1, 1, "p3", 2, "10")]),
        caps([(1, 1, "100")]),
        group_id=8,
        target_id=81,
    )
    assert split(adjustments) == [
        ("p1", "60.0000", "0.0000"),
        ("p2", "40.0000", "30.0000"),
        ("p3", "0.0000", "10.0000"),
    ]
    assert window(capping) == [("140.0000", "100.0000", "100.0000", "40.0000", at(1))]
    assert capping.columns == [
        "group_id", "target_id", "customer_id", "period_index",
        "earned", "cap", "allowed", "excess", "capped_at",
    ]  # fmt: skip
    assert adjustments.columns == [
        "group_id", "target_id", "customer_id", "period_index", "points_id",
        "awarded_at", "points", "allowed_points", "excess_points",
    ]  # fmt: skip
    assert capping.select("group_id", "target_id").unique().rows() == [(8, 81)]


@pytest.mark.parametrize(
    ("rows", "capped_at", "excess"),
    [
        pytest.param([(1, 1, "p1", 0, "60"), (1, 1, "p2", 1, "40"), (1, 1, "p3", 2, "5")],
                     at(2), "5.0000", id="lands exactly on the cap: capped at the next row"),
        pytest.param([(1, 1, "p1", 0, "60"), (1, 1, "p2", 1, "40")],
                     None, "0.0000", id="lands exactly on the cap and stops: not capped"),
        pytest.param([(1, 1, "p1", 0, "60"), (1, 1, "p2", 1, "40"), (1, 1, "p3", 2, "0.0001")],
                     at(2), "0.0001", id="one ten-thousandth over"),
    ],
)  # fmt: skip
def test_sum_landing_on_the_cap(rows: list, capped_at: datetime | None, excess: str) -> None:
    capping, adjustments = capping_tables(points(rows), caps([(1, 1, "100")]), 8, 81)
    assert capping["capped_at"].to_list() == [capped_at]
    assert f"{capping['excess'].item():f}" == excess
    assert [f"{a:f}" for a in adjustments["allowed_points"]][:2] == ["60.0000", "40.0000"]


def test_ties_on_awarded_at_are_broken_by_points_id() -> None:
    capping, adjustments = capping_tables(
        points([(1, 1, "b", 0, "30"), (1, 1, "a", 0, "40"), (1, 1, "c", 0, "5")]),
        caps([(1, 1, "50")]),
        8,
        81,
    )
    assert split(adjustments) == [
        ("a", "40.0000", "0.0000"),
        ("b", "10.0000", "20.0000"),
        ("c", "0.0000", "5.0000"),
    ]
    assert window(capping) == [("75.0000", "50.0000", "50.0000", "25.0000", at(0))]


def test_windows_and_customers_are_capped_independently() -> None:
    capping, _ = capping_tables(
        points(
            [(1, 1, "p1", 0, "80"), (1, 2, "p2", 200, "80"), (2, 1, "p3", 1, "30"),
             (3, 1, "p4", 1, "9")]
        ),
        caps([(1, 1, "50"), (1, 2, "100"), (2, 1, "20"), (3, 1, None), (4, 1, "10")]),
        8,
        81,
    )  # fmt: skip
    assert capping.select("customer_id", "period_index").rows() == [(1, 1), (1, 2), (2, 1), (3, 1)]
    assert window(capping) == [
        ("80.0000", "50.0000", "50.0000", "30.0000", at(0)),
        ("80.0000", "100.0000", "80.0000", "0.0000", None),
        ("30.0000", "20.0000", "20.0000", "10.0000", at(1)),
        ("9.0000", "-", "9.0000", "0.0000", None),  # a null cap holds nothing back
    ]  # customer 4 has a cap but no points: no row


def test_window_without_a_caps_row_is_uncapped() -> None:
    capping, adjustments = capping_tables(points([(1, 1, "p1", 0, "500")]), caps([]), 8, 81)
    assert window(capping) == [("500.0000", "-", "500.0000", "0.0000", None)]
    assert split(adjustments) == [("p1", "500.0000", "0.0000")]


def test_negative_rows_reduce_the_excess_first_and_the_rows_add_up() -> None:
    """The module docstring's example: a reversal after the cap eats the excess first."""
    rows = [(1, 1, f"p{i}", i, v) for i, v in enumerate(["60", "40", "30", "-50", "20"])]
    capping, adjustments = capping_tables(points(rows), caps([(1, 1, "100")]), 8, 81)
    assert split(adjustments) == [
        ("p0", "60.0000", "0.0000"),
        ("p1", "40.0000", "0.0000"),
        ("p2", "0.0000", "30.0000"),
        ("p3", "-20.0000", "-30.0000"),
        ("p4", "20.0000", "0.0000"),
    ]
    # Back at the cap, not over it: nothing is held back and the window is not capped.
    assert window(capping) == [("100.0000", "100.0000", "100.0000", "0.0000", None)]


def test_negative_cap_allows_nothing() -> None:
    capping, adjustments = capping_tables(
        points([(1, 1, "p1", 0, "5")]), caps([(1, 1, "-10")]), 8, 81
    )
    assert window(capping) == [("5.0000", "-10.0000", "0.0000", "5.0000", at(0))]
    assert split(adjustments) == [("p1", "0.0000", "5.0000")]


@pytest.mark.parametrize(
    "rows",
    [
        [(1, 1, "5"), (1, 1, "6")],  # in key order: the duplicates are neighbours
        [(1, 1, "5"), (2, 1, "7"), (1, 1, "6")],  # out of order: found by hashing
        [(0, 2, "4"), (1, 1, "5"), (1, 1, "6"), (1, 2, "7")],
    ],
)
def test_two_caps_for_one_window_is_a_bug_we_refuse(rows: list) -> None:
    with pytest.raises(ValueError, match="several caps for customer 1 in window 1"):
        capping_tables(points([]), caps(rows), 8, 81)


def test_caps_in_key_order_or_not_pass_the_uniqueness_check() -> None:
    for rows in ([(1, 1, "5"), (1, 2, "6"), (2, 1, "7")], [(2, 1, "7"), (1, 2, "6"), (1, 1, "5")]):
        capping, _ = capping_tables(points([(1, 2, "p1", 0, "9")]), caps(rows), 8, 81)
        assert window(capping)[0][:2] == ("9.0000", "6.0000")


def test_text_customer_ids_keep_their_type() -> None:
    frame = points([("c1", 1, "p1", 0, "5"), ("c1", 1, "p2", 1, "5")], customer=pl.String)
    cap = caps([("c1", 1, "7")], customer=pl.String)
    capping, adjustments = capping_tables(frame, cap, 8, 81)
    assert capping.select("customer_id", "capped_at").rows() == [("c1", at(1))]
    assert split(adjustments) == [("p1", "5.0000", "0.0000"), ("p2", "2.0000", "3.0000")]


def test_empty_input_gives_the_spec_types() -> None:
    capping, adjustments = capping_tables(points([]), caps([]), 8, 81)
    assert capping.schema["capped_at"] == pl.Datetime("us", "UTC")
    assert capping.schema["earned"] == DEC
    assert adjustments.schema["allowed_points"] == DEC
    assert (capping.height, adjustments.height) == (0, 0)


# --- property: running sums equal a per-row loop ---------------------------------------------


def loop_reference(frame: pl.DataFrame, cap_frame: pl.DataFrame) -> tuple[list[tuple], list[tuple]]:
    """SPEC §8 per row for non-negative points; the documented readings for the rest."""
    cap_of = {(c, w): v for c, w, v in cap_frame.rows()}
    cells: dict[tuple, list[tuple]] = {}
    for row in frame.sort("customer_id", "period_index", "awarded_at", "points_id").rows():
        cells.setdefault((row[0], row[1]), []).append(row)
    capping, adjustments = [], []
    for (cid, win), rows in cells.items():
        cap = cap_of.get((cid, win))
        limit = None if cap is None else max(cap, Decimal(0))
        earned = Decimal(0)
        capped_at = None
        for _, _, pid, ts, pts in rows:
            before, earned = earned, earned + pts
            if limit is None:
                allowed = pts
            elif pts >= 0:
                allowed = min(max(limit - before, Decimal(0)), pts)  # clamp(cap - before, 0, p)
            else:
                allowed = min(earned, limit) - min(before, limit)
            if limit is not None and before <= limit < earned:
                capped_at = ts
            adjustments.append((cid, win, pid, ts, pts, allowed, pts - allowed))
        if limit is None or earned <= limit:
            capped_at = None
        allowed_sum = earned if limit is None else min(earned, limit)
        excess = Decimal(0) if limit is None else max(Decimal(0), earned - limit)
        capping.append((cid, win, earned, cap, allowed_sum, excess, capped_at))
    return capping, adjustments


@st.composite
def points_and_caps(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame]:
    amount = st.integers(-2_000, 60_000).map(lambda n: Decimal(n).scaleb(-4) * 100)
    rows = [
        (draw(st.integers(1, 3)), draw(st.integers(1, 2)), f"p{i:02d}", draw(st.integers(0, 3)),
         str(draw(amount)))
        for i in draw(st.permutations(list(range(draw(st.integers(0, 12))))))
    ]  # fmt: skip
    cap_rows = [
        (c, w, draw(st.one_of(st.none(), st.integers(-50, 900).map(str))))
        for c in range(1, 4)
        for w in (1, 2)
        if draw(st.booleans())
    ]
    return points(rows), caps(cap_rows)


@settings(max_examples=150, deadline=None)
@given(case=points_and_caps())
def test_capping_tables_equal_a_per_row_loop(case: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    frame, cap_frame = case
    want_capping, want_adjustments = loop_reference(frame, cap_frame)
    capping, adjustments = capping_tables(frame, cap_frame, 8, 81)
    assert capping.drop("group_id", "target_id").rows() == want_capping
    assert adjustments.drop("group_id", "target_id").rows() == want_adjustments
    # Invariant: the adjustments file always adds up to the capping table.
    totals = adjustments.group_by("customer_id", "period_index").agg(
        pl.col("allowed_points").sum(), pl.col("excess_points").sum()
    )
    joined = capping.join(totals, on=["customer_id", "period_index"])
    assert (joined["allowed"] == joined["allowed_points"]).all()
    assert (joined["excess"] == joined["excess_points"]).all()
