"""Smoke run of `benchmarks/scoring_bench.py` at a tiny size: row counts and shapes, no timings."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from benchmarks import scoring_bench as sb
from pipeline.definitions.model import EvaluationType, TrackingType
from tests.engine_helpers import SCHEMAS

N, CUSTOMERS = 2_000, 100


@pytest.fixture(scope="module")
def frames() -> dict[str, pl.DataFrame]:
    return sb.generate(N, CUSTOMERS, seed=1)


@pytest.fixture(scope="module")
def benches() -> list[sb.BenchGroup]:
    out = sb.build_groups()
    if not sb.capping_available():
        out = [b for b in out if b.group.tracking_type is not TrackingType.CAPPING]
    return out


def test_generated_exports_have_the_asked_sizes_and_engine_dtypes(frames):
    heights = {name: f.height for name, f in frames.items()}
    assert heights["transactions"] == N
    assert heights["events"] == N // 2
    assert heights["points"] == N
    assert heights["stores"] == sb.STORES
    assert heights["enrolments"] == 0
    for name, frame in frames.items():
        expected = {c: t for c, t in SCHEMAS[name].items() if c in frame.columns}
        assert dict(frame.schema) == expected, name


def test_returns_are_three_percent_and_two_thirds_have_a_parent_of_the_same_customer(frames):
    txns = frames["transactions"]
    rets = txns.filter(pl.col("type") == "RETURN")
    assert rets.height == N * 3 // 100
    parented = rets.filter(pl.col("parent_txn_id").is_not_null())
    assert parented.height == rets.height * 2 // 3
    joined = parented.join(txns, left_on="parent_txn_id", right_on="txn_id", suffix="_p")
    assert joined.height == parented.height
    assert (joined["type_p"] == "REGULAR").all()
    assert (joined["customer_id"] == joined["customer_id_p"]).all()
    assert (joined["txn_time"] >= joined["txn_time_p"]).all()


def test_line_items_one_to_three_per_bill_one_per_parented_return(frames):
    txns = frames["transactions"]
    per_bill = frames["line_items"].group_by("txn_id").len()
    kinds = txns.join(per_bill, on="txn_id", how="left").with_columns(pl.col("len").fill_null(0))
    regular = kinds.filter(pl.col("type") == "REGULAR")["len"]
    assert regular.min() == 1 and regular.max() == 3
    assert 1.8 < regular.mean() < 2.2  # ~2 lines per bill
    returned = kinds.filter(pl.col("type") == "RETURN")
    assert (returned["len"] == returned["parent_txn_id"].is_not_null().cast(pl.UInt32)).all()


def test_every_record_is_dated_in_2025(frames):
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    for name, col in (("transactions", "txn_time"), ("events", "event_time"),
                      ("points", "awarded_at")):
        series = frames[name][col]
        assert series.min() >= start and series.max() < end, name


def test_generation_is_seeded(frames):
    assert sb.generate(N, CUSTOMERS, seed=1)["transactions"].equals(frames["transactions"])
    assert not sb.generate(N, CUSTOMERS, seed=2)["transactions"].equals(frames["transactions"])


def test_the_eight_groups_cover_every_window_kind_and_group_kind():
    groups = [b.group for b in sb.build_groups()]
    assert len(groups) == 8
    assert {g.evaluation_type for g in groups} == set(EvaluationType)
    assert {g.tracking_type for g in groups} == set(TrackingType)
    ids = [t.target_id for g in groups for t in g.targets]
    assert len(ids) == len(set(ids))


def test_customer_slice_keeps_whole_customers(frames):
    part = sb.customer_slice(frames, 10)
    assert (part["transactions"]["customer_id"] % 10 == 0).all()
    assert part["line_items"]["txn_id"].is_in(part["transactions"]["txn_id"]).all()
    assert 0 < part["transactions"].height < N


def test_floor_gives_one_row_per_customer_and_truncated_window(frames, benches):
    stages, outputs = sb.run_floor({k: v.lazy() for k, v in frames.items()}, benches)
    assert [s.name for s in stages] == ["floor: read", *(f"floor: {b.group.name}" for b in benches)]
    assert stages[0].rows == sum(f.height for f in frames.values())
    for b in benches:
        source = frames[b.source]
        expected = source.select(
            pl.struct("customer_id", pl.col(b.time_col).dt.truncate(b.every)).n_unique()
        ).item()
        assert outputs[b.group.name].height == expected, b.group.name


def test_score_runs_every_group_with_the_expected_row_counts(frames, benches):
    sources = {k: v.lazy() for k, v in frames.items()}
    stage, result = sb.run_score(sources, [b.group for b in benches], rows=123)
    assert stage.rows == 123 and stage.seconds > 0
    assert result.failures == {}
    progress = result.tables["target_progress"]
    # Monthly spend (TRANSACTION enrolment): every customer with a bill x 12 started months.
    buyers = frames["transactions"].filter(pl.col("type") == "REGULAR")["customer_id"].n_unique()
    assert progress.filter(pl.col("group_id") == 1).height == buyers * 12
    # The weekly streak group has one streak_progress row per scored customer.
    weekly = progress.filter(pl.col("group_id") == 2)["customer_id"].n_unique()
    assert result.tables["streak_progress"].height == weekly
    assert set(progress["group_id"].unique()) == {b.group.group_id for b in benches}


def test_table_prints_ratio_to_the_floor_then_cpu_seconds():
    stages = [sb.Stage("floor: total", 10, 2.0, 1.5), sb.Stage("score: 8 groups", 10, 5.0, 4.0)]
    lines = sb.table(stages, 2.0).splitlines()
    assert lines[1].split()[-2:] == ["1.00", "1.50"]
    assert lines[2].split()[-2:] == ["2.50", "4.00"]
