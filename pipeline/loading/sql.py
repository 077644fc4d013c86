"""The two ways loading talks to DuckDB: run a statement, and expose a frame under a name.

DuckDB 2.0 keeps a statement's result open until it is fetched, and refuses to register a frame
while one is open; every statement here is therefore fetched to the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import polars as pl


def run(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
    """Execute `sql` (values as parameters, never pasted) and fetch every row."""
    return con.execute(sql, list(params or [])).fetchall()


@contextmanager
def staged(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> Iterator[str]:
    """`frame` readable as the view `name` inside the block (zero-copy, through Arrow)."""
    con.register(name, frame)
    try:
        yield name
    finally:
        con.unregister(name)
