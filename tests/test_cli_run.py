"""`milestones run`, `runs` and `progress` through the CLI with the real engine: exit codes
0/1/2/3/4, idempotency and the late-return story end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

from pipeline import runs
from pipeline.cli import main

SPEND = {
    "name": "Spend 100",
    "trackingType": "DEFAULT",
    "targetEvaluationType": "FIXED_CALENDAR_WINDOW",
    "frequencyType": "CUSTOM",
    "periods": [
        {"refCode": "NOV-A", "startDate": "2026-11-01", "endDate": "2026-11-15"},
        {"refCode": "NOV-B", "startDate": "2026-11-16", "endDate": "2026-11-30"},
    ],
    "targets": [{
        "name": "spend", "targetEntity": "TRANSACTION", "targetType": "SALES",
        "enrolmentMethod": "TRANSACTION",
        "defaultValues": [{"defaultValue": 100}, {"defaultValue": 100}],
    }],
}
BROKEN = SPEND | {
    "name": "Broken colours",
    "targets": [SPEND["targets"][0] | {"name": "red", "expression": 'currentTxn.colour == "red"'}],
}
TXNS = """txn_id,customer_id,txn_time,amount,type,parent_txn_id
t1,7,2026-11-03 10:00,120,REGULAR,
t2,8,2026-11-04 10:00,60,REGULAR,
t3,8,2026-11-17 10:00,70,REGULAR,
"""


class Cli:
    """One workspace in a temp folder and a way to call `milestones` on it."""

    def __init__(self, root: Path, runner: CliRunner) -> None:
        self.root = root
        self.db = root / "w.duckdb"
        self.runner = runner

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(main, ["--db", str(self.db), *args])

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, result.output
        return result

    def load(self, name: str, text: str) -> None:
        path = self.root / name
        path.write_text(text)
        self.ok("load", "transactions", str(path))

    def outcome(self, result: Result) -> Path:
        """The run folder named in the run's summary."""
        line = next(x for x in result.output.splitlines() if x.strip().startswith("files: "))
        return Path(line.split("files: ", 1)[1])


@pytest.fixture
def cli(tmp_path: Path, runner: CliRunner) -> Cli:
    c = Cli(tmp_path, runner)
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps([SPEND, BROKEN]))
    c.ok("groups", "create", str(groups))
    c.load("txns.csv", TXNS)
    return c


def awards(folder: Path, name: str = "awards") -> list[tuple[Any, ...]]:
    frame = pl.read_csv(folder / f"{name}.csv", infer_schema=False)
    return frame.select("kind", "name", "customer_id", "ref_code").rows()


def test_run_exit_0_issues_and_second_run_issues_nothing(cli: Cli) -> None:
    first = cli.ok("run", "--as-of", "2026-11-20", "--group", "Spend 100")
    assert "rewards: 1 issued, 0 revoked" in first.output
    assert awards(cli.outcome(first)) == [("TARGET_ACHIEVED", "spend", "7", "NOV-A")]

    second = cli.ok("run", "--as-of", "2026-11-20", "--group", "spend 100")
    assert "rewards: 0 issued, 0 revoked" in second.output
    assert awards(cli.outcome(second)) == []

    history = cli.ok("runs", "--json").output.splitlines()
    assert [json.loads(x)["status"] for x in history] == ["SUCCEEDED", "SUCCEEDED"]


def test_late_return_revokes_and_the_corrected_export_reissues(cli: Cli) -> None:
    cli.ok("run", "--as-of", "2026-11-10", "--group", "Spend 100")
    cli.load("late.csv", "txn_id,customer_id,txn_time,amount,type,parent_txn_id\n"
                         "r1,7,2026-11-18 09:00,-30,RETURN,t1\n")
    revoked = cli.ok("run", "--from", "2026-11-01", "--to", "2026-11-20", "--group", "Spend 100")
    assert awards(cli.outcome(revoked), "revocations") == [
        ("TARGET_ACHIEVED", "spend", "7", "NOV-A")
    ]
    report = json.loads(cli.ok("progress", "7", "--json").output)
    assert [r["status"] for r in report["groups"][0]["rewards"]] == ["REVOKED"]

    cli.load("fixed.csv", "txn_id,customer_id,txn_time,amount,type,parent_txn_id\n"
                          "r1,7,2026-11-18 09:00,0,RETURN,t1\n")
    again = cli.ok("run", "--from", "2026-11-01", "--to", "2026-11-20", "--group", "Spend 100")
    assert awards(cli.outcome(again)) == [("TARGET_ACHIEVED", "spend", "7", "NOV-A")]
    report = json.loads(cli.ok("progress", "7", "--json").output)
    assert [r["status"] for r in report["groups"][0]["rewards"]] == ["ISSUED"]


def test_exit_1_for_an_unknown_group(cli: Cli) -> None:
    result = cli("run", "--as-of", "2026-11-20", "--group", "Nope")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: no registered group named 'Nope'; see `milestones groups list`"
    )


