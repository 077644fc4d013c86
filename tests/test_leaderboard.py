"""leaderboard_table: golden rankings by hand (SPEC §8, §13) and a sorted() version to compare."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scoring.leaderboard import leaderboard_table

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def progress(rows: list[tuple[Any, int, str, int]], customer: Any = pl.Int64) -> pl.DataFrame:
    """(customer, window, value, hour of last activity) per row."""
    return pl.DataFrame(
        [
            {"customer_id": c, "period_index": w, "value": Decimal(v),
             "last_activity_at": T0 + timedelta(hours=h)}
            for c, w, v, h in rows
        ],
        schema={"customer_id": customer, "period_index": pl.Int32, "value": pl.Decimal(38, 4),
                "last_activity_at": pl.Datetime("us", "UTC")},
    )  # fmt: skip


def test_ties_on_value_go_to_earlier_activity_then_smaller_customer_id() -> None:
    board = leaderboard_table(
        progress(
            [(3, 1, "50", 2), (1, 1, "50", 1), (2, 1, "50", 1), (9, 1, "80", 5), (4, 1, "10", 0),
             (4, 2, "7", 0), (1, 2, "7.5", 9)]
        ),
        group_id=3,
        target_id=31,
    )  # fmt: skip
    assert board.columns == [
        "group_id", "target_id", "period_index", "customer_id", "value", "last_activity_at", "rank"
    ]  # fmt: skip
    assert board.select("period_index", "customer_id", "rank").rows() == [
        (1, 9, 1),  # highest value
        (1, 1, 2),  # 50 at hour 1, id 1
        (1, 2, 3),  # 50 at hour 1, id 2
        (1, 3, 4),  # 50 at hour 2
        (1, 4, 5),
        (2, 1, 1),  # every window ranks from 1
        (2, 4, 2),
    ]
    assert board.select("group_id", "target_id").unique().rows() == [(3, 31)]


@pytest.mark.parametrize(
    ("ids", "dtype", "order"),
    [
        pytest.param([10, 9, 100], pl.Int64, [9, 10, 100], id="integer ids: numeric"),
        pytest.param(["10", "9", "100"], pl.String, ["9", "10", "100"],
                     id="all-digit text ids: numeric"),
        pytest.param(["10", "9", "x1"], pl.String, ["10", "9", "x1"], id="any non-digit: text"),
        pytest.param(["-3", " 2", "1"], pl.String, ["-3", "1", " 2"],
                     id="signs and spaces still numeric"),
    ],
)  # fmt: skip
def test_customer_id_tie_break_numeric_or_text(ids: list, dtype: Any, order: list) -> None:
    board = leaderboard_table(progress([(c, 1, "5", 0) for c in ids], customer=dtype), 3, 31)
    assert board["customer_id"].to_list() == order
    assert board["rank"].to_list() == [1, 2, 3]
    assert board.schema["customer_id"] == dtype


def test_empty_board_keeps_the_types() -> None:
    board = leaderboard_table(progress([]), 3, 31)
    assert board.height == 0
    assert board.schema["rank"] == pl.Int32
    assert board.schema["value"] == pl.Decimal(38, 4)


# --- property: equal to Python's sorted() ---------------------------------------------------


def sorted_reference(frame: pl.DataFrame) -> list[tuple]:
    ids = frame["customer_id"].to_list()
    numeric = all(isinstance(c, int) or re.fullmatch(r"-?\d+", c.strip()) for c in ids)

    def tie(c: Any) -> tuple:
        return (int(c), str(c)) if numeric else (0, str(c))

    out = []
    for window in sorted(set(frame["period_index"].to_list())):
        rows = [r for r in frame.rows(named=True) if r["period_index"] == window]
        rows.sort(key=lambda r: (-r["value"], r["last_activity_at"], tie(r["customer_id"])))
        out += [(window, r["customer_id"], r["value"], rank) for rank, r in enumerate(rows, 1)]
    return out


@st.composite
def boards(draw: st.DrawFn) -> pl.DataFrame:
    kind = draw(st.sampled_from(["int", "digits", "text"]))
    pool = {
        "int": st.integers(-5, 30),
        "digits": st.integers(-5, 30).map(str),
        "text": st.sampled_from(["a", "B", "10", "9", "c7", "-1"]),
    }[kind]
    rows = []
    for window in (1, 2):
        for c in draw(st.lists(pool, unique=True, max_size=6)):
            rows.append((c, window, str(draw(st.integers(0, 3))), draw(st.integers(0, 2))))
    return progress(rows, customer=pl.Int64 if kind == "int" else pl.String)


@settings(max_examples=150, deadline=None)
@given(frame=boards(), seed=st.integers(0, 2**16))
def test_leaderboard_equals_sorted(frame: pl.DataFrame, seed: int) -> None:
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)  # input order must not matter
    board = leaderboard_table(shuffled, 3, 31)
    assert board.select("period_index", "customer_id", "value", "rank").rows() == (
        sorted_reference(frame)
    )
