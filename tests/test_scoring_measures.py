"""`measures.sort_records` and the base-row lookup agree with the plain polars operations they
replace (the packed-key fast paths, their tie repair and their fallbacks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from pipeline.scoring import measures
from pipeline.scoring.context import DEC, KEYS, UTC_TS

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _records(
    n: int, seed: int, *, text: bool = False, wide: bool = False, micro: bool = False
) -> pl.DataFrame:
    """Records with many equal (customer, window, instant) keys, in shuffled order."""
    row = pl.int_range(n, dtype=pl.Int64)
    frame = pl.select(
        _cust=(row.hash(seed) % 7).cast(pl.Int64) * (10**15 if wide else 1),
        _win=(row.hash(seed + 1) % 3).cast(pl.Int32) + 1,
        _ts=pl.lit(T0) + pl.duration(minutes=(row.hash(seed + 2) % 4).cast(pl.Int64)),
        _k1=pl.format("T{}", row.hash(seed + 3) % 11),
        _k2=(row.hash(seed + 4) % 3).cast(pl.Int64),
        _contrib=(row % 5).cast(DEC),
    ).with_columns(pl.col("_ts").cast(UTC_TS))
    if text:
        frame = frame.with_columns(pl.format("C{}", pl.col("_cust")).alias("_cust"))
    if micro:  # instants that are not whole seconds: the key packs µs
        frame = frame.with_columns(pl.col("_ts") + pl.duration(microseconds=row % 2))
    return frame


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["int", "text", "wide", "micro"])
def test_sort_records_matches_the_five_column_sort(seed: int, kind: str) -> None:
    frame = _records(
        400, seed, text=kind == "text", wide=kind in ("wide", "micro"), micro=kind == "micro"
    )
    got = measures.sort_records(frame)
    want = frame.sort(measures.ORDER)
    # Rows equal on every ORDER column may come in either order: compare the keys.
    assert got.select(measures.ORDER).equals(want.select(measures.ORDER))
    assert got.sort(measures.CONTRIB_COLS).equals(want.sort(measures.CONTRIB_COLS))


def test_sort_records_repairs_ties_in_a_frame_already_in_packed_order() -> None:
    """Input sorted by (customer, window, instant) only, as an export in customer-time order
    may come: the sort is skipped, but equal instants must still go by record key."""
    frame = _records(400, 4)
    reversed_keys = [False] * 3 + [True] * 2
    by_instant = frame.sort(*measures.ORDER, descending=reversed_keys)
    got = measures.sort_records(by_instant)
    assert got.select(measures.ORDER).equals(frame.sort(measures.ORDER).select(measures.ORDER))


@pytest.mark.parametrize("seed", [5, 6])
def test_sort_records_orders_tied_blocks_that_came_out_of_record_key_order(seed: int) -> None:
    """Tied rows keep their input order when it is already the record keys' (a bill's lines
    in line order); the blocks that are not, and those with a null key, are sorted."""
    frame = _records(400, seed).sort(measures.ORDER)
    swapped = frame.with_columns(  # every 7th row swaps record keys with the row after it
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(pl.col("_k1").shift(-1))
        .when(pl.int_range(pl.len()) % 7 == 1).then(pl.col("_k1").shift(1))
        .otherwise(pl.col("_k1")).fill_null("T0").alias("_k1"),
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 23 == 0).then(None).otherwise(pl.col("_k1")).alias("_k1")
    )
    for given in (frame, swapped, swapped.reverse()):
        got = measures.sort_records(given)
        assert got.select(measures.ORDER).equals(given.sort(measures.ORDER).select(measures.ORDER))


def test_sort_records_small_frames() -> None:
    empty = _records(0, 1)
    assert measures.sort_records(empty).height == 0
    one = _records(1, 1)
    assert measures.sort_records(one).equals(one)


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("shuffled", [False, True])
def test_base_rows_of_finds_each_window_or_null(text: bool, shuffled: bool) -> None:
    base = pl.DataFrame({"_cust": [1, 1, 2, 2, 5], "_win": [1, 2, 1, 2, 1]}).with_columns(
        pl.col("_win").cast(pl.Int32)
    )
    if shuffled:
        base = base.reverse()
    wins = pl.DataFrame({"_cust": [1, 2, 3, 5, 5, 0], "_win": [2, 1, 1, 1, 2, 1]}).with_columns(
        pl.col("_win").cast(pl.Int32)
    )
    if text:
        base = base.with_columns(pl.col("_cust").cast(pl.String))
        wins = wins.with_columns(pl.col("_cust").cast(pl.String))
    at = measures._base_rows_of(base, wins)
    found = base.with_row_index("row").join(wins.with_row_index("w"), on=KEYS)
    want = [None] * wins.height
    for w, r in zip(found["w"], found["row"], strict=True):
        want[w] = r
    assert at.to_list() == want


def _base_and_records() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two base rows (customers 1 and 2, window 1, target 5) and four records, one of customer
    3, who has no base row."""
    base = pl.DataFrame(
        {
            "_cust": [1, 2],
            "_win": [1, 1],
            "target_value": [Decimal(5), Decimal(5)],
            "_balance": [Decimal(0), Decimal(0)],
        },
        schema={"_cust": pl.Int64, "_win": pl.Int32, "target_value": DEC, "_balance": DEC},
    )
    rows = pl.DataFrame(
        {
            "_cust": [1, 1, 3, 2],
            "_win": [1, 1, 1, 1],
            "_ts": [T0 + timedelta(hours=h) for h in (2, 1, 0, 3)],
            "_k1": ["b", "a", "c", "d"],
            "_k2": [0, 0, 0, 0],
            "_contrib": [Decimal(4), Decimal(1), Decimal(9), Decimal(2)],
        },
        schema={
            "_cust": pl.Int64,
            "_win": pl.Int32,
            "_ts": UTC_TS,
            "_k1": pl.String,
            "_k2": pl.Int64,
            "_contrib": DEC,
        },
    )
    return base, rows


