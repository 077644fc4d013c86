"""A regular (non-editable) install must carry the DDL, the views and the demo data.

They live at the repository root (`sql/`, `data/`) and the package links to them
(`pipeline/sql`, `pipeline/data`); `pyproject.toml` lists them as package data. A file added in a
new sub-folder that no pattern covers would be missing from the wheel: a fresh `pip install .`
then fails at its first `load` ("Sequence with name load_ids does not exist").
"""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

import pipeline
from pipeline import demo, workspace

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(pipeline.__file__).resolve().parent


def _patterns() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-data"]["pipeline"]


def test_the_package_reads_sql_and_demo_data_through_its_own_folder():
    assert workspace.SQL_DIR == PACKAGE / "sql"
    assert demo.DATA == PACKAGE / "data"
    assert (PACKAGE / "sql").resolve() == ROOT / "sql"
    assert (PACKAGE / "data").resolve() == ROOT / "data"


def test_every_sql_and_data_file_is_package_data():
    patterns = _patterns()
    files = [p for d in ("sql", "data") for p in (ROOT / d).rglob("*") if p.is_file()]
    assert any(f.suffix == ".sql" for f in files)
    missing = [
        str(f.relative_to(ROOT))
        for f in files
        if not any(PurePosixPath(f.relative_to(ROOT).as_posix()).match(p) for p in patterns)
    ]
    assert missing == []
