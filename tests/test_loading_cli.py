"""`milestones load KIND PATH...` through click: summary lines, exit codes, the `Error:` line,
the org timezone from milestones.toml, progress only on a terminal."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from pipeline import cli as cli_module
from pipeline.cli import main

TXNS = (
    "txn_id,customer_id,txn_time,amount,type,parent_txn_id\n"
    "T1,7,2024-03-16 01:30:00,10.50,REGULAR,\n"
    "T2,7,2024-03-16 02:00:00,abc,REGULAR,\n"
    "T3,8,2024-03-16 03:00:00,1.00001,REGULAR,\n"
    "T4,8,2024-03-16 04:00:00,zzz,REGULAR,\n"
)


def invoke(runner: CliRunner, db: Path, *args: str) -> Result:
    return runner.invoke(main, ["--db", str(db), *args])


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_load_prints_a_line_per_file_and_counts_per_reason(runner, db_path, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TXNS)
    result = invoke(runner, db_path, "load", "transactions", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{path}: 4 read, 1 loaded, 3 rejected (load 1)",
        "  2 × amount: wrong type, not a decimal number",
        "  1 × amount: more than 4 fractional digits (rejected, never rounded)",
        "Rejected rows are in the rejects table (load_id 1).",
    ]
    assert result.stderr == ""  # no terminal, no progress
    assert query(db_path, "SELECT row_number FROM rejects ORDER BY 1") == [(2,), (3,), (4,)]


def test_offset_less_times_use_org_timezone_from_the_config(runner, db_path, tmp_path):
    (tmp_path / "milestones.toml").write_text('[org]\ntimezone = "Asia/Kolkata"\n')
    path = tmp_path / "t.csv"
    path.write_text(TXNS)
    assert invoke(runner, db_path, "load", "transactions", str(path)).exit_code == 0
    assert query(db_path, "SELECT epoch(txn_time) FROM transactions") == [(1710532800.0,)]


def test_a_missing_required_column_exits_1_with_one_error_line(runner, db_path, tmp_path):
    good = tmp_path / "a.csv"
    good.write_text(TXNS)
    bad = tmp_path / "b.csv"
    bad.write_text("txn_id,customer_id,amount\nX,1,2\n")
    result = invoke(runner, db_path, "load", "transactions", str(good), str(bad))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {bad}: required column(s) txn_time missing (found: txn_id, customer_id, amount); "
        "nothing of this command was loaded: fix the export's header and load again\n"
    )
    assert query(db_path, "SELECT count(*) FROM transactions") == [(0,)]
    assert query(db_path, "SELECT count(*) FROM loads") == [(0,)]


def test_text_ids_after_integer_ids_exit_1(runner, db_path, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TXNS)
    invoke(runner, db_path, "load", "transactions", str(path))
    events = tmp_path / "e.csv"
    events.write_text("event_id,customer_id,event_name,event_time\nE1,abc,spin,2024-01-01\n")
    result = invoke(runner, db_path, "load", "events", str(events))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {events} row 1: customer_id 'abc' is text")


def test_unknown_kind_is_a_usage_error(runner, db_path, tmp_path):
    result = invoke(runner, db_path, "load", "sales", str(tmp_path / "x.csv"))
    assert result.exit_code == 2
    assert "'sales' is not one of" in result.stderr


def test_no_matching_glob_exits_1(runner, db_path, tmp_path):
    pattern = str(tmp_path / "none_*.csv")
    result = invoke(runner, db_path, "load", "stores", pattern)
    assert result.exit_code == 1
    assert result.stderr == f"Error: no file matches {pattern!r}; check the path or the glob\n"


def test_globbed_files_load_in_one_command(runner, db_path, tmp_path):
    for i in (1, 2):
        (tmp_path / f"stores_{i}.csv").write_text(f"store_id,zone_id\nS{i},Z\n")
    result = invoke(runner, db_path, "load", "stores", str(tmp_path / "stores_*.csv"))
    assert result.exit_code == 0, result.output
    assert query(db_path, "SELECT store_id FROM stores ORDER BY 1") == [("S1",), ("S2",)]


@pytest.mark.parametrize(("flag", "shown"), [((), True), (("--quiet",), False)])
def test_progress_shows_on_a_terminal_unless_quiet(runner, db_path, tmp_path, monkeypatch,
                                                   flag, shown):
    original = cli_module.AppContext.__init__

    def on_a_terminal(self, db, config, verbose, quiet):  # type: ignore[no-untyped-def]
        original(self, db, config, verbose, quiet)
        self.quiet = quiet  # as if stderr were a terminal

    monkeypatch.setattr(cli_module.AppContext, "__init__", on_a_terminal)
    path = tmp_path / "t.csv"
    path.write_text(TXNS)
    result = runner.invoke(main, ["--db", str(db_path), *flag, "load", "transactions", str(path)])
    assert result.exit_code == 0, result.output
    assert (f"{path}: validating" in result.stderr) is shown
    assert result.stdout.startswith(f"{path}: 4 read")