def test_progress_ignores_records_of_windows_without_a_base_row() -> None:
    base, rows = _base_and_records()
    out = measures.progress(base, rows)
    assert out["value"].to_list() == [Decimal(5), Decimal(2)]
    assert out["achieved"].to_list() == [True, False]
    assert out["achieved_at"].to_list() == [T0 + timedelta(hours=2), None]
    assert out["last_activity_at"].to_list() == [T0 + timedelta(hours=2), T0 + timedelta(hours=3)]


def test_progress_computes_the_selected_columns_in_one_aligned_chunk_each() -> None:
    base, rows = _base_and_records()
    out = measures.progress(base, rows)
    # The same values, literals included, and every column in one piece (a later select or
    # filter then copies nothing to align them).
    picked = measures.progress(base, rows, select=[
        pl.lit(7, dtype=pl.Int64).alias("group_id"), pl.col("_cust"), pl.col("value")])
    assert picked.columns == ["group_id", "_cust", "value"]
    assert picked.rows() == [(7, *r) for r in out.select("_cust", "value").rows()]
    assert set(picked.n_chunks("all")) == {1}


def _target_rows(seed: int, tid: int) -> pl.DataFrame:
    """One target's progress rows on a 5 x 3 grid: random achieved flags and instants, some
    achieved without an instant (an opening balance met the target)."""
    row = pl.int_range(15, dtype=pl.Int64)
    achieved = row.hash(seed * 10 + tid) % 3 != 0
    instant = pl.lit(T0) + pl.duration(hours=(row.hash(seed * 10 + tid + 5) % 4).cast(pl.Int64))
    no_record = row.hash(seed * 10 + tid + 7) % 5 == 0
    return pl.select(
        group_id=pl.lit(1, pl.Int64),
        target_id=pl.lit(tid, pl.Int64),
        customer_id=row // 3,
        period_index=(row % 3 + 1).cast(pl.Int32),
        ref_code=pl.lit(None, pl.String),
        window_start=pl.lit(datetime(2025, 1, 1)),
        window_end=pl.lit(datetime(2025, 1, 31)),
        status=pl.lit("ENDED"),
        achieved=achieved,
        achieved_at=pl.when(achieved & ~no_record).then(instant).cast(UTC_TS),
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("kind", "need"), [("ALL", 4), ("ANY", 1), ("ANY", 2), ("ANY", 3)])
def test_row_aligned_combine_equals_grouped_combine(seed: int, kind: str, need: int) -> None:
    from types import SimpleNamespace

    from pipeline.definitions.model import TrackingType
    from pipeline.scoring.engine import combine

    parts = [_target_rows(seed, tid) for tid in range(4)]
    group = SimpleNamespace(
        group_id=1,
        targets=parts,
        tracking_type=TrackingType.UNIFIED,
        combination_type=kind,
        combination_count=need,
    )
    ctx = SimpleNamespace(group=group)
    progress = pl.concat(parts)
    by_rows = combine(ctx, progress, parts)  # type: ignore[arg-type]
    grouped = combine(ctx, progress)  # type: ignore[arg-type]
    keys = ["customer_id", "period_index"]
    assert by_rows.sort(keys).equals(grouped.sort(keys))


