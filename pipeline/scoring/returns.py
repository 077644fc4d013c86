"""Returns (SPEC §6.2, §6.3, §13 "Returns and parents"): which window a return reduces.

- A return with a known parent counts exactly when that bill counted for the target (LINEITEM: the
  bill had a counted line and the returned line passes the rule); without a known parent the rule
  and filters are applied to the return itself.
- `original`: the window of the parent bill (parentless: the window of the return's own date).
- `carry`: the customer's next window after the one holding the return's own date (a date between
  windows goes to the first window starting after it); no such window started by D: no effect yet.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pipeline.definitions.model import TargetEntity
from pipeline.scoring import records
from pipeline.scoring.context import GroupContext
from pipeline.scoring.measures import CONTRIB_COLS

Assign = Callable[[pl.LazyFrame], pl.LazyFrame]


def placed_returns(
    ctx: GroupContext,
    entity: TargetEntity,
    returns: pl.LazyFrame,
    counted_bills: pl.LazyFrame,
    assign_own: Assign,
    assign_next: Assign,
) -> pl.LazyFrame:
    """Returns with their window ``_win`` and ``_contrib`` = minus what they take away.

    Args:
        returns: from `records.return_records` with ``named=True`` (``_parent``: the parent id
            as exported), already limited to D and enrolment, with ``_date``.
        counted_bills: ``_bill, _win`` of the regular bills that counted for this target.
        assign_own: puts records into the window holding their ``_date``.
        assign_next: puts records into the first window starting after their ``_date``.
    """
    mode = ctx.config.returns_mode
    known, parentless = by_parent(
        ctx, entity, returns, counted_bills.select("_bill", pl.col("_win").alias("_pwin"))
    )
    if mode == "original":
        known = known.with_columns(pl.col("_pwin").alias("_win"))
        parentless = assign_own(parentless)
    else:  # carry
        known = assign_next(known.drop("_pwin"))
        parentless = assign_next(parentless)
    contrib = (-pl.col("_red")).alias("_contrib")
    return pl.concat(
        [
            known.with_columns(contrib).select(CONTRIB_COLS),
            parentless.with_columns(contrib).select(CONTRIB_COLS),
        ],
        how="vertical_relaxed",
    )


def by_parent(
    ctx: GroupContext, entity: TargetEntity, returns: pl.LazyFrame, bills: pl.LazyFrame
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(known, parentless): the returns whose parent is one of the counted `bills` (``_bill``
    and any columns to carry, which the known returns get), and the returns that count on their
    own rule (``_pass``) because their parent is no known bill.

    `returns`: from `records.return_records` with ``named=True`` (``_parent``: the parent id as
    exported). A named parent that did not count is either a regular bill (the return takes
    nothing) or no known bill (the return is parentless). Usually every named parent counted,
    and the lookup among all regular bills is skipped.
    """
    named = returns.filter(pl.col("_parent").is_not_null())
    # Only the bills some return names: a semi join with the (few) parents before `unique`,
    # rather than deduplicating every counted bill.
    bills = (
        bills.rename({"_bill": "_parent"})
        .join(named.select("_parent").unique(), on="_parent", how="semi")
        .unique()
        .collect()
        .lazy()
    )
    known = named.join(bills, on="_parent", how="inner")
    if entity is TargetEntity.LINEITEM:
        known = known.filter(pl.col("_rule"))
    missed = named.join(bills, on="_parent", how="anti").collect()
    parentless = returns.filter(pl.col("_parent").is_null())
    if missed.height:
        regular = records.regular_bills(ctx, missed.lazy().select("_parent"))
        unknown = missed.lazy().join(regular, on="_parent", how="anti")
        parentless = pl.concat([parentless, unknown], how="vertical_relaxed")
    return known, parentless.filter(pl.col("_pass"))
