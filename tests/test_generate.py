"""`milestones generate`: seeded, realistic exports of every kind and a programme that registers
and runs."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline import registry, runs
from pipeline.cli import main
from pipeline.config import Config
from pipeline.definitions.parse import parse_group, read_bodies
from pipeline.loading import load_exports
from pipeline.tools import generate as gen
from pipeline.workspace import Workspace

OPTS = gen.Options(customers=300, days=120, seed=7)
CONFIG = Config(leaderboards_enabled=True)


@pytest.fixture(scope="module")
def made() -> tuple[dict[str, pl.DataFrame], list[dict]]:
    # Small blocks, so that the multi-block path (ids and draws across blocks) is the one tested.
    return gen.generate_frames(OPTS, block_rows=700)


def test_same_seed_same_frames_other_seed_other_frames(made):
    again, bodies = gen.generate_frames(OPTS, block_rows=700)
    assert bodies == made[1]
    for name, frame in made[0].items():
        assert frame.equals(again[name]), name
    other, _ = gen.generate_frames(gen.Options(customers=300, days=120, seed=8), block_rows=700)
    assert not other["transactions"].equals(made[0]["transactions"])


def test_every_kind_is_there_with_its_columns(made):
    frames = made[0]
    assert {name: frame.height > 0 for name, frame in frames.items()} == dict.fromkeys(
        ["stores", "transactions", "line_items", "events", "points", "enrolments"], True)
    assert frames["transactions"].height == OPTS.bills
    expected = {
        "transactions": {"txn_id", "customer_id", "txn_time", "amount", "type", "parent_txn_id",
                         "store_id", "gross_amount", "discount", "qty", "channel"},
        "line_items": {"txn_id", "line_no", "qty", "amount", "item_code", "rate", "value",
                       "discount", "category", "brand"},
        "events": {"event_id", "customer_id", "event_name", "event_time", "store_id",
                   "cart_value", "rating", "points"},
        "points": {"points_id", "customer_id", "awarded_at", "points", "points_type",
                   "store_id", "txn_id", "promotion_id"},
        "stores": {"store_id", "zone_id", "concept_id", "name"},
    }
    for name, columns in expected.items():
        assert set(frames[name].columns) == columns, name
    keys = {"transactions": ["txn_id"], "line_items": ["txn_id", "line_no"],
            "events": ["event_id"], "points": ["points_id"], "stores": ["store_id"]}
    for name, key in keys.items():
        assert not frames[name].select(key).is_duplicated().any(), name


def test_returns_with_and_without_parents_point_back_in_time(made):
    txns = made[0]["transactions"]
    rets = txns.filter(pl.col("type") == "RETURN")
    assert 0.02 < rets.height / txns.height < 0.04
    parented = rets.filter(pl.col("parent_txn_id").is_not_null())
    assert 0.5 < parented.height / rets.height < 0.8
    joined = parented.join(txns, left_on="parent_txn_id", right_on="txn_id", suffix="_bill")
    assert joined.height == parented.height
    assert (joined["type_bill"] == "REGULAR").all()
    assert (joined["customer_id"] == joined["customer_id_bill"]).all()
    assert (joined["txn_time"] > joined["txn_time_bill"]).all()
    assert (rets["amount"] < 0).all()  # exports write returns negative


def test_a_bill_is_the_sum_of_its_lines_and_lines_have_categories(made):
    txns, lines = made[0]["transactions"], made[0]["line_items"]
    sums = lines.group_by("txn_id").agg(pl.col("amount").sum().alias("lines"),
                                        pl.col("qty").sum().alias("line_qty"))
    bills = txns.filter(pl.col("type") == "REGULAR").join(sums, on="txn_id", how="left")
    assert bills["lines"].null_count() == 0
    assert (bills["lines"] == bills["amount"]).all()
    assert (bills["line_qty"] == bills["qty"]).all()
    assert set(lines["category"].unique()) == set(gen.CATEGORIES)


def test_spend_is_skewed_and_weekends_are_busier(made):
    txns = made[0]["transactions"].filter(pl.col("type") == "REGULAR")
    per_customer = txns.group_by("customer_id").len()["len"]
    assert per_customer.max() > 4 * per_customer.median()
    days = txns.select(pl.col("txn_time").dt.weekday().alias("d"))["d"]
    weekend, weekday = (days >= 6).sum() / 2, (days < 6).sum() / 5
    assert weekend > 1.3 * weekday


def test_events_points_stores_and_enrolments_have_their_variety(made):
    frames = made[0]
    assert set(frames["events"]["event_name"].unique()) == set(gen.EVENTS)
    reviews = frames["events"].filter(pl.col("event_name") == "ProductReview")
    assert reviews["rating"].null_count() == 0
    assert set(frames["points"]["points_type"].unique()) == {"REGULAR", "PROMOTIONAL"}
    stores = frames["stores"]
    assert stores["zone_id"].null_count() == 0 and stores["concept_id"].n_unique() > 1
    enrolled = frames["enrolments"]
    assert set(enrolled["group_name"].unique()) == {
        "Welcome Journey", "Spin the Wheel Goals", "Monthly Spend Leaderboard"}
    goals = enrolled.filter(pl.col("group_name") == "Spin the Wheel Goals")
    assert goals["target_value"].null_count() == 0
    assert goals["period_ref"].drop_nulls().len() > 0


@pytest.mark.parametrize("days", [28, 120, 800])
def test_the_programme_validates_at_any_length(days):
    bodies = gen.programme(gen.Options(customers=50, days=days))
    problems = {b["name"]: parse_group(b, config=CONFIG).errors for b in bodies}
    assert {name: errs for name, errs in problems.items() if errs} == {}


def test_the_programme_covers_every_kind_window_and_measure():
    bodies = gen.programme(OPTS)
    groups = [parse_group(b, config=CONFIG).group for b in bodies]
    assert {g.tracking_type.value for g in groups} == {"DEFAULT", "UNIFIED", "STREAK",
                                                      "CAPPING"}
    assert {g.evaluation_type.value for g in groups} == {
        "FIXED_CALENDAR_WINDOW", "CYCLIC_WINDOW", "PERIOD_AGNOSTIC_WINDOW"}
    targets = [t for g in groups for t in g.targets]
    assert {t.type.value for t in targets} == {
        "SALES", "GROSS_SALES", "QUANTITY", "COUNT", "VISIT", "EXTENDED_FIELD",
        "EVENT_ATTRIBUTE", "REGULAR_POINTS", "PROMOTIONAL_POINTS", "ALL_POINTS"}
    assert {t.entity.value for t in targets} == {"TRANSACTION", "LINEITEM", "EVENT", "REWARDS"}
    assert {f.entity_type for t in targets for f in t.filters} == {"STORE", "ZONE", "CONCEPT"}
    windows = {t.extended_field.aggregate_window.window_type for t in targets
               if t.extended_field and t.extended_field.aggregate_window}
    assert windows == {"MIN", "MAX"}
    assert {g.frequency_type.value for g in groups if g.frequency_type} >= {
        "DAILY", "WEEKLY", "MONTHLY", "QUARTERLY", "HALF_YEARLY", "YEARLY", "CUSTOM"}
    flags = {(g.user_created, g.leaderboard_enabled, g.streak_continuous,
              g.streak_grace_windows > 0, g.combination_type) for g in groups}
    assert any(f[0] for f in flags) and any(f[1] for f in flags)
    assert any(not f[2] for f in flags) and any(f[3] for f in flags)
    assert {f[4] for f in flags} == {"ALL", "ANY"}
    assert any("expressionJson" in t for b in bodies for t in b["targets"])


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> gen.Generated:
    out = tmp_path_factory.mktemp("gen")
    return gen.generate(OPTS, out, chunk_rows=1_000)


def test_files_are_named_for_load_and_the_manifest_reads_back(written):
    assert set(written.files) == {"stores", "transactions", "line-items", "events", "points",
                                  "enrolments"}
    assert OPTS.bills == 1_980  # two blocks of at most 1,000
    assert [p.name for p in written.files["transactions"]] == [
        "transactions-0001.parquet", "transactions-0002.parquet"]
    assert [p.name for p in written.files["stores"]] == ["stores.parquet"]
    assert written.rows["transactions"] == OPTS.bills
    assert len(written.groups) == len(gen.programme(OPTS))
    again = gen.read_generated(written.folder)
    assert again is not None
    assert (again.options, again.files, again.groups, again.rows) == (
        written.options, written.files, written.groups, written.rows)
    assert (written.folder / "milestones.toml").read_text().count("leaderboards_enabled = true")


def test_written_files_equal_the_frames_of_the_same_blocks(written):
    frames, _ = gen.generate_frames(OPTS, block_rows=1_000)
    for table, kind in gen.KIND_FILES.items():
        assert pl.read_parquet(written.files[kind]).equals(frames[table]), table


def test_generated_folder_loads_without_rejects_registers_and_runs(written, tmp_path):
    ws = Workspace(tmp_path / "ws.duckdb", Config(leaderboards_enabled=True,
                                                   output_dir=tmp_path / "out"))
    with ws.connect() as con:
        for kind, paths in written.files.items():
            for path in paths:  # file by file, as bench loads them
                report = load_exports(con, kind, [str(path)], timezone="UTC")
                assert report.rows_rejected == 0, (path, report.reasons)
        bodies = [b for p in written.groups for b in read_bodies(p)]
        outcomes = registry.register_bodies(con, bodies, config=ws.config, as_of=written.as_of)
        assert [o.source for o in outcomes if not o.registered] == []
    outcome = runs.run(ws, runs.RunRequest(as_of=written.as_of))
    assert outcome.status == "SUCCEEDED" and outcome.failures == {}
    assert outcome.awards > 0
    with ws.connect(read_only=True) as con:
        scored = con.sql(
            "SELECT name, (SELECT count(*) FROM target_progress p WHERE p.group_id = g.group_id)"
            " + (SELECT count(*) FROM capping c WHERE c.group_id = g.group_id) "
            "FROM target_groups g").fetchall()
    assert [name for name, rows in scored if rows == 0] == []
    # The capping file: the table's rows with their group's name, in the file's order.
    keys = ["group_id", "target_id", "customer_id", "period_index", "awarded_at", "points_id"]
    with ws.connect(read_only=True) as con:
        table = con.sql("SELECT c.group_id, g.name AS group_name, c.* EXCLUDE (group_id) "
                        "FROM capping_adjustments c JOIN target_groups g USING (group_id)").pl()
    written_file = pl.read_csv(outcome.folder / "capping_adjustments.csv", schema=table.schema)
    assert written_file.height == table.height > 0
    assert written_file.equals(table.sort(keys))


def test_load_commands_load_a_kind_of_many_files_one_file_per_command(written, tmp_path):
    # One `load` is all or nothing and holds its files in memory: 50 M transactions' line items
    # in one command went past 24 GiB.
    db = tmp_path / "ws.duckdb"
    commands = dict(zip(written.files, written.load_commands(db), strict=True))
    txns = written.files["transactions"]
    assert commands["transactions"] == (
        f"for f in {txns[0]} {txns[1]}; do milestones --db {db} load transactions \"$f\" "
        "|| break; done")
    assert commands["stores"] == f"milestones --db {db} load stores {written.files['stores'][0]}"
    assert written.load_commands()[0].startswith("milestones load stores ")
    spaced = tmp_path / "my data" / "ws.duckdb"
    assert f"--db '{spaced}' load" in written.load_commands(spaced)[0]


def test_csv_format_writes_csv(tmp_path):
    small = gen.Options(customers=40, days=30, seed=2)
    made = gen.generate(small, tmp_path / "csv", fmt="csv")
    assert all(p.suffix == ".csv" for paths in made.files.values() for p in paths)
    back = pl.read_csv(made.files["transactions"][0])
    assert back.height == small.bills


def test_generate_command_prints_how_to_load(tmp_path):
    out = tmp_path / "synth"
    result = CliRunner().invoke(main, ["generate", "--customers", "50", "--days", "40",
                                       "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "groups create" in result.output and f"run --as-of {date(2025, 2, 9)}" in \
        result.output
    assert (out / "transactions.parquet").exists()
    assert Path(out / "groups").is_dir()


def test_generate_command_refuses_a_bad_size(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--customers", "50", "--days", "5",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--days" in result.output
