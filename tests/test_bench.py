"""`milestones bench` at a tiny size: the figures are all there and the baselines agree with
the engine. No timing is asserted (the machine is shared)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import Config
from pipeline.definitions import model as m
from pipeline.definitions.parse import parse_group
from pipeline.errors import UsageError
from pipeline.tools import bench
from pipeline.tools import generate as gen

TINY = ["--transactions", "3000", "--customers", "150", "--days", "62", "--seed", "4",
        "--reference-share", "0.05"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench") / "data"


@pytest.fixture(scope="module")
def figures(data: Path) -> dict:
    result = CliRunner().invoke(main, ["bench", *TINY, "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_json_has_every_required_figure(figures):
    for key in bench.JSON_KEYS:
        assert key in figures, key
        assert figures[key] is not None, key
    assert figures["records"] > 3_000
    assert figures["peak_rss_bytes"] > 10 * 2**20
    assert figures["scoring_s"] == pytest.approx(figures["read_s"] + figures["score_s"],
                                                 abs=0.002)
    assert figures["reference_extrapolated_s"] > figures["reference_sample_s"]


def test_the_sql_baseline_and_the_engine_give_the_same_answer(figures):
    assert figures["baseline_agrees"] is True
    assert figures["notes"] == []


def test_stages_are_listed_in_order_with_the_run_before_its_steps(figures):
    names = [s["stage"] for s in figures["stages"]]
    assert names == ["generate", "load", "register", "run (total)", "run: read inputs",
                     "run: score", "run: diff ledger, write files",
                     "run: write tables, ledger, commit", "floor (total)", "SQL baseline (DuckDB)",
                     "engine on the baseline groups", "reference (5% sample)",
                     "reference (extrapolated)"]
    run = figures["stages"][3]
    assert "SUCCEEDED" in run["note"]


def test_a_second_bench_reuses_the_data_and_prints_the_table(figures, data):
    result = CliRunner().invoke(main, ["bench", *TINY, "--data", str(data),
                                       "--groups", "every_5_visits",
                                       "--groups", "Baseline Monthly Sales",
                                       "--reference-share", "0", "--per-group"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:6] == ["stage", "rows", "seconds", "rows/s", "x", "floor"]
    assert "reused" in lines[1]
    assert "2 groups" in next(line for line in lines if line.startswith("run (total)"))
    assert "note: reference skipped (share 0)" in lines
    alone = [line.split()[1:4] for line in lines if line.lstrip().startswith("alone:")]
    assert alone == [["Every", "5", "Visits"], ["Baseline", "Monthly", "Sales"]]


def test_the_engine_on_the_baseline_groups_in_customer_shards_still_agrees(data, monkeypatch):
    """Above BASELINE_SHARD_TRANSACTIONS the stage reads and scores shard by shard (at 50M the
    whole table would not fit in memory); the answer must not change."""
    monkeypatch.setattr(bench, "BASELINE_SHARD_TRANSACTIONS", 1_000)
    result = CliRunner().invoke(main, ["bench", *TINY, "--data", str(data),
                                       "--groups", "Baseline Monthly Sales",
                                       "--groups", "Baseline Monthly Sales Streak",
                                       "--reference-share", "0", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["baseline_agrees"] is True
    stage = next(s for s in figures["stages"] if s["stage"] == "engine on the baseline groups")
    assert "3 customer shards" in stage["note"]


def test_an_unknown_group_is_a_usage_error(data):
    result = CliRunner().invoke(main, ["bench", *TINY, "--data", str(data),
                                       "--groups", "No Such Group"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: --groups: 'No Such Group' not in the programme")


def test_select_groups_by_name_or_slug_in_the_order_asked():
    names = ["Every 5 Visits", "App Habit"]
    assert bench.select_groups(names, []) == names
    assert bench.select_groups(names, ["app_habit", " every 5 VISITS "]) == [
        "App Habit", "Every 5 Visits"]
    with pytest.raises(UsageError, match="'x' not in the programme"):
        bench.select_groups(names, ["x"])


def _group(name: str) -> m.Group:
    body = next(b for b in gen.programme(gen.Options(customers=10, days=365))
                if b["name"] == name)
    parsed = parse_group(body, config=Config(leaderboards_enabled=True))
    assert parsed.group is not None
    return parsed.group


@pytest.mark.parametrize(("name", "expected"), [
    pytest.param("Baseline Monthly Sales",
                 bench.FloorSpec("transactions", "txn_time", "1mo", "amount"), id="sales"),
    pytest.param("Weekly Visit Streak",
                 bench.FloorSpec("transactions", "txn_time", "1w", None), id="visits"),
    pytest.param("House Brand Lines",
                 bench.FloorSpec("line_items", "txn_time", "1mo", "brand", count=True),
                 id="extended field count"),
    pytest.param("Cart Builder",
                 bench.FloorSpec("events", "event_time", "1w", "cart_value"), id="event sum"),
    pytest.param("Yearly VIP",
                 bench.FloorSpec("transactions", "txn_time", "1y", None), id="TransactionAdd"),
    pytest.param("Promo Points Monthly Cap",
                 bench.FloorSpec("points", "awarded_at", "1mo", "points"), id="points"),
    pytest.param("Quarter Challenge 3 of 4",
                 bench.FloorSpec("transactions", "txn_time", "1q", "amount"), id="custom"),
])
def test_floor_spec_follows_the_first_target(name, expected):
    assert bench.floor_spec(_group(name)) == expected


def test_reference_is_found_in_a_source_checkout():
    module = bench.load_reference()
    assert module is not None
    assert callable(module.evaluate)


def test_floor_reads_only_what_it_aggregates_and_gives_line_items_their_bill():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE transactions AS SELECT * FROM (VALUES "
                "('T1', 1, TIMESTAMP '2025-01-03 10:00', 5.0, 'x'), "
                "('T2', 1, TIMESTAMP '2025-02-03 10:00', 7.0, 'y')) "
                "t(txn_id, customer_id, txn_time, amount, channel)")
    con.execute("CREATE TABLE line_items AS SELECT * FROM (VALUES ('T1', 1, 2.0), "
                "('T1', 2, 1.0), ('T2', 1, 4.0)) t(txn_id, line_no, qty)")
    specs = [bench.FloorSpec("line_items", "txn_time", "1mo", "qty"),
             bench.FloorSpec("transactions", "txn_time", "1mo", None)]
    frames = bench.floor_read(con, specs)
    assert sorted(frames["transactions"].columns) == ["customer_id", "txn_id", "txn_time"]
    assert sorted(frames["line_items"].columns) == ["customer_id", "qty", "txn_id", "txn_time"]
    qty = bench.floor_aggregate(frames, specs[0]).sort("_window")
    assert qty["qty"].cast(float).to_list() == [3.0, 4.0]
    bills = bench.floor_aggregate(frames, specs[1])
    assert bills["len"].to_list() == [1, 1]


def test_floor_shards_split_customers_whole_with_their_line_items():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE transactions AS SELECT 'T' || i AS txn_id, i % 37 AS customer_id, "
                "TIMESTAMP '2025-01-01' + INTERVAL (i) HOUR AS txn_time FROM range(400) r(i)")
    con.execute("CREATE TABLE line_items AS SELECT 'T' || (i // 2) AS txn_id, i AS line_no, "
                "1.0 AS qty FROM range(800) r(i)")
    specs = [bench.FloorSpec("line_items", "txn_time", "1mo", "qty"),
             bench.FloorSpec("transactions", "txn_time", "1mo", None)]
    whole = bench.floor_read(con, specs)
    parts = [bench.floor_read(con, specs, (k, 3)) for k in range(3)]
    for name, frame in whole.items():
        got = pl.concat([p[name] for p in parts])
        assert got.sort(got.columns).equals(frame.sort(frame.columns)), name
        owners = [set(p[name]["customer_id"].to_list()) for p in parts]
        assert all(owners) and not (owners[0] & owners[1] or owners[1] & owners[2]
                                    or owners[0] & owners[2]), name


def test_the_floor_in_customer_shards_measures_the_same_windows(data, figures, monkeypatch):
    """Above FLOOR_ROWS_PER_SHARD the floor reads shard after shard (to stay within memory);
    it must still read every record once and find the same customer-windows."""
    monkeypatch.setattr(bench, "FLOOR_ROWS_PER_SHARD", 2_000)
    result = CliRunner().invoke(main, ["bench", *TINY, "--data", str(data),
                                       "--reference-share", "0", "--json"])
    assert result.exit_code == 0, result.output
    whole = next(s for s in figures["stages"] if s["stage"] == "floor (total)")
    sharded = next(s for s in json.loads(result.output)["stages"]
                   if s["stage"] == "floor (total)")
    assert "customer shards" in sharded["note"] and "customer shards" not in whole["note"]
    assert sharded["rows"] == whole["rows"]

    def windows(note: str) -> str:
        return note.split(" s, ")[1].split(" customer-windows")[0]

    assert windows(sharded["note"]) == windows(whole["note"])