@pytest.mark.parametrize("months", [1, 2, 3, 6, 12])
def test_cycle_start_by_arithmetic_equals_offset_by(months: int) -> None:
    """Month steps from every day of a leap year and the next, cycles 0..30 (31 Jan + 1 month
    is 29 Feb, then 31 Mar: always counted from the first start)."""
    from datetime import date
    from types import SimpleNamespace

    from pipeline.scoring.windows import cycle_start

    ctx = SimpleNamespace(group=SimpleNamespace(window_length=(0, months)))
    frame = pl.select(_anchor=pl.date_range(date(2023, 12, 1), date(2025, 3, 31), "1d")).join(
        pl.select(_k=pl.int_range(0, 31, dtype=pl.Int32)), how="cross"
    )
    got = frame.select(cycle_start(pl.col("_anchor"), pl.col("_k"), ctx)).to_series()  # type: ignore[arg-type]
    want = frame.select(
        pl.col("_anchor").dt.offset_by(pl.format("{}mo", (pl.col("_k") - 1) * months))
    ).to_series()
    assert got.to_list() == want.to_list()


@pytest.mark.parametrize("kind", ["MAX", "MIN"])
@pytest.mark.parametrize("seed", [1, 2])
def test_block_extremes_packed_running_extreme_equals_the_window_function_form(
    kind: str, seed: int
) -> None:
    """The packed global cum_max gives the same contributions as ``over`` per block, nulls
    (carry the extreme; nothing before the first value) and negative values included."""
    row = pl.int_range(600, dtype=pl.Int64)
    frame = measures.sort_records(
        _records(600, seed).with_columns(
            # The local date follows the instant (here: one day per minute), as it does in a run.
            _date=pl.lit(T0.date()) + pl.duration(days=pl.col("_ts").dt.minute()),
            start_date=pl.lit(T0.date()),
            _attr=pl.when(row.hash(seed + 6) % 5 == 0)
            .then(None)
            .otherwise((row.hash(seed + 7) % 20_001).cast(pl.Int64) - 10_000)
            .cast(DEC)
            / 7,
        )
    )
    blocks = frame.with_columns(
        ((pl.col("_date") - pl.col("start_date")).dt.total_days() // 2).alias("_block"),
        pl.col("_attr").cast(DEC),
    )
    packed = measures._block_extremes(frame, kind, 2)
    by_over = measures._block_extremes_by_window_functions(blocks, kind)
    assert packed.equals(by_over)
    assert packed["_contrib"].null_count() == 0


@pytest.mark.parametrize("kind", ["int", "wide", "micro"])
def test_sort_records_with_a_column_subset_unpacks_customer_window_and_instant(kind: str) -> None:
    frame = _records(400, 5, wide=kind in ("wide", "micro"), micro=kind == "micro")
    wanted = ["_contrib", *KEYS, "_ts"]
    got = measures.sort_records(frame, wanted)
    want = frame.sort(measures.ORDER)
    assert got.columns == wanted
    assert got.schema == frame.select(wanted).schema
    # Equal ORDER rows may swap, but the contributions they carry must follow them.
    assert got.select(*KEYS, "_ts").equals(want.select(*KEYS, "_ts"))
    assert got.sort(wanted).equals(want.select(wanted).sort(wanted))


def test_sort_records_keeps_the_dtypes_it_unpacks() -> None:
    frame = _records(200, 6).with_columns(
        pl.col("_cust").cast(pl.UInt32),
        pl.col("_win").cast(pl.Int64),
        pl.col("_ts").cast(pl.Datetime("ms", "UTC")),
    )
    got = measures.sort_records(frame)
    assert got.schema == frame.schema
    assert got.select(measures.ORDER).equals(frame.sort(measures.ORDER).select(measures.ORDER))
