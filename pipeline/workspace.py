"""The DuckDB file: open it, bring its schema up to date, and map lock clashes to exit 4.

Schema changes are the numbered files of ``sql/ddl``; each is applied once, in order, in the same
transaction that records its version in ``schema_version``. Analyst views (``sql/views``) are
re-created on every open so that a changed view needs no migration.

DuckDB itself allows one writing process per file; a second `milestones` that tries to open a
database another one holds gets `DatabaseBusyError` (exit 4) instead of DuckDB's lock message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from pipeline.config import Config, load_config
from pipeline.errors import DatabaseBusyError, InputError

SQL_DIR = Path(__file__).resolve().parent / "sql"
DEFAULT_DB = Path("milestones.duckdb")
CONFIG_NAME = "milestones.toml"

# Tables whose customer_id follows the type of the first loaded ids.
CUSTOMER_TABLES = (
    "target_progress",
    "period_achievements",
    "streak_runs",
    "streak_progress",
    "rewards",
    "capping",
    "capping_adjustments",
    "leaderboard",
    "transactions",
    "events",
    "points",
    "enrolments",
)


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB: the one place names enter SQL text."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: object) -> str:
    """A string literal for DuckDB, for the statements that take no parameter there (a COPY's
    file, a file list of read_parquet, VALUES of names)."""
    return "'" + str(text).replace("'", "''") + "'"


def base_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The names of the database's tables (not views)."""
    return {
        r[0]
        for r in con.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
        ).fetchall()
    }


@dataclass(frozen=True)
class Workspace:
    """Where the database and its config live."""

    db_path: Path
    config: Config

    @classmethod
    def resolve(cls, db: str | None, config: str | None) -> Workspace:
        """`--db` / MILESTONES_DB / ./milestones.duckdb, and `--config` or milestones.toml
        next to the database (SPEC §1)."""
        db_path = Path(db or os.environ.get("MILESTONES_DB") or DEFAULT_DB)
        if config:
            cfg = load_config(Path(config), required=True)
        elif (db_path.parent / CONFIG_NAME).exists():
            cfg = load_config(db_path.parent / CONFIG_NAME)
        else:
            # Fallback: the project folder the command runs in (see docs/decisions.md).
            cfg = load_config(Path.cwd() / CONFIG_NAME)
        # Unset output.dir: ./rewards beside the database (a set one is absolute by now).
        if not cfg.output_dir.is_absolute():
            cfg = replace(cfg, output_dir=db_path.parent / cfg.output_dir)
        return cls(db_path=db_path, config=cfg)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database (creating it and its schema on first use)."""
        con = connect(self.db_path, read_only=read_only)
        try:
            yield con
        finally:
            con.close()


def connect(db_path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open `db_path` and migrate it; ``":memory:"`` gives a fresh in-memory workspace."""
    path = str(db_path)
    if path != ":memory:":
        p = Path(path)
        if p.is_dir():
            raise InputError(
                f"database path {p} is a directory; give a file such as {p}/milestones.duckdb"
            )
        if not p.parent.exists():
            raise InputError(
                f"folder {p.parent} does not exist; create it first (mkdir -p {p.parent}) "
                "or choose another --db"
            )
        if read_only and not p.exists():
            raise InputError(
                f"database {p} does not exist yet; run `milestones load` or `groups create` first"
            )
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseBusyError(
                f"database {path} is in use by another milestones process; "
                "wait for it to finish (see `milestones runs`) and try again",
                detail=str(exc),
            ) from exc
        raise InputError(f"cannot open database {path}: {exc}") from exc
    except duckdb.Error as exc:
        raise InputError(f"cannot open database {path}: {exc}") from exc
    if not read_only:
        migrate(con)
    return con


def ddl_files() -> list[tuple[int, Path]]:
    """The numbered DDL files, in order."""
    files = []
    for f in sorted((SQL_DIR / "ddl").glob("*.sql")):
        m = re.match(r"(\d+)_", f.name)
        if m:
            files.append((int(m.group(1)), f))
    return files


def view_files() -> list[Path]:
    return sorted((SQL_DIR / "views").glob("*.sql"))


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ DEFAULT now())"
    )
    # fetchall, not fetchone: duckdb 2.0 keeps a half-read result open and then refuses con.sql().
    rows = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()
    return int(rows[0][0]) if rows else 0


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Apply every DDL file newer than the recorded version, then (re)create the views."""
    current = schema_version(con)
    for version, path in ddl_files():
        if version <= current:
            continue
        con.execute("BEGIN")
        try:
            con.execute(path.read_text(encoding="utf-8"))
            con.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, path.name]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    for path in view_files():
        con.execute(path.read_text(encoding="utf-8"))


def customer_id_type(con: duckdb.DuckDBPyConnection) -> str:
    """'BIGINT' or 'VARCHAR': the type customer ids were first loaded with."""
    rows = con.execute(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'target_progress' AND column_name = 'customer_id'"
    ).fetchall()
    return str(rows[0][0]) if rows else "BIGINT"


def set_customer_id_type(con: duckdb.DuckDBPyConnection, type_name: str) -> None:
    """Switch every customer_id column to `type_name` ('BIGINT' or 'VARCHAR').

    Allowed only while no table holds a customer yet: afterwards the ids' type is settled and a
    clash is the caller's error to report.
    """
    if customer_id_type(con) == type_name:
        return
    existing = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    for table in CUSTOMER_TABLES:
        if table not in existing:
            continue
        n = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()[0]
        if n[0]:
            raise InputError(
                f"customer ids were loaded as {customer_id_type(con)} but this file has "
                f"{type_name} ids; load every export with the same kind of customer_id"
            )
    views = [
        r[0]
        for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    ]
    for v in views:
        con.execute(f"DROP VIEW IF EXISTS {quote_ident(v)}").fetchall()
    for table in CUSTOMER_TABLES:
        if table in existing:
            con.execute(
                f"ALTER TABLE {quote_ident(table)} ALTER customer_id TYPE {type_name}"
            ).fetchall()
    for path in view_files():
        con.execute(path.read_text(encoding="utf-8")).fetchall()
