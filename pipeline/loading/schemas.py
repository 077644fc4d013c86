"""One pandera schema (polars backend) per export kind: what a row must be to be loaded.

The schemas validate the all-text frame of a file (`readers.read_raw`) to which `convert` has
added a typed twin ``__t_<column>`` of every column that is not plain text. A check passes a row
when its value is empty (emptiness is the job of ``nullable=False``) or when the value is right;
each check's ``error`` is the reason a refused row gets in ``rejects``. The frame is an eager
DataFrame on purpose: validating a LazyFrame checks only the schema, not the data
(unionai-oss/pandera#1566), and every data check here has to run.

Two passes, because some checks need more than the file: `schema_for` checks a file on its own;
`references_schema` then checks the surviving rows against the transactions that are known once
the whole command is read (the loaded table plus the command's own files).
"""

from __future__ import annotations

from collections.abc import Callable

import pandera.polars as pa
import polars as pl

from pipeline.loading.kinds import KINDS, ColumnSpec, ColumnType, Kind

TYPED = "__t_"
TXN_TYPE = "__txn_type"  # line items: the type of their transaction, joined for the second pass

# Plain numbers only: no spaces, no exponent, at most 14 integer digits (DECIMAL(18, 4)).
DECIMAL_TEXT = r"^[+-]?(\d{1,14}(\.\d*)?|\.\d+)$"
INTEGER_TEXT = r"^[+-]?\d{1,18}$"
# More than 4 fractional digits once trailing zeros are dropped: 3.3300 is fine, 3.33333 is not.
OVER_4_DIGITS = r"\.\d{4}\d*[1-9]"

# Reasons, as they appear in `rejects` after "<column> '<value>': ".
MISSING = "missing required value"
NOT_DECIMAL = "wrong type, not a decimal number"
NOT_INTEGER = "wrong type, not a whole number"
NOT_TIMESTAMP = "wrong type, not a timestamp (like 2024-03-15 20:00:00 or 2024-03-15T20:00:00Z)"
SCALE = "more than 4 fractional digits (rejected, never rounded)"
NEGATIVE_QTY = "negative qty on a regular transaction"
NEGATIVE_LINE_QTY = "negative qty on a line of a regular transaction"
DUPLICATE = "duplicate key within the file ({key}); the first row with it was loaded"
UNKNOWN_TXN = "line item whose transaction is unknown; load its transaction first"
UNKNOWN_PARENT = (
    "return whose parent_txn_id is unknown; load the original bill first or leave it empty"
)


def typed(column: str) -> pl.Expr:
    """The typed twin of a raw column."""
    return pl.col(TYPED + column)


def is_return() -> pl.Expr:
    """A transaction row is a return; an empty type is the default, REGULAR."""
    return typed("type").fill_null("REGULAR") == "RETURN"


def _row_check(fn: Callable[[str], pl.Expr], error: str) -> pa.Check:
    """A column check from an expression on the column's name; an empty value always passes.

    The passing of empty values is explicit: pandera's ``ignore_na`` only forgives a null check
    result, not a null input.
    """

    def check(data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_null() | fn(data.key).fill_null(True))

    return pa.Check(check, error=error)


def unknown_value(choices: tuple[str, ...]) -> str:
    return f"unknown value, expected one of {', '.join(choices)}"


def _is_decimal(c: str) -> pl.Expr:
    return pl.col(c).str.contains(DECIMAL_TEXT) & typed(c).is_not_null()


def _is_integer(c: str) -> pl.Expr:
    return pl.col(c).str.contains(INTEGER_TEXT) & typed(c).is_not_null()


def _at_most_4_digits(c: str) -> pl.Expr:
    return ~pl.col(c).str.contains(OVER_4_DIGITS)


def _converted(c: str) -> pl.Expr:
    return typed(c).is_not_null()


def column_checks(spec: ColumnSpec, kind: Kind) -> list[pa.Check]:
    """The value checks of one column."""
    t = spec.type
    checks: list[pa.Check] = []
    if t is ColumnType.DECIMAL:
        checks += [_row_check(_is_decimal, NOT_DECIMAL), _row_check(_at_most_4_digits, SCALE)]
    elif t is ColumnType.INTEGER:
        checks.append(_row_check(_is_integer, NOT_INTEGER))
    elif t is ColumnType.TIMESTAMP:
        checks.append(_row_check(_converted, NOT_TIMESTAMP))
    elif t is ColumnType.ENUM:
        allowed = list(spec.choices)
        checks.append(_row_check(lambda c: typed(c).is_in(allowed), unknown_value(spec.choices)))
    if spec.non_negative and kind.name == "transactions":
        # Returns may be written negative (SPEC §13: a return reduces by |qty|).
        checks.append(_row_check(lambda c: (typed(c) >= 0) | is_return(), NEGATIVE_QTY))
    return checks


