"""Shared fixtures: a fresh in-memory workspace and a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from pipeline import workspace

REPO = Path(__file__).resolve().parent.parent
SEEDS_DIR = REPO / "data" / "groups"


@pytest.fixture
def fresh_db() -> Iterator[duckdb.DuckDBPyConnection]:
    """An empty, migrated in-memory workspace."""
    con = workspace.connect(":memory:")
    yield con
    con.close()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A workspace file path in a temp folder (not created yet)."""
    return tmp_path / "w.duckdb"
