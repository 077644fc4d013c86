"""`milestones groups ...` through click: envelopes on stdout, one `Error:` line and the SPEC exit
code for every expected failure, never a traceback unless --verbose."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent
GROUPS_DIR = REPO / "data" / "groups"
CONFIG = REPO / "data" / "milestones.toml"
SAMPLES = sorted(str(p) for p in GROUPS_DIR.glob("*.json"))


def run(runner: CliRunner, db: Path, *args: str) -> Result:
    return runner.invoke(main, ["--db", str(db), "--config", str(CONFIG), *args])


def envelopes(text: str) -> list[dict[str, Any]]:
    """The JSON envelopes printed one after another."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    out, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


def error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_create_registers_every_sample(runner: CliRunner, db_path: Path) -> None:
    result = run(runner, db_path, "groups", "create", *SAMPLES, "--as-of", "2026-11-22")
    assert result.exit_code == 0, result.output
    envs = envelopes(result.stdout)
    assert len(envs) == 9
    assert all(e["errors"] is None and isinstance(e["data"]["id"], int) for e in envs)
    assert "9 of 9 group(s) registered" in result.stderr
    listed = run(runner, db_path, "groups", "list")
    assert listed.exit_code == 0
    assert "Monthly Spend Streak 2026" in listed.stdout and "UCCtesttarget2_user" in listed.stdout


def test_show_streak_seed(runner: CliRunner, db_path: Path) -> None:
    assert run(runner, db_path, "groups", "create", str(GROUPS_DIR / "seed_streak.json")
               ).exit_code == 0
    result = run(runner, db_path, "groups", "show", "streakTestt123", "--as-of", "2023-11-18")
    assert result.exit_code == 0, result.output
    (env,) = envelopes(result.stdout)
    data = env["data"]
    assert [(s["name"], s["targetCountOfSequence"]) for s in data["streaks"]] == [
        ("streakTestt193", 1), ("streakTestt123", 2)]
    assert [p["periodStatus"] for p in data["periods"]] == ["ENDED", "RUNNING"]
    assert [t["name"] for t in data["targets"]] == ["streakTestt123", "streakTestt123_ReturnBill"]
    later = run(runner, db_path, "groups", "show", str(data["id"]), "--as-of", "2023-11-20")
    (env2,) = envelopes(later.stdout)
    assert [p["periodStatus"] for p in env2["data"]["periods"]] == ["ENDED", "ENDED"]
    assert [t["id"] for t in env2["data"]["targets"]] == [t["id"] for t in data["targets"]]


def test_list_with_one_bad_group(runner: CliRunner, db_path: Path, tmp_path: Path) -> None:
    good = json.loads((GROUPS_DIR / "monthly_spend_streak.json").read_text(encoding="utf-8"))
    bad = {**good, "name": "bad", "trackingType": "WEEKLY"}
    other = {**good, "name": "other"}
    path = tmp_path / "three.json"
    path.write_text(json.dumps([good, bad, other]), encoding="utf-8")
    result = run(runner, db_path, "groups", "create", str(path))
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: 1 group(s) had errors and were not registered: {path}[1] ('bad': 1 error(s)); "
        "fix them (see the errors in their envelopes) and run the command again for those groups"
    )
    envs = envelopes(result.stdout)
    assert [e["data"] is not None for e in envs] == [True, False, True]
    assert envs[1]["errors"][0]["code"] == 300004
    assert envs[1]["errors"][0]["message"].startswith("trackingType: 'WEEKLY' is not one of")
    listed = run(runner, db_path, "groups", "list", "--json")
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == [
        "Monthly Spend Streak 2026", "other"]


def test_malformed_json_names_file_line_and_column(
    runner: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "targets": [,]\n}', encoding="utf-8")
    result = run(runner, db_path, "groups", "create", str(path))
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: {path}: invalid JSON at line 3, column 15: Expecting value; fix the file and "
        "run the command again"
    )
    assert not db_path.exists()


