"""`milestones simulate` (SPEC §14): backtests that write nothing and agree with a real run."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from pipeline import registry, runs
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.definitions.parse import read_bodies
from pipeline.demo import AS_OF, DATA, run_demo
from pipeline.errors import UsageError
from pipeline.tools.simulate import parse_scales, scale_sources, scale_value
from pipeline.workspace import Workspace, quote_ident

CONFIG = load_config(DATA / "milestones.toml")
GROUPS = sorted((DATA / "groups").glob("*.json"))
SCALES = ["0.8", "1.0", "1.2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    run_demo(folder)
    return folder / "milestones.duckdb"


@pytest.fixture
def demo_copy(demo: Path, tmp_path: Path) -> Path:
    """A copy of the demo workspace that a test may write to."""
    db = tmp_path / "milestones.duckdb"
    shutil.copy(demo, db)
    return db


def _cli(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["--db", str(db), "--config", str(DATA / "milestones.toml"), *args]
    )
    return result.exit_code, result.stdout, result.stderr


def _simulate(db: Path, files: list[Path], *args: str) -> dict:
    code, out, err = _cli(
        db, "simulate", *map(str, files), "--as-of", AS_OF.isoformat(), *args, "--json"
    )
    assert code == 0, err
    return json.loads(out)


def _checksums(db: Path) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every table's rows in a canonical order."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [
            r[0]
            for r in con.sql(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' ORDER BY table_name"
            ).fetchall()
        ]
        out = {}
        for t in tables:
            [(n, digest)] = con.sql(
                f"SELECT count(*), md5(coalesce(string_agg(CAST(x AS VARCHAR), chr(10) "
                f"ORDER BY CAST(x AS VARCHAR)), '')) FROM {quote_ident(t)} AS x"
            ).fetchall()
            out[t] = (n, digest)
        return out
    finally:
        con.close()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- acceptance ----------------------------------------------------------------------------


def test_simulate_leaves_every_table_and_file_byte_identical(demo_copy: Path) -> None:
    tables = _checksums(demo_copy)
    assert tables["rewards"][0] > 0 and tables["target_progress"][0] > 0
    digest = hashlib.sha256(demo_copy.read_bytes()).hexdigest()
    rewards_dir = demo_copy.parent / "rewards"
    files = _files(rewards_dir)
    code, out, _ = _cli(demo_copy, "simulate", *map(str, GROUPS), "--as-of", "2026-11-22",
                        "--target-scale", ",".join(SCALES))
    assert code == 0
    assert "x0.8" in out and "x1.2" in out
    assert _checksums(demo_copy) == tables
    assert hashlib.sha256(demo_copy.read_bytes()).hexdigest() == digest
    assert _files(rewards_dir) == files


def test_achievers_do_not_grow_with_the_target_scale(demo: Path) -> None:
    report = _simulate(demo, GROUPS, "--target-scale", ",".join(SCALES))
    assert report["scales"] == SCALES
    compared = 0
    for g in report["groups"]:
        assert g["failures"] == {}, g["name"]
        for w in g["windows"]:
            for t in w["targets"]:
                counts = [(t["by_scale"].get(s) or {}).get("achieving", 0) for s in SCALES]
                assert counts == sorted(counts, reverse=True), (g["name"], w, t["name"])
                compared += 1
            counts = [w["achieved"].get(s, 0) for s in SCALES]
            assert counts == sorted(counts, reverse=True), (g["name"], w["period_index"])
        for level in g["levels"]:
            counts = [level["achieving"][s] for s in SCALES]
            assert counts == sorted(counts, reverse=True), (g["name"], level["name"])
    assert compared > 20
    streak = next(g for g in report["groups"] if g["name"] == "Monthly Spend Streak 2026")
    levels = [lv["achieving"] for lv in streak["levels"]]
    # The sample data is built so that the scales do make a difference.
    assert levels[0]["0.8"] > levels[0]["1.2"]


def _registered_counts(db: Path, group: str) -> dict:
    """What a registered run left: achievers per (window, target), per window, rewards."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        per_target = con.sql(
            "SELECT tp.period_index, t.name, count(*), count(*) FILTER (WHERE tp.achieved) "
            "FROM target_progress tp JOIN targets t USING (target_id) "
            "JOIN target_groups g ON g.group_id = tp.group_id "
            "WHERE g.name = $g GROUP BY ALL ORDER BY ALL",
            params={"g": group},
        ).fetchall()
        per_window = con.sql(
            "SELECT pa.period_index, count(*) FILTER (WHERE pa.achieved) FROM "
            "period_achievements pa JOIN target_groups g USING (group_id) "
            "WHERE g.name = $g GROUP BY ALL ORDER BY ALL",
            params={"g": group},
        ).fetchall()
        rewards = con.sql(
            "SELECT kind, count(*) FROM rewards WHERE group_name = $g AND status = 'ISSUED' "
            "GROUP BY ALL ORDER BY ALL",
            params={"g": group},
        ).fetchall()
        levels = con.sql(
            "SELECT name, count(*) FROM rewards WHERE group_name = $g AND status = 'ISSUED' "
            "AND kind = 'STREAK_LEVEL_ACHIEVED' GROUP BY ALL ORDER BY ALL",
            params={"g": group},
        ).fetchall()
    finally:
        con.close()
    return {"targets": per_target, "windows": per_window, "rewards": rewards,
            "levels": levels}