def test_exit_1_for_a_customer_with_nothing(cli: Cli) -> None:
    cli.ok("run", "--as-of", "2026-11-20", "--group", "Spend 100")
    result = cli("progress", "999")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: customer 999 has no progress, streak or reward in any group; check the id, "
        "or run `milestones run` first"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        pytest.param(["--as-of", "2026-11-20", "--from", "2026-11-01", "--to", "2026-11-02"],
                     "Error: give either --as-of D or --from A --to B, not both", id="both"),
        pytest.param(["--from", "2026-11-01"],
                     "Error: --from and --to go together: give both dates of the range",
                     id="half a range"),
        pytest.param(["--format", "xml"], None, id="unknown format"),
    ],
)
def test_exit_2_for_bad_options(cli: Cli, args: list[str], line: str | None) -> None:
    result = cli("run", *args)
    assert result.exit_code == 2
    if line:
        assert result.output.splitlines()[-1] == line
    else:
        assert "'xml' is not one of 'csv', 'parquet', 'jsonl'" in result.output


def test_exit_3_when_a_group_fails_and_the_others_are_committed(cli: Cli) -> None:
    result = cli("run", "--as-of", "2026-11-20")
    assert result.exit_code == 3, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: run ") and "1 group(s) failed" in last
    assert "Broken colours" in last and "colour" in last
    assert awards(cli.outcome(result)) == [("TARGET_ACHIEVED", "spend", "7", "NOV-A")]
    row = json.loads(cli.ok("runs", "--json").output.splitlines()[0])
    assert (row["status"], row["awards"]) == ("PARTIAL", 1)
    assert row["error"].startswith("Broken colours: ")