def test_missing_file(runner: CliRunner, db_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    result = run(runner, db_path, "groups", "create", str(path))
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: {path}: no such file; check the path (a group file is a .json file)")


def test_a_directory(runner: CliRunner, db_path: Path, tmp_path: Path) -> None:
    result = run(runner, db_path, "groups", "validate", str(tmp_path))
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: {tmp_path} is a directory; give the group files inside it, e.g. {tmp_path}/*.json")


def test_database_in_a_missing_folder(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "no" / "such" / "w.duckdb"
    result = run(runner, db, "groups", "create", SAMPLES[0])
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: folder {db.parent} does not exist; create it first (mkdir -p {db.parent}) "
        "or choose another --db"
    )


def test_verbose_adds_the_detail(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    quiet = run(runner, tmp_path / "w.duckdb", "groups", "create", str(path))
    loud = run(runner, tmp_path / "w.duckdb", "-v", "groups", "create", str(path))
    assert quiet.exit_code == loud.exit_code == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["groups", "create"], id="no FILE"),
        pytest.param(["groups", "show", "x", "--as-of", "22/11/2026"], id="bad --as-of"),
        pytest.param(["groups", "frobnicate"], id="unknown command"),
        pytest.param(["groups", "deactivate"], id="no NAME"),
    ],
)
def test_usage_errors_exit_2(runner: CliRunner, db_path: Path, args: list[str]) -> None:
    result = run(runner, db_path, *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_validate_registers_nothing(runner: CliRunner, db_path: Path) -> None:
    result = run(runner, db_path, "groups", "validate", *SAMPLES)
    assert result.exit_code == 0, result.output
    assert all(e["data"]["id"] is None for e in envelopes(result.stdout))
    assert not db_path.exists()


def test_validate_sees_registered_names(runner: CliRunner, db_path: Path) -> None:
    seed = str(GROUPS_DIR / "seed_streak.json")
    assert run(runner, db_path, "groups", "create", seed).exit_code == 0
    result = run(runner, db_path, "groups", "validate", seed)
    assert result.exit_code == 1
    (env,) = envelopes(result.stdout)
    assert env["errors"][0]["code"] == 310069


def test_leaderboard_seed_needs_the_org_switch(
    runner: CliRunner, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Away from the repository, whose milestones.toml turns leaderboards on.
    monkeypatch.chdir(db_path.parent)
    seed = str(GROUPS_DIR / "seed_leaderboard_monthly.json")
    result = runner.invoke(main, ["--db", str(db_path), "groups", "validate", seed])
    assert result.exit_code == 1
    (env,) = envelopes(result.stdout)
    assert [e["code"] for e in env["errors"]] == [310133]


def test_deactivate(runner: CliRunner, db_path: Path) -> None:
    assert run(runner, db_path, "groups", "create", str(GROUPS_DIR / "seed_streak.json")
               ).exit_code == 0
    first = run(runner, db_path, "groups", "deactivate", "STREAKTESTT123")
    assert first.exit_code == 0
    assert first.stdout.startswith("deactivated group 'streakTestt123' (id ")
    again = run(runner, db_path, "groups", "deactivate", "streakTestt123")
    assert again.stdout.endswith("was already inactive\n")
    missing = run(runner, db_path, "groups", "deactivate", "nope")
    assert missing.exit_code == 1
    assert error_line(missing) == (
        "Error: no registered group named 'nope'; see `milestones groups list` for the names "
        "and ids")


def test_list_before_any_database(runner: CliRunner, db_path: Path) -> None:
    result = run(runner, db_path, "groups", "list")
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: database {db_path} does not exist yet; run `milestones load` or "
        "`groups create` first")


@pytest.mark.parametrize("command", ["create", "validate", "list", "show", "deactivate"])
def test_every_groups_command_has_help(runner: CliRunner, command: str) -> None:
    result = runner.invoke(main, ["groups", command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout


def test_db_and_config_after_the_command(runner: CliRunner, db_path: Path) -> None:
    """The issue's own command line: `groups create data/groups/*.json --db /tmp/w.duckdb`."""
    result = runner.invoke(main, ["groups", "create", *SAMPLES, "--db", str(db_path),
                                  "--config", str(CONFIG)])
    assert result.exit_code == 0, result.output
    assert db_path.exists()
    listed = runner.invoke(main, ["groups", "list", "--db", str(db_path)])
    assert listed.stdout.count("\n") == 1 + len(envelopes(result.stdout))
