"""Leaderboards: rank every customer with a counted record in a window (SPEC §8, §11, §13).

Pure: one target's per-window progress in, `leaderboard` rows out. Ranks are distinct positions
(1, 2, 3 ...), as the platform does: ties on value go to the earlier `last_activity_at`, then to
the smaller `customer_id`, compared as numbers when every id on the board is an integer (or
all-digit text: "9" before "10"), else as text.
"""

from __future__ import annotations

import polars as pl

DECIMAL = pl.Decimal(38, 4)
_INTEGER_TEXT = r"^\s*-?\d+\s*$"


def leaderboard_table(progress: pl.DataFrame, group_id: int, target_id: int) -> pl.DataFrame:
    """Rank one target's customers per window.

    Args:
        progress: customer_id (Int64 or String), period_index, value (Decimal),
            last_activity_at (Datetime UTC): one row per customer with a counted record in
            that window.
        group_id: written into every row.
        target_id: written into every row.

    Returns:
        The SPEC §11 `leaderboard` rows, sorted by period_index then rank.
    """
    ties = _customer_order(progress["customer_id"])
    ranked = (
        progress.select("period_index", "customer_id", "value", "last_activity_at")
        .with_columns(_tie=ties)
        .sort(
            "period_index",
            "value",
            "last_activity_at",
            "_tie",
            "customer_id",
            descending=[False, True, False, False, False],
            nulls_last=True,
        )
    )
    return ranked.select(
        pl.lit(group_id, pl.Int64).alias("group_id"),
        pl.lit(target_id, pl.Int64).alias("target_id"),
        pl.col("period_index").cast(pl.Int32),
        "customer_id",
        pl.col("value").cast(DECIMAL),
        "last_activity_at",
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("period_index").alias("rank"),
    )


def _customer_order(ids: pl.Series) -> pl.Expr:
    """The tie-break key: the id as a number when every id is an integer, else the text."""
    if ids.dtype.is_integer():
        return pl.col("customer_id")
    text = pl.col("customer_id").cast(pl.String)
    if ids.dtype == pl.String and ids.str.contains(_INTEGER_TEXT).all():
        numbers = ids.str.strip_chars().cast(pl.Int128, strict=False)
        if numbers.null_count() == ids.null_count():  # all fit: no id beyond 38 digits
            return text.str.strip_chars().cast(pl.Int128)
    return text
