"""`milestones load`: export files -> validated, typed, upserted rows, in one transaction.

Per command: read every file (as text), settle the type of customer ids and of extra columns,
type and validate each file (first pass), check references to transactions against the loaded
table plus this command's own good rows (second pass), then add new extra columns and upsert each
file's good rows on the key, recording every file in `loads` and every refused row in `rejects`.
Everything happens inside one DuckDB transaction: a file that is refused whole, or any failure
half-way, leaves every table as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from pipeline.errors import InputError
from pipeline.loading import schemas
from pipeline.loading.convert import add_typed
from pipeline.loading.kinds import ColumnType, Kind, get_kind
from pipeline.loading.readers import ROW, expand_paths, read_raw
from pipeline.loading.schemas import TXN_TYPE, TYPED, typed
from pipeline.loading.sql import run, staged
from pipeline.loading.validate import Checked, check
from pipeline.workspace import customer_id_type, quote_ident, set_customer_id_type

Progress = Callable[[str], None]

# A customer id that can be stored as BIGINT without changing how it reads (no leading zeros).
CUSTOMER_INT = r"^-?(0|[1-9]\d{0,17})$"
# An extra column is DECIMAL when every value of its first file fits DECIMAL(18, 4) exactly.
DECIMAL_EXTRA = r"^-?(0|[1-9]\d{0,13})(\.\d+)?$"
STAGE = "__ms_stage"


@dataclass(frozen=True)
class FileReport:
    """What happened to one file."""

    load_id: int
    path: str
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    reasons: dict[str, int] = field(default_factory=dict)  # "<column>: <reason>" -> rows


@dataclass(frozen=True)
class LoadReport:
    """What happened to one `load` command."""

    kind: str
    files: tuple[FileReport, ...]

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(f.rows_rejected for f in self.files)

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            for k, n in f.reasons.items():
                out[k] = out.get(k, 0) + n
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class _File:
    path: Path
    frame: pl.DataFrame             # text columns, typed twins, __row
    columns: list[str]              # the file's own columns (canonical names)
    result: Checked | None = None


def load_exports(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    paths: list[str] | tuple[str, ...],
    *,
    timezone: str = "UTC",
    progress: Progress | None = None,
) -> LoadReport:
    """Load export files of one kind into the workspace (SPEC §3).

    Args:
        con: an open, migrated workspace connection (not inside a transaction).
        kind: transactions, line-items, events, points, stores or enrolments.
        paths: files or globs; CSV, Parquet or JSON lines by extension.
        timezone: ``org.timezone``, the zone of timestamps written without an offset.
        progress: called with one line per step, for a terminal.

    Raises:
        InputError: a file is unreadable, misses a required column, or has text customer ids
            where the workspace holds integer ones; nothing of the command is loaded.
    """
    k = get_kind(kind)
    files = expand_paths(list(paths))
    say = progress or (lambda _msg: None)
    run(con, "BEGIN TRANSACTION")
    try:
        report = _load(con, k, files, timezone, say)
        run(con, "COMMIT")
    except BaseException:
        run(con, "ROLLBACK")
        raise
    return report


def _load(
    con: duckdb.DuckDBPyConnection, kind: Kind, paths: list[Path], timezone: str, say: Progress
) -> LoadReport:
    table_columns = _table_columns(con, kind.table)
    extras: dict[str, str] = {
        name: sql for name, sql in table_columns.items() if kind.column(name) is None
    }
    new_extras: dict[str, str] = {}
    files: list[_File] = []
    for path in paths:
        say(f"{path}: reading")
        raw = read_raw(path)
        raw = _canonical_names(raw, kind, table_columns)
        own = [c for c in raw.columns if c != ROW]
        raw = raw.with_columns(
            pl.lit(None, pl.String).alias(s.name) for s in kind.columns if s.name not in raw.columns
            and not s.required
        )
        customer_sql = _settle_customer_ids(con, kind, raw, path)
        for c in own:
            if kind.column(c) is None and c not in extras:
                extras[c] = new_extras[c] = _infer_extra(raw[c])
        types = {s.name: s.type for s in kind.columns}
        decimal_extras = tuple(
            c for c in own if kind.column(c) is None and extras[c].startswith("DECIMAL")
        )
        types.update({c: ColumnType.DECIMAL for c in decimal_extras})
        say(f"{path}: {raw.height:,} rows read; converting")
        choices = {s.name: s.choices for s in kind.columns if s.choices}
        frame = add_typed(
            con, raw, types, timezone=timezone, customer_sql=customer_sql, choices=choices
        )
        say(f"{path}: validating")
        f = _File(path, frame, own)
        f.result = check(frame, schemas.schema_for(kind, decimal_extras), path, own)
        files.append(f)

    _check_references(con, kind, files)

    for name, sql in new_extras.items():
        run(con, f"ALTER TABLE {quote_ident(kind.table)} ADD COLUMN {quote_ident(name)} {sql}")

    reports = []
    for f in files:
        assert f.result is not None
        reports.append(_write(con, kind, f, extras, say))
    return LoadReport(kind.name, tuple(reports))


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    rows = run(
        con,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    )
    return {str(n): str(t) for n, t in rows}


def _canonical_names(raw: pl.DataFrame, kind: Kind, table_columns: dict[str, str]) -> pl.DataFrame:
    """Match headers case-insensitively to the kind's columns and the table's extra columns."""
    known = {s.name.lower(): s.name for s in kind.columns}
    for name in table_columns:
        known.setdefault(name.lower(), name)
    return raw.rename({c: known.get(c.lower(), c) for c in raw.columns if c != ROW})


def _settle_customer_ids(
    con: duckdb.DuckDBPyConnection, kind: Kind, raw: pl.DataFrame, path: Path
) -> str:
    """'BIGINT' or 'VARCHAR': the workspace's customer id type, switched to text on first use.

    Integer ids fit either type; text ids need VARCHAR, which the workspace takes only while no
    table holds a customer yet.
    """
    current = customer_id_type(con)
    if current != "BIGINT" or kind.column("customer_id") is None or "customer_id" not in raw:
        return current
    ids = raw.select(ROW, pl.col("customer_id")).drop_nulls("customer_id")
    text = ids.filter(~pl.col("customer_id").str.contains(CUSTOMER_INT))
    if text.is_empty():
        return current
    try:
        set_customer_id_type(con, "VARCHAR")
    except InputError as exc:
        row, value = text.row(0)
        raise InputError(
            f"{path} row {row}: customer_id {value!r} is text, but this workspace's customer ids "
            "were loaded as integers; nothing of this command was loaded: load every export with "
            "the same kind of customer_id, or use a new workspace (--db)"
        ) from exc
    return "VARCHAR"


def _infer_extra(values: pl.Series) -> str:
    """An extra column's SQL type: DECIMAL(18, 4) when every value is an exact decimal that fits.

    Leading zeros ("007") keep a column text, as do longer fractions: such values are codes or
    measurements, not amounts, and a DECIMAL column would lose or refuse them.
    """
    present = values.drop_nulls().str.strip_chars()
    if present.is_empty() or not present.str.contains(DECIMAL_EXTRA).all():
        return "VARCHAR"
    if present.str.contains(schemas.OVER_4_DIGITS).any():
        return "VARCHAR"
    return "DECIMAL(18,4)"


def _check_references(con: duckdb.DuckDBPyConnection, kind: Kind, files: list[_File]) -> None:
    """Second pass: line items and returns must point at known transactions.

    Known = loaded before, or among this command's rows that passed the first pass. Only the
    rows that point somewhere are validated again (2% of a transactions file, say).
    """
    if kind.name not in ("transactions", "line-items"):
        return
    results = [f.result for f in files if f.result is not None]
    if kind.name == "transactions":
        pointing = [
            r.good.filter(schemas.is_return() & pl.col("parent_txn_id").is_not_null())
            for r in results
        ]
        wanted = pl.concat([p.select(pl.col("parent_txn_id").alias("txn_id")) for p in pointing])
        if wanted.is_empty():
            return
        wanted = wanted.unique()
        ours = pl.concat([r.good.select("txn_id") for r in results])
        ours = ours.filter(pl.col("txn_id").is_in(wanted["txn_id"].implode()))
        known = pl.concat([_loaded_txns(con, wanted).select("txn_id"), ours])["txn_id"]
    else:
        wanted = pl.concat([r.good.select("txn_id") for r in results]).drop_nulls().unique()
        loaded = _loaded_txns(con, wanted).rename({"type": TXN_TYPE})
        known = loaded["txn_id"]
        pointing = [r.good.join(loaded, on="txn_id", how="left") for r in results]
    schema = schemas.references_schema(kind, known)
    assert schema is not None
    for f, rows in zip(files, pointing, strict=True):
        assert f.result is not None
        f.result = f.result.merge(check(rows, schema, f.path, f.columns))


def _loaded_txns(con: duckdb.DuckDBPyConnection, wanted: pl.DataFrame) -> pl.DataFrame:
    """The (txn_id, type) of loaded transactions among `wanted`."""
    with staged(con, STAGE, wanted):
        table = con.sql(
            f"SELECT t.txn_id, t.type FROM transactions AS t "
            f"SEMI JOIN {STAGE} AS w ON t.txn_id = w.txn_id"
        ).to_arrow_table()
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


def _final(kind: Kind, frame: pl.DataFrame, own: list[str], extras: dict[str, str]) -> pl.DataFrame:
    """The rows as the table stores them: typed values, defaults applied, extras kept."""
    exprs: list[pl.Expr] = []
    for spec in kind.columns:
        value = typed(spec.name) if TYPED + spec.name in frame.columns else pl.col(spec.name)
        if spec.default is not None:
            if spec.default.startswith("="):
                fallback = _value(frame, spec.default[1:])
            elif spec.type is ColumnType.DECIMAL:
                fallback = pl.lit(spec.default).cast(pl.Decimal(38, 4))
            else:
                fallback = pl.lit(spec.default)
            value = pl.coalesce(value, fallback)
        exprs.append(value.alias(spec.name))
    for c in own:
        if kind.column(c) is None:
            exprs.append(_value(frame, c).alias(c))
    return frame.select(exprs)


def _value(frame: pl.DataFrame, column: str) -> pl.Expr:
    return typed(column) if TYPED + column in frame.columns else pl.col(column)


def _write(
    con: duckdb.DuckDBPyConnection, kind: Kind, f: _File, extras: dict[str, str], say: Progress
) -> FileReport:
    assert f.result is not None
    good, rejects = f.result.good, f.result.rejects
    load_id = int(run(con, "SELECT nextval('load_ids')")[0][0])
    if good.height:
        say(f"{f.path}: writing {good.height:,} rows")
        stage = _final(kind, good, f.columns, extras)
        table = quote_ident(kind.table)
        with staged(con, STAGE, stage):
            if _has_rows(con, kind.table):
                run(con, f"DELETE FROM {table} AS t USING {STAGE} AS s WHERE {_key_match(kind)}")
            run(con, f"INSERT INTO {table} BY NAME SELECT * FROM {STAGE}")
    run(
        con,
        "INSERT INTO loads (load_id, kind, path, rows_read, rows_loaded, rows_rejected, loaded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, now())",
        [load_id, kind.name, str(f.path), f.frame.height, good.height, rejects.height],
    )
    if rejects.height:
        out = rejects.select(
            pl.lit(load_id, pl.Int64).alias("load_id"),
            pl.lit(kind.name).alias("kind"),
            pl.lit(str(f.path)).alias("path"),
            pl.col(ROW).cast(pl.Int64).alias("row_number"),
            pl.col("record"),
            pl.col("reason"),
        )
        with staged(con, STAGE, out):
            run(con, f"INSERT INTO rejects BY NAME SELECT * FROM {STAGE}")
    return FileReport(
        load_id, str(f.path), f.frame.height, good.height, rejects.height, f.result.reasons
    )


def _has_rows(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    sql = f"SELECT EXISTS (SELECT 1 FROM {quote_ident(table)})"
    return bool(run(con, sql)[0][0])


def _key_match(kind: Kind) -> str:
    """The upsert's key comparison; optional key columns match null to null."""
    parts = []
    for name in kind.key:
        spec = kind.column(name)
        q = quote_ident(name)
        if name == "group_name":
            parts.append(f"lower(trim(t.{q})) = lower(trim(s.{q}))")
        elif spec is not None and not spec.required:
            parts.append(f"t.{q} IS NOT DISTINCT FROM s.{q}")
        else:
            parts.append(f"t.{q} = s.{q}")
    return " AND ".join(parts)


def describe(report: LoadReport) -> list[str]:
    """Lines for the terminal: per file, then the count per reason."""
    lines = []
    for f in report.files:
        lines.append(
            f"{f.path}: {f.rows_read:,} read, {f.rows_loaded:,} loaded, "
            f"{f.rows_rejected:,} rejected (load {f.load_id})"
        )
    for reason, n in report.reasons.items():
        lines.append(f"  {n:,} × {reason}")
    if report.rows_rejected:
        ids = ", ".join(str(f.load_id) for f in report.files if f.rows_rejected)
        lines.append(f"Rejected rows are in the rejects table (load_id {ids}).")
    return lines

