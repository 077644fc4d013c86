"""Typed twins of the text columns: the values a row will be stored with, if it passes.

Numbers and words are converted by polars casts; timestamps by DuckDB, whose cast reads every
ISO 8601 shape exports use (``T`` or space, ``Z``, ``+05:30``, ``+0530``, date only, no seconds)
and, with the session ``TimeZone`` set to ``org.timezone`` for the call, reads a timestamp without
an offset as local time there. Conversions never fail: a value that does not convert gives a null
twin, and the pandera schema turns "text present, twin null" into a "wrong type" reject. Casts are
lenient (polars reads ``1e3`` as a decimal), so the schema also checks the text's shape; twins are
only trusted for rows that pass.
"""

from __future__ import annotations

import duckdb
import polars as pl

from pipeline.errors import InputError
from pipeline.loading.kinds import ColumnType
from pipeline.loading.schemas import TYPED
from pipeline.loading.sql import run, staged
from pipeline.workspace import quote_ident

RAW_VIEW = "__ms_raw"
DECIMAL = pl.Decimal(38, 4)


def add_typed(
    con: duckdb.DuckDBPyConnection,
    frame: pl.DataFrame,
    types: dict[str, ColumnType],
    *,
    timezone: str,
    customer_sql: str,
    choices: dict[str, tuple[str, ...]] | None = None,
) -> pl.DataFrame:
    """`frame` with a ``__t_<column>`` twin for each column of `types` that needs converting.

    Args:
        types: column -> how to convert it; text and id columns need no twin.
        timezone: the IANA zone of timestamps written without an offset.
        customer_sql: 'BIGINT' or 'VARCHAR', the workspace's customer id type.
        choices: ENUM column -> its values, to skip normalising a column already written so.
    """
    present = {c: t for c, t in types.items() if c in frame.columns}
    twins: list[pl.Expr] = []
    for c, t in present.items():
        col = pl.col(c)
        if t is ColumnType.DECIMAL:
            twins.append(col.cast(DECIMAL, strict=False).alias(TYPED + c))
        elif t is ColumnType.INTEGER or (t is ColumnType.CUSTOMER and customer_sql == "BIGINT"):
            twins.append(col.cast(pl.Int64, strict=False).alias(TYPED + c))
        elif t is ColumnType.ENUM:
            twins.append(_enum(frame, c, (choices or {}).get(c, ())).alias(TYPED + c))
    frame = frame.with_columns(twins)
    stamps = [c for c, t in present.items() if t is ColumnType.TIMESTAMP]
    if stamps:
        stamped = _timestamps(con, frame.select(stamps), timezone)
        frame = pl.concat([frame, stamped], how="horizontal")
    return frame


def _enum(frame: pl.DataFrame, column: str, choices: tuple[str, ...]) -> pl.Expr:
    """Enum words upper-case and trimmed; a column already written that way is used as is."""
    col = pl.col(column)
    if choices and frame.select((col.is_in(list(choices)) | col.is_null()).all()).item():
        return col
    return col.str.strip_chars().str.to_uppercase()


def _timestamps(
    con: duckdb.DuckDBPyConnection, stamps: pl.DataFrame, timezone: str
) -> pl.DataFrame:
    """TIMESTAMPTZ twins (UTC) of text timestamps, offset-less ones read in `timezone`."""
    casts = ", ".join(
        f"TRY_CAST({quote_ident(c)} AS TIMESTAMPTZ) AS {quote_ident(TYPED + c)}"
        for c in stamps.columns
    )
    previous = run(con, "SELECT current_setting('TimeZone')")[0][0]
    try:
        run(con, f"SET TimeZone = '{timezone.replace(chr(39), '')}'")
    except duckdb.Error as exc:
        raise InputError(
            f"org.timezone {timezone!r} is not a zone DuckDB knows; "
            "use an IANA name like 'Asia/Kolkata'"
        ) from exc
    try:
        with staged(con, RAW_VIEW, stamps):
            table = con.sql(f"SELECT {casts} FROM {RAW_VIEW}").to_arrow_table()
    finally:
        run(con, f"SET TimeZone = '{str(previous).replace(chr(39), '')}'")
    twins = pl.from_arrow(table)
    assert isinstance(twins, pl.DataFrame)
    return twins.with_columns(pl.all().dt.convert_time_zone("UTC"))