def _simulated_counts(g: dict, scale: str) -> dict:
    targets = sorted(
        (w["period_index"], t["name"], t["by_scale"][scale]["customers"],
         t["by_scale"][scale]["achieving"])
        for w in g["windows"]
        for t in w["targets"]
        if t["by_scale"].get(scale)
    )
    windows = sorted(
        (w["period_index"], w["achieved"][scale]) for w in g["windows"] if scale in w["achieved"]
    )
    levels = sorted((lv["name"], lv["achieving"][scale]) for lv in g["levels"]
                    if lv["achieving"][scale])
    return {"targets": targets, "windows": windows,
            "rewards": sorted(g["rewards"][scale].items()), "levels": levels}


def test_scale_one_equals_the_registered_runs_of_every_sample_group(demo: Path) -> None:
    """The demo registered and ran every sample group as of AS_OF (the second run after the
    late returns): simulating the same bodies at 1.0 finds the same achievers and rewards."""
    report = _simulate(demo, GROUPS, "--target-scale", ",".join(SCALES))
    for g in report["groups"]:
        assert _simulated_counts(g, "1.0") == _registered_counts(demo, g["name"]), g["name"]


def test_a_new_group_simulated_then_registered_and_run_gives_the_same_counts(
    demo_copy: Path, tmp_path: Path
) -> None:
    [(_, body)] = read_bodies(DATA / "groups" / "monthly_spend_streak.json")
    body = {**body, "name": "Backtest 150 a month",
            "targets": [{**body["targets"][0], "defaultValues": [{"defaultValue": 150}]}]}
    path = tmp_path / "backtest.json"
    path.write_text(json.dumps(body, default=str))
    [g] = _simulate(demo_copy, [path], "--target-scale", "0.9,1.0")["groups"]
    ws = Workspace(demo_copy, replace(CONFIG, output_dir=tmp_path / "out"))
    with ws.connect() as con:
        [outcome] = registry.register_bodies(con, [("b", body)], config=CONFIG, as_of=AS_OF)
        assert outcome.registered
    runs.run(ws, runs.RunRequest(as_of=AS_OF, groups=("Backtest 150 a month",)))
    registered = _registered_counts(demo_copy, "Backtest 150 a month")
    assert registered["levels"]  # the comparison is not vacuous
    assert _simulated_counts(g, "1.0") == registered


def test_range_reports_only_windows_overlapping_it(demo: Path) -> None:
    code, out, err = _cli(demo, "simulate", str(DATA / "groups" / "points_cap_monthly.json"),
                          str(DATA / "groups" / "unified_three_of_four_quarter.json"),
                          "--from", "2026-10-05", "--to", "2026-10-20", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["as_of"], report["from_date"]) == ("2026-10-20", "2026-10-05")
    windows = {g["name"]: [w["period_index"] for w in g["windows"]] for g in report["groups"]}
    assert windows == {"Promo Points Monthly Cap": [2], "Quarterly Challenge 3 of 4": [2]}


