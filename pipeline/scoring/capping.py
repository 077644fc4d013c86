"""CAPPING: hold each customer's points per window to the cap (SPEC §8, §11, §13).

Pure: one target's counted points rows and the caps in, `capping` and `capping_adjustments` out.
The per-row split is computed from running sums, not a loop: with `S` the running total in time
order (ties by `points_id`) and `A(S) = min(S, cap)`, a row's allowed points are
`A(S_after) - A(S_before)`. For non-negative points that is exactly §8's
`clamp(cap - earned_before, 0, points)`, and for any sign the rows add up to the window's
`allowed = min(earned, cap)`, so the adjustments file always agrees with the `capping` table.

Example (cap 100)::

    points   60   40   30  -50   20        running 60 100 130 80 100
    allowed  60   40    0  -20   20        excess   0   0  30 -30   0
"""

from __future__ import annotations

import polars as pl

from pipeline.scoring import measures

DECIMAL = pl.Decimal(38, 4)
KEYS = ("customer_id", "period_index")


def capping_tables(
    counted_points: pl.DataFrame, caps: pl.DataFrame, group_id: int, target_id: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split one CAPPING target's points rows at each customer's cap, window by window.

    Args:
        counted_points: customer_id, period_index, points_id (String), awarded_at (Datetime
            UTC), points (Decimal(38,4)): the rows that counted for this target (type, window,
            enrolment, filters, rule). A null `points` adds nothing.
        caps: customer_id, period_index, cap (Decimal; null = no cap), one row per key at most.
            A window of `counted_points` without a caps row is uncapped too.
        group_id: written into every output row.
        target_id: written into every output row.

    Returns:
        (capping, capping_adjustments) with exactly the SPEC §11 columns, sorted by customer,
        window (and, for adjustments, awarded_at then points_id). `capping` has a row only for
        windows with at least one points row.

    A negative cap allows nothing, as a cap of 0 does (the `cap` column still shows it).
    `capped_at` is the row at which the running sum last went from at or below the cap to above
    it, and null when the window ends at or below the cap (negative rows can bring it back).
    """
    _check_unique_caps(caps)
    # Rows in (customer, window, time, points_id) order by the engine's packed-key sort; each
    # window's cap by position (measures._base_rows_of), not by a join on two columns.
    rows = measures.sort_records(
        counted_points.select(
            pl.col("customer_id").alias("_cust"),
            pl.col("period_index").alias("_win"),
            pl.col("awarded_at").alias("_ts"),
            pl.col("points_id").alias("_k1"),
            pl.lit(0, pl.Int64).alias("_k2"),
            pl.col("points").fill_null(0).cast(DECIMAL).alias("points"),
        )
    )
    opens = (pl.col("_cust") != pl.col("_cust").shift(1)) | (
        pl.col("_win") != pl.col("_win").shift(1)
    )
    opens_s = rows.select(opens.fill_null(True)).to_series()
    windows = rows.filter(opens_s).select("_cust", "_win")
    at = measures._base_rows_of(
        caps.select(pl.col("customer_id").alias("_cust"), pl.col("period_index").alias("_win")),
        windows,
    )
    seg = opens_s.cast(pl.UInt32).cum_sum() - 1
    cap_of_window = caps["cap"].cast(DECIMAL).gather(at)
    cap = pl.when(pl.col("cap") < 0).then(pl.lit(0).cast(DECIMAL)).otherwise(pl.col("cap"))
    points = pl.col("points")
    # Running sum per window: the global running sum minus the sum before the window's first
    # row (one gather per row; no restarting sum over millions of short windows).
    total = rows["points"].cum_sum()
    after = total - (total - rows["points"]).filter(opens_s).gather(seg)
    rows = (
        rows.lazy()
        .with_columns(__seg=seg, cap=cap_of_window.gather(seg), _after=after)
        .with_columns(_before=pl.col("_after") - points, _cap=cap)
        .with_columns(
            # min_horizontal skips a null cap, so an uncapped window allows everything.
            allowed_points=pl.min_horizontal("_after", "_cap")
            - pl.min_horizontal("_before", "_cap"),
            _crossed=(pl.col("_before") <= pl.col("_cap")) & (pl.col("_after") > pl.col("_cap")),
            _last=(pl.col("__seg") != pl.col("__seg").shift(-1)).fill_null(True),
        )
        .with_columns(excess_points=points - pl.col("allowed_points"))
        .collect()
    )
    adjustments = rows.select(
        pl.lit(group_id, pl.Int64).alias("group_id"),
        pl.lit(target_id, pl.Int64).alias("target_id"),
        pl.col("_cust").alias("customer_id"),
        pl.col("_win").alias("period_index"),
        pl.col("_k1").alias("points_id"),
        pl.col("_ts").alias("awarded_at"),
        "points",
        pl.col("allowed_points").cast(DECIMAL),
        pl.col("excess_points").cast(DECIMAL),
    )
    # Per window: the last row holds the total; the allowed rows add up to min(earned, cap)
    # (they telescope), so no group_by is needed. capped_at: the window's last crossing.
    crossings = (
        rows.lazy()
        .select("__seg", "_ts", "_crossed")
        .filter(pl.col("_crossed"))
        .filter((pl.col("__seg") != pl.col("__seg").shift(-1)).fill_null(True))
        .collect()
    )
    crossed_at = pl.repeat(None, windows.height, dtype=rows.schema["_ts"], eager=True)
    if crossings.height:
        crossed_at = crossed_at.scatter(crossings["__seg"], crossings["_ts"])
    earned = pl.col("_after")
    allowed = pl.min_horizontal("_after", "_cap")
    capping = (
        rows.lazy()
        .select("_cust", "_win", "_after", "cap", "_cap", "_last")
        .filter(pl.col("_last"))
        .with_columns(crossed_at.alias("_crossed_at"))
        .select(
            pl.lit(group_id, pl.Int64).alias("group_id"),
            pl.lit(target_id, pl.Int64).alias("target_id"),
            pl.col("_cust").alias("customer_id"),
            pl.col("_win").alias("period_index"),
            earned.cast(DECIMAL).alias("earned"),
            pl.col("cap").cast(DECIMAL),
            allowed.cast(DECIMAL).alias("allowed"),
            (earned - allowed).cast(DECIMAL).alias("excess"),
            pl.when(earned > pl.col("_cap"))
            .then(pl.col("_crossed_at"))
            .cast(counted_points.schema["awarded_at"])
            .alias("capped_at"),
        )
        .collect()
    )
    return capping, adjustments


def _check_unique_caps(caps: pl.DataFrame) -> None:
    """Two caps for one customer and window would double that window's points rows.

    The caps come from target_progress in (customer, window) order: keys that strictly
    increase row by row are unique, a check a hundred times cheaper than hashing millions of
    keys; any other order takes the hashing check."""
    cust, win = (pl.col(k) for k in KEYS)
    same_cust = cust == cust.shift(1)
    step_up = (cust > cust.shift(1)) | (same_cust & (win > win.shift(1)))
    ordered = step_up.fill_null(True).all() & cust.is_not_null().all() & win.is_not_null().all()
    if caps.height < 2 or caps.select(ordered).item():
        return  # strictly increasing keys: no two rows share one
    if caps.select(pl.struct(*KEYS).is_duplicated().any()).item():
        dup = caps.filter(pl.struct(*KEYS).is_duplicated()).row(0, named=True)
        raise ValueError(
            f"capping_tables: several caps for customer {dup['customer_id']!r} in window "
            f"{dup['period_index']}; the caps frame must hold one row per customer and window"
        )
