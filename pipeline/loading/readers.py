"""Export files -> one all-text polars frame per file, whatever the format.

Every format is brought to the same shape before validation: one String column per export column
plus ``__row`` (the 1-based data row: CSV header not counted, JSON lines and Parquet records
counted from 1). Keeping the values as text until validation is what makes the three formats give
identical tables and lets a bad value be reported as written instead of failing the whole read:
a JSON ``3.33`` becomes the text ``3.33`` (its shortest round-trip form), a Parquet timestamp
becomes ISO text with its offset (or without one when the column has no zone).

Only native readers are used (polars' CSV, Parquet and NDJSON readers); no Python loop over rows.
"""

from __future__ import annotations

import glob
from pathlib import Path

import polars as pl

from pipeline.errors import InputError

ROW = "__row"
FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
ATTRIBUTES = "attributes"


def expand_paths(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """Each argument as a file or a glob (``exports/*.csv``), in order, without repeats.

    Raises:
        InputError: a pattern that matches no file.
    """
    out: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise InputError(f"no file matches {pattern!r}; check the path or the glob")
        else:
            p = Path(pattern)
            if p.is_dir():
                raise InputError(f"{pattern} is a directory; give files or a glob like dir/*.csv")
            if not p.is_file():
                raise InputError(f"{pattern} does not exist; check the path")
            matches = [p]
        for m in matches:
            if m not in out:
                out.append(m)
    return out


def file_format(path: Path) -> str:
    """'csv', 'parquet' or 'jsonl', from the file name."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unknown file type {path.suffix or '(none)'!r}; "
            f"name it {', '.join(FORMATS)}"
        )
    return fmt


def read_raw(path: Path) -> pl.DataFrame:
    """Read one export file as text columns plus ``__row``.

    Column names are stripped of surrounding spaces; a JSON ``attributes`` object is flattened
    into columns of its own.

    Raises:
        InputError: the file cannot be read or parsed, or its column names clash.
    """
    fmt = file_format(path)
    try:
        if fmt == "csv":
            df = pl.read_csv(path, infer_schema=False, raise_if_empty=True)
        elif fmt == "parquet":
            df = pl.read_parquet(path)
        else:
            df = pl.read_ndjson(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path}: cannot read it as {fmt.upper()} ({first}); nothing of this command was "
            "loaded: fix or remove the file and load again",
            detail=str(exc),
        ) from exc
    df = _flatten_attributes(df, path)
    df = df.rename({c: c.strip() for c in df.columns})
    _check_names(df.columns, path)
    df = to_text(df)
    return df.with_row_index(ROW, offset=1)


def _flatten_attributes(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """A JSON ``attributes`` object becomes one column per attribute (SPEC §3)."""
    if ATTRIBUTES not in df.columns:
        return df
    dtype = df.schema[ATTRIBUTES]
    if isinstance(dtype, pl.Null):
        return df.drop(ATTRIBUTES)
    if not isinstance(dtype, pl.Struct):
        return df
    fields = [f.name for f in dtype.fields]
    lower = {c.strip().lower() for c in df.columns if c != ATTRIBUTES}
    clash = [f for f in fields if f.strip().lower() in lower]
    if clash:
        raise InputError(
            f"{path}: attributes.{clash[0]} clashes with the column {clash[0]!r}; "
            "rename one of them in the export"
        )
    return df.unnest(ATTRIBUTES)


def _check_names(columns: list[str], path: Path) -> None:
    seen: dict[str, str] = {}
    for c in columns:
        if not c:
            raise InputError(f"{path}: a column has an empty name; give every column a header")
        if c.startswith("__"):
            raise InputError(f"{path}: column {c!r}: names starting with '__' are reserved")
        key = c.lower()
        if key in seen:
            raise InputError(
                f"{path}: columns {seen[key]!r} and {c!r} differ only in case; "
                "the database cannot tell them apart, rename one"
            )
        seen[key] = c


def to_text(df: pl.DataFrame) -> pl.DataFrame:
    """Every column as text, written the way a CSV export would write it."""
    exprs: list[pl.Expr] = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.String):
            exprs.append(col)
        elif isinstance(dtype, pl.Null):
            exprs.append(col.cast(pl.String))
        elif isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                exprs.append(col.dt.strftime("%Y-%m-%d %H:%M:%S%.f").alias(name))
            else:
                utc = col.dt.convert_time_zone("UTC")
                exprs.append(utc.dt.strftime("%Y-%m-%d %H:%M:%S%.f+00:00").alias(name))
        elif isinstance(dtype, pl.Date):
            exprs.append(col.dt.strftime("%Y-%m-%d").alias(name))
        elif isinstance(dtype, pl.Boolean):
            exprs.append(pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).alias(name))
        elif isinstance(dtype, pl.Struct | pl.List | pl.Array):
            # Kept as JSON text: reachable from rules with contains()/matches().
            json = pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
            exprs.append(pl.when(col.is_not_null()).then(json).alias(name))
        else:
            exprs.append(col.cast(pl.String))
    return df.select(exprs)