# --- decisions and errors ------------------------------------------------------------------


def test_deciles_are_nearest_rank_of_value_over_target(demo: Path) -> None:
    report = _simulate(demo, [DATA / "groups" / "seed_streak.json"])
    [g] = report["groups"]
    stats = g["windows"][1]["targets"][0]["by_scale"]["1"]
    con = duckdb.connect(str(demo), read_only=True)
    ratios = sorted(
        Decimal(v) / Decimal(t)
        for v, t in con.sql(
            "SELECT value, target_value FROM target_progress JOIN target_groups g "
            "USING (group_id) WHERE g.name = 'streakTestt123' AND period_index = 2"
        ).fetchall()
    )
    con.close()
    n = len(ratios)
    expected = {f"p{q}": ratios[-(-q * n // 100) - 1] for q in range(10, 100, 10)}
    assert {k: Decimal(v) for k, v in stats["value_over_target"].items()} == {
        k: v.quantize(Decimal("0.0001")) for k, v in expected.items()
    }
    assert stats["customers"] == n


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(["--as-of", "2026-11-22", "--from", "2026-11-01", "--to", "2026-11-02"],
                     "Error: give either --as-of D or --from A --to B, not both",
                     id="as-of and range"),
        pytest.param(["--from", "2026-11-01"],
                     "Error: --from and --to go together: give both dates of the range",
                     id="half a range"),
        pytest.param(["--target-scale", "0.8,-1"],
                     "Error: --target-scale: '-1' is not a positive number with at most 4 "
                     "decimals; give a list such as 0.8,1.0,1.2",
                     id="negative scale"),
    ],
)
def test_usage_errors_exit_2(demo: Path, args: list[str], error: str) -> None:
    code, _, err = _cli(demo, "simulate", str(GROUPS[0]), *args)
    assert (code, err.strip()) == (2, error)


def test_an_invalid_body_names_file_field_and_code(demo: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "trackingType": "NOPE", "targets": []}))
    code, _, err = _cli(demo, "simulate", str(path))
    assert code == 1
    assert err.startswith("Error: ")
    assert f"{path}: trackingType" in err and "(300004)" in err


def test_parse_scales() -> None:
    assert parse_scales(None) == [Decimal(1)]
    assert parse_scales("0.8, 1.0,1.2,1.0") == [Decimal("0.8"), Decimal("1.0"), Decimal("1.2")]
    for bad in ("0", "abc", "0.00001", "nan", "inf"):
        with pytest.raises(UsageError):
            parse_scales(bad)


def test_enrolment_targets_scale_like_default_values() -> None:
    values = ["1.2345", "1.2335", "500", "0.0001"]
    frame = pl.LazyFrame({"target_value": [Decimal(v) for v in values]},
                         schema={"target_value": pl.Decimal(18, 4)})
    scale = Decimal("0.7")
    got = scale_sources({"enrolments": frame}, scale)["enrolments"].collect()["target_value"]
    assert got.to_list() == [scale_value(Decimal(v), scale) for v in values]
    # Half-to-even at the fifth decimal: 0.86415 -> 0.8642, 0.86345 -> 0.8634.
    assert [str(v) for v in got.to_list()[:2]] == ["0.8642", "0.8634"]


def test_a_group_naming_a_missing_column_is_reported_and_exits_3(
    demo: Path, tmp_path: Path
) -> None:
    [(_, body)] = read_bodies(DATA / "groups" / "seed_streak.json")
    body = {**body, "name": "Needs loyalty tier",
            "targets": [{**body["targets"][0], "expression": "currentTxn.tier == \"gold\"",
                         "expressionJson": None}]}
    path = tmp_path / "tier.json"
    path.write_text(json.dumps(body, default=str))
    code, out, err = _cli(demo, "simulate", str(path), str(GROUPS[0]), "--as-of", "2026-11-22")
    assert code == 3
    assert "FAILED at x1: group 'Needs loyalty tier', target 'streakTestt123': rule " in out
    assert err.startswith("Error: 1 group(s) could not be scored and have no figures above: "
                          "Needs loyalty tier: group 'Needs loyalty tier'")