def _paused_run(cli: Cli, step: int) -> subprocess.Popen[str]:
    """`run` in a child process that stops after `step` until it reads a line (runs.PAUSE_ENV)."""
    cmd = [sys.executable, "-m", "pipeline", "--db", str(cli.db), "run", "--as-of", "2026-11-20",
           "--group", "Spend 100"]
    child = subprocess.Popen(cmd, env={**os.environ, runs.PAUSE_ENV: str(step)}, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert child.stderr is not None
    assert f"paused after step {step}" in child.stderr.readline()
    return child


def test_exit_4_while_another_run_holds_the_database(cli: Cli) -> None:
    with _paused_run(cli, 2) as holder:
        try:
            result = cli("run", "--as-of", "2026-11-20", "--group", "Spend 100")
        finally:
            out, err = holder.communicate("go\n", timeout=120)
    assert result.exit_code == 4
    assert result.output.splitlines()[-1] == (
        f"Error: database {cli.db} is in use by another milestones process; wait for it to "
        "finish (see `milestones runs`) and try again"
    )
    assert holder.returncode == 0, err
    assert "rewards: 1 issued" in out


def test_sigterm_inside_the_transaction_rolls_back_records_failed_and_exits_143(cli: Cli) -> None:
    """What Airflow does to a task it times out: the run unwinds, nothing is half-written."""
    with _paused_run(cli, 7) as run:
        run.terminate()
        _, err = run.communicate(timeout=120)
    assert run.returncode == 143
    assert err.splitlines()[-1].startswith("Error: stopped by SIGTERM; a run is all or nothing")
    assert "Traceback" not in err
    history = cli.ok("runs").output
    assert "FAILED" in history and "stopped by SIGTERM" in history
    assert not [p for p in cli.db.parent.iterdir() if p.name.startswith(".milestones-")]
    rewards = cli.root / "rewards"
    assert not rewards.exists() or not list(rewards.iterdir())
    cli.ok("run", "--as-of", "2026-11-20", "--group", "Spend 100")
    issued = [row for f in sorted(rewards.iterdir()) for row in awards(f)]
    assert issued == [("TARGET_ACHIEVED", "spend", "7", "NOV-A")]


def test_sigterm_after_the_commit_keeps_the_run_and_the_next_run_publishes_its_files(
    cli: Cli,
) -> None:
    """Between COMMIT and the rename the run is done: a SIGTERM must neither mark it FAILED nor
    delete the files its committed ledger rows describe."""
    with _paused_run(cli, 9) as run:
        run.terminate()
        _, err = run.communicate(timeout=120)
    assert run.returncode == 143, err
    row = json.loads(cli.ok("runs", "--json").output.splitlines()[0])
    assert row["status"] == "SUCCEEDED"
    rerun = cli.ok("run", "--as-of", "2026-11-20", "--group", "Spend 100")
    assert "published the files of run" in rerun.output
    folders = sorted((cli.root / "rewards").iterdir())
    issued = [row for f in folders for row in awards(f)]
    assert issued == [("TARGET_ACHIEVED", "spend", "7", "NOV-A")]


def test_progress_text_shows_windows_streak_and_rewards(cli: Cli) -> None:
    cli.ok("run", "--as-of", "2026-11-20", "--group", "Spend 100")
    lines = cli.ok("progress", "7", "--group", "Spend 100").output.splitlines()
    assert lines[0] == "Customer 7"
    assert "  NOV-A 2026-11-01..2026-11-15 ENDED: achieved" in lines
    assert "    [ok] spend: 120 of 100" in lines
    assert any(x.startswith("  reward ISSUED: TARGET_ACHIEVED spend NOV-A") for x in lines)


def test_runs_on_a_fresh_workspace(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["--db", str(tmp_path / "w.duckdb"), "runs"])
    assert result.exit_code == 0
    assert result.output == "no runs yet; start one with `milestones run`\n"


@pytest.mark.parametrize("command", ["run", "runs", "progress", "demo"])
def test_every_command_has_help_with_an_example(runner: CliRunner, command: str) -> None:
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: milestones " in result.output


# ---------------------------------------------------------------------------------------- demo

DATA = Path(__file__).resolve().parent.parent / "data"


def small_samples(root: Path) -> Path:
    """A copy of two sample groups with a few bills and a late return for the seed streak."""
    data = root / "data"
    (data / "groups").mkdir(parents=True)
    (data / "exports" / "late").mkdir(parents=True)
    (data / "milestones.toml").write_text((DATA / "milestones.toml").read_text())
    for name in ("monthly_spend_streak.json", "seed_streak.json"):
        (data / "groups" / name).write_text((DATA / "groups" / name).read_text())
    header = "txn_id,customer_id,txn_time,amount,type,parent_txn_id,store_id\n"
    (data / "exports" / "transactions.csv").write_text(
        header
        + "s1,501,2023-11-17 10:00,600,REGULAR,,50679757\n"
        + "s2,501,2023-11-19 10:00,1200,REGULAR,,50679757\n"
        + "".join(f"m{m},1001,2026-{m:02}-05 10:00,250,REGULAR,,\n" for m in range(6, 12))
    )
    (data / "exports" / "stores.csv").write_text("store_id,zone_id\n50679757,Z1\n")
    (data / "exports" / "late" / "transactions_late.csv").write_text(
        header + "s2r,501,2026-11-21 10:00,-900,RETURN,s2,50679757\n"
    )
    return data


def test_demo_builds_a_workspace_and_shows_a_revocation(tmp_path: Path) -> None:
    from pipeline.demo import export_files, run_demo

    data = small_samples(tmp_path)
    assert [k for k, _ in export_files(data / "exports")] == ["stores", "transactions"]
    lines = run_demo(tmp_path / "milestones-demo", data)
    text = "\n".join(lines)

    assert "loaded: 1 stores, 8 transactions" in text
    assert "groups: 2 registered" in text
    # Jun..Nov: the 2, 4 and 6 month levels; the seed streak: both its levels.
    assert "STREAK_LEVEL_ACHIEVED 5" in text
    assert "revoked STREAK_LEVEL_ACHIEVED" in text and "customer 501" in text
    assert (tmp_path / "milestones-demo" / "milestones.duckdb").exists()
    assert "FROM rewards_per_window" in text
    # Running it again starts over instead of piling runs up.
    again = "\n".join(run_demo(tmp_path / "milestones-demo", data))
    assert "STREAK_LEVEL_ACHIEVED 5" in again


@pytest.mark.skipif(
    not any((DATA / "exports").glob("*.*")), reason="bundled exports not in data/exports yet"
)
def test_demo_command_on_the_bundled_samples_names_every_reward_kind(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    for kind in ("TARGET_ACHIEVED", "UNIFIED_ACHIEVED", "STREAK_LEVEL_ACHIEVED"):
        assert f"    {kind}: '" in result.output, f"no standing {kind} in the summary"
    assert "revoked: 1" in result.output or "revoked: 2" in result.output
    assert (tmp_path / "milestones-demo" / "milestones.duckdb").exists()


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(7, id="inside the transaction"),
        pytest.param(9, id="after commit, before rename"),
    ],
)
def test_cli_run_killed_then_rerun_issues_each_reward_once(cli: Cli, step: int) -> None:
    cmd = [sys.executable, "-m", "pipeline", "--db", str(cli.db), "run", "--as-of", "2026-11-20",
           "--group", "Spend 100"]
    killed = subprocess.run(cmd, env={**os.environ, runs.FAULT_ENV: str(step)},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == 137

    rerun = cli.ok("run", "--as-of", "2026-11-20", "--group", "Spend 100")
    folders = sorted(p for p in (cli.root / "rewards").iterdir())
    assert not [p for p in folders if p.name.startswith(".")]
    issued = [row for f in folders for row in awards(f)]
    assert issued == [("TARGET_ACHIEVED", "spend", "7", "NOV-A")]
    if step == 9:
        assert "published the files of run" in rerun.output
