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

from pipeline.scoring.context import sorted_cum_sum

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
    cap = pl.when(pl.col("cap") < 0).then(pl.lit(0).cast(DECIMAL)).otherwise(pl.col("cap"))
    points = pl.col("points")
    rows = (
        counted_points.select(*KEYS, "points_id", "awarded_at", points.fill_null(0).cast(DECIMAL))
        .join(caps.select(*KEYS, pl.col("cap").cast(DECIMAL)), on=KEYS, how="left")
        .sort(*KEYS, "awarded_at", "points_id")
        .with_columns(_after=sorted_cum_sum(points, list(KEYS)))
        .with_columns(_before=pl.col("_after") - points, _cap=cap)
        .with_columns(
            # min_horizontal skips a null cap, so an uncapped window allows everything.
            allowed_points=pl.min_horizontal("_after", "_cap")
            - pl.min_horizontal("_before", "_cap"),
            _crossed=(pl.col("_before") <= pl.col("_cap")) & (pl.col("_after") > pl.col("_cap")),
        )
        .with_columns(excess_points=points - pl.col("allowed_points"))
    )
    adjustments = rows.select(
        pl.lit(group_id, pl.Int64).alias("group_id"),
        pl.lit(target_id, pl.Int64).alias("target_id"),
        *KEYS,
        "points_id",
        "awarded_at",
        "points",
        pl.col("allowed_points").cast(DECIMAL),
        pl.col("excess_points").cast(DECIMAL),
    )
    earned = pl.col("points").sum()
    capping = (
        rows.group_by(*KEYS, maintain_order=True)
        .agg(
            earned=earned,
            cap=pl.col("cap").first(),
            allowed=pl.col("allowed_points").sum(),
            excess=pl.col("excess_points").sum(),
            capped_at=pl.when(earned > pl.col("_cap").first()).then(
                pl.col("awarded_at").filter(pl.col("_crossed")).last()
            ),
        )
        .select(
            pl.lit(group_id, pl.Int64).alias("group_id"),
            pl.lit(target_id, pl.Int64).alias("target_id"),
            *KEYS,
            pl.col("earned", "cap", "allowed", "excess").cast(DECIMAL),
            pl.col("capped_at").cast(counted_points.schema["awarded_at"]),
        )
    )
    return capping, adjustments


def _check_unique_caps(caps: pl.DataFrame) -> None:
    """Two caps for one customer and window would double that window's points rows."""
    if caps.select(pl.struct(*KEYS).is_duplicated().any()).item():
        dup = caps.filter(pl.struct(*KEYS).is_duplicated()).row(0, named=True)
        raise ValueError(
            f"capping_tables: several caps for customer {dup['customer_id']!r} in window "
            f"{dup['period_index']}; the caps frame must hold one row per customer and window"
        )