def duplicate_check(kind: Kind) -> pa.Check:
    """Within one file a key may appear once; later rows with the same key are refused.

    Keys compare as they will be stored: typed where typing merges spellings (line_no ``01`` and
    ``1``), and group names trimmed and case-insensitively (SPEC §13). A row whose required key
    part is missing is left to the missing-value check.
    """

    def check(data: pa.PolarsData) -> pl.LazyFrame | bool:
        names = set(data.lazyframe.collect_schema().names())

        def key(c: str) -> pl.Expr:
            if c == "group_name":
                return pl.col(c).str.strip_chars().str.to_lowercase()
            return typed(c) if TYPED + c in names else pl.col(c)

        whole = pl.struct([key(c).alias(c) for c in kind.key])
        # Fast path: sorted key hashes with no neighbour alike mean no duplicates at all
        # (polars' is_first_distinct costs several times more on a million keys).
        hashes = (key(kind.key[0]) if len(kind.key) == 1 else whole).hash().sort()
        if not data.lazyframe.select((hashes == hashes.shift(1)).any()).collect().item():
            return True
        required = [c for c in kind.key if (s := kind.column(c)) is not None and s.required]
        incomplete = pl.any_horizontal([key(c).is_null() for c in required])
        return data.lazyframe.select(incomplete | whole.is_first_distinct())

    return pa.Check(check, error=DUPLICATE.format(key=", ".join(kind.key)))


def schema_for(kind: Kind, decimal_extras: tuple[str, ...] = ()) -> pa.DataFrameSchema:
    """The first-pass schema of `kind`, plus decimal checks for extra columns typed DECIMAL.

    Every column is text (the frame is all text until it passes); a required column that the
    file lacks fails ``column_in_dataframe``, which refuses the whole file.
    """
    base = BASE_SCHEMAS[kind.name]
    if not decimal_extras:
        return base
    checks = column_checks(ColumnSpec("extra", ColumnType.DECIMAL), kind)
    extras = {c: pa.Column(pl.String, nullable=True, checks=checks) for c in decimal_extras}
    return base.add_columns(extras)


def _base_schema(kind: Kind) -> pa.DataFrameSchema:
    columns = {
        spec.name: pa.Column(
            pl.String,
            nullable=not spec.required,
            required=spec.required,
            checks=column_checks(spec, kind),
        )
        for spec in kind.columns
    }
    return pa.DataFrameSchema(
        columns,
        checks=[duplicate_check(kind)],
        strict=False,  # extra columns are kept (SPEC §3)
        name=kind.name,
    )


BASE_SCHEMAS: dict[str, pa.DataFrameSchema] = {name: _base_schema(k) for name, k in KINDS.items()}


def references_schema(kind: Kind, known_txn_ids: pl.Series) -> pa.DataFrameSchema | None:
    """The second-pass schema: rows that point at transactions must point at known ones.

    Args:
        kind: transactions (returns' ``parent_txn_id``) or line-items (``txn_id``, and the sign of
            ``qty``, which may be negative only on a return's lines).
        known_txn_ids: every txn_id loaded before plus those of this command that passed.
    Returns:
        None for kinds that reference nothing.
    """
    known = known_txn_ids.implode()
    if kind.name == "transactions":
        parent = _row_check(
            lambda c: ~is_return() | pl.col(c).is_in(known), UNKNOWN_PARENT
        )
        return pa.DataFrameSchema(
            {"parent_txn_id": pa.Column(pl.String, nullable=True, checks=[parent])}, strict=False
        )
    if kind.name == "line-items":
        txn = _row_check(lambda c: pl.col(c).is_in(known), UNKNOWN_TXN)
        line_of_return = pl.col(TXN_TYPE).fill_null("REGULAR") == "RETURN"
        qty = _row_check(lambda c: (typed(c) >= 0) | line_of_return, NEGATIVE_LINE_QTY)
        return pa.DataFrameSchema(
            {
                "txn_id": pa.Column(pl.String, checks=[txn]),
                "qty": pa.Column(pl.String, checks=[qty]),
            },
            strict=False,
        )
    return None
