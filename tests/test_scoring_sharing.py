"""Groups over the same measure are measured once (pipeline.scoring.sharing) with the same rows."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import date
from decimal import Decimal

import polars as pl
import pytest
from engine_helpers import group, periods, ret, sources, target, txn
from polars.testing import assert_frame_equal

from pipeline.config import Config
from pipeline.definitions import model as m
from pipeline.rules import tree
from pipeline.scoring import engine, records
from pipeline.scoring.context import GroupContext
from pipeline.scoring.sharing import SharedFrames, SharedMeasures, measure_key

AS_OF = date(2024, 2, 20)
PERIODS = periods(("2024-01-01", "2024-01-31", "JAN"), ("2024-02-01", "2024-02-29", "FEB"))
RECORDS = sources(transactions=[
    txn("T1", 1, "2024-01-03T10:00:00", "80"), txn("T2", 1, "2024-01-20T10:00:00", "40"),
    txn("T3", 2, "2024-02-02T09:00:00", "150"), ret("R1", 1, "2024-02-05T10:00:00", "-40", "T2"),
    txn("T4", 1, "2024-02-10T10:00:00", "120"),
])


def spend(gid: int, name: str, kind: str = "DEFAULT", **kw: object) -> m.Group:
    t = target(gid * 10, f"spend {gid}", values=("100",))
    return group(name, gid=gid, kind=kind, targets=(t,), **{"periods": PERIODS, **kw})


def key(g: m.Group, config: Config | None = None) -> object:
    ctx = GroupContext(g, AS_OF, config or Config(), RECORDS)
    return measure_key(ctx, has_enrolment_rows=False)


def test_a_streak_over_the_same_measure_shares_the_default_groups_rows() -> None:
    plain = spend(1, "Monthly spend")
    streak = spend(2, "Monthly spend streak", kind="STREAK",
                   streak_levels=(m.StreakLevel(streak_id=1, name="two", count=2),))
    assert key(plain) == key(streak)
    together = engine.score(RECORDS, [plain, streak], AS_OF, Config())
    apart = engine.score(RECORDS, [plain, streak], AS_OF, Config(), shared=SharedMeasures())
    for name in ("target_progress", "period_achievements", "streak_runs", "streak_progress"):
        a, b = together.tables[name], apart.tables[name]
        assert a.height, name
        assert_frame_equal(a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True))
    progress = together.tables["target_progress"]
    assert sorted(progress.select("group_id", "target_id").unique().rows()) == [(1, 10), (2, 20)]
    # Each group's rewards name its own group and target.
    rewards = together.rewards.select("group_id", "group_name", "name").unique().sort("group_id")
    assert rewards.rows()[0] == (1, "Monthly spend", "spend 1")


def test_registered_groups_share_though_their_periods_have_their_own_ids() -> None:
    # Registering gives every group's periods database ids (and may give descriptions): the
    # baseline pair of the bench, a monthly group and its streak, measured everything twice.
    def registered(g: m.Group, first_id: int) -> m.Group:
        return replace(g, periods=tuple(replace(p, period_id=first_id + i, description=f"#{i}")
                                        for i, p in enumerate(g.periods)))

    plain = registered(spend(1, "Monthly spend"), 1001)
    streak = registered(spend(2, "Monthly spend streak", kind="STREAK",
                              streak_levels=(m.StreakLevel(streak_id=1, name="two", count=2),)),
                        1040)
    assert key(plain) == key(streak)
    assert key(plain) != key(replace(plain, periods=plain.periods[:-1]))


def test_one_group_per_call_shares_through_a_planned_cache() -> None:
    plain, twin = spend(1, "a"), spend(2, "b")
    shared = engine.plan_sharing(RECORDS, [plain, twin], AS_OF, Config())
    first = engine.score(RECORDS, [plain], AS_OF, Config(), shared=shared)
    assert shared.kept  # kept for the group still to come ...
    second = engine.score(RECORDS, [twin], AS_OF, Config(), shared=shared)
    assert not shared.kept  # ... and dropped once it took them
    a = first.tables["target_progress"].drop("group_id", "target_id")
    b = second.tables["target_progress"].drop("group_id", "target_id")
    assert_frame_equal(a, b)
    assert second.tables["target_progress"]["group_id"].unique().to_list() == [2]


def test_groups_that_measure_differently_do_not_share() -> None:
    base = key(spend(1, "a"))
    other_periods = spend(1, "a", periods=PERIODS[:1])
    other_target = group("a", gid=1, periods=PERIODS,
                         targets=(target(10, "spend", ttype="GROSS_SALES"),))
    other_value = group("a", gid=1, periods=PERIODS,
                        targets=(target(10, "spend", values=("90",)),))
    capping = group("a", gid=1, kind="CAPPING", periods=PERIODS,
                    targets=(target(10, "pts", "REWARDS", "ALL_POINTS"),))
    assert key(other_periods) != base
    assert key(other_target) != base
    assert key(other_value) != base
    assert key(spend(1, "a"), Config(returns_mode="ignore")) != base
    assert key(capping) is None
    assert measure_key(GroupContext(spend(1, "a"), AS_OF, Config(), RECORDS),
                       has_enrolment_rows=True) is None


def test_unified_any_and_all_do_not_share() -> None:
    targets = (target(10, "x"), target(11, "y", ttype="COUNT", values=("2",)))
    every = group("u", gid=1, kind="UNIFIED", periods=PERIODS, targets=targets)
    some = group("u", gid=2, kind="UNIFIED", periods=PERIODS, targets=targets,
                 combination_type="ANY", combination_count=1)
    assert key(every) != key(some)
    result = engine.score(RECORDS, [every, some], AS_OF, Config())
    achieved = result.tables["period_achievements"].group_by("group_id").agg(
        pl.col("achieved").sum()).sort("group_id")
    assert achieved["achieved"].to_list()[0] <= achieved["achieved"].to_list()[1]


# --- derived frames (line items joined to their bills) -----------------------------------------

LINES = sources(
    transactions=RECORDS["transactions"].collect().to_dicts(),
    line_items=[
        {"txn_id": "T1", "line_no": 1, "qty": Decimal("2"), "amount": Decimal("80")},
        {"txn_id": "T2", "line_no": 1, "qty": Decimal("1"), "amount": Decimal("40")},
        {"txn_id": "T4", "line_no": 1, "qty": Decimal("3"), "amount": Decimal("60")},
        {"txn_id": "T4", "line_no": 2, "qty": Decimal("1"), "amount": Decimal("60")},
        {"txn_id": "R1", "line_no": 1, "qty": Decimal("1"), "amount": Decimal("-40")},
    ],
)


def line_group(gid: int, ttype: str, value: str) -> m.Group:
    t = target(gid * 10, f"lines {gid}", entity="LINEITEM", ttype=ttype, values=(value,))
    return group(f"lines {gid}", gid=gid, targets=(t,), periods=PERIODS)


def test_a_derived_frame_read_by_two_targets_is_built_once_and_dropped_after_the_last() -> None:
    frames = SharedFrames()
    frames.expect("k")
    frames.expect("k")
    builds: list[int] = []

    def build() -> pl.LazyFrame:
        builds.append(1)
        return pl.LazyFrame({"x": [1]})

    first = frames.get("k", build)
    assert frames.kept  # kept for the second reader ...
    second = frames.get("k", build)
    assert not frames.kept  # ... and dropped after it
    assert len(builds) == 1
    assert first.collect().equals(second.collect())
    frames.get("once", build)  # expected by nobody: built lazily, never kept
    assert len(builds) == 2 and not frames.kept


def test_line_item_groups_scored_with_shared_joins_equal_each_group_alone() -> None:
    groups = [line_group(1, "SALES", "100"), line_group(2, "QUANTITY", "3"),
              line_group(3, "COUNT", "2")]
    shared = engine.plan_sharing(LINES, groups, AS_OF, Config())
    assert shared.frames.wanted == {("lines with their bills", "REGULAR"): 3,
                                    ("lines with their bills", "RETURN"): 2}
    together = engine.score(LINES, groups, AS_OF, Config(), shared=shared)
    assert not shared.frames.kept
    for g in groups:
        alone = engine.score(LINES, [g], AS_OF, Config(), shared=SharedMeasures())
        mine = together.tables["target_progress"].filter(pl.col("group_id") == g.group_id)
        theirs = alone.tables["target_progress"]
        assert theirs.height
        assert_frame_equal(mine.sort("customer_id", "period_index"),
                           theirs.sort("customer_id", "period_index"))


# --- groups scored in threads ---------------------------------------------------------------


def test_groups_scored_in_two_threads_equal_one_thread_failures_included() -> None:
    missing = group("needs a column", gid=9, periods=PERIODS, targets=(
        target(90, "x", rule=tree.Binary("==", tree.Name("currentTxn", "nope"), tree.Literal(1))),
    ))
    streak = spend(2, "Monthly spend streak", kind="STREAK",
                   streak_levels=(m.StreakLevel(streak_id=1, name="two", count=2),))
    groups = [spend(1, "Monthly spend"), line_group(3, "SALES", "100"), missing, streak,
              line_group(4, "QUANTITY", "3"), line_group(5, "COUNT", "2")]
    one = engine.score(LINES, groups, AS_OF, Config(), workers=1)
    two = engine.score(LINES, groups, AS_OF, Config(), workers=2)
    assert one.groups == two.groups == [g.name for g in groups]
    assert one.failures == two.failures and list(two.failures) == ["needs a column"]
    for name, frame in one.tables.items():
        assert_frame_equal(frame, two.tables[name], check_row_order=True)
    assert_frame_equal(one.rewards, two.rewards)
    assert one.tables["streak_progress"].height  # the streak group took the shared rows


def test_a_group_sharing_measured_rows_is_chained_after_the_first_with_that_measure() -> None:
    a, b, c = spend(1, "a"), line_group(2, "SALES", "100"), spend(3, "c")
    chains = engine._chains(LINES, [a, b, c], AS_OF, Config())
    assert [[g.name for _, g in chain] for chain in chains] == [["a", "c"], ["lines 2"]]
    names = [r.groups[0] for r in engine.score_each(LINES, [a, b, c], AS_OF, Config(),
                                                     workers=2)]
    assert sorted(names) == ["a", "c", "lines 2"]


def test_a_rule_on_the_line_alone_filters_lines_before_the_join_with_the_same_rows() -> None:
    big = tree.Binary(">", tree.Name("currentLineItem", "qty"), tree.Literal(Decimal("1")))
    t = target(60, "big lines", entity="LINEITEM", ttype="QUANTITY", rule=big)
    g = group("big lines", gid=6, targets=(t,), periods=PERIODS)
    ctx = GroupContext(g, AS_OF, Config(), LINES)
    assert records.reads_only_the_line(t)
    assert ("lines with their bills", "REGULAR") not in records.derived_frames(ctx, t)
    early = records.regular_records(ctx, t, passing_only=True).filter(pl.col("_pass")).collect()
    late = records.regular_records(ctx, t).filter(pl.col("_pass")).collect()
    assert sorted(early.select("_k1", "_k2").rows()) == [("T1", 1), ("T4", 1)]  # qty 2 and 3
    assert_frame_equal(early.sort("_k1", "_k2"), late.sort("_k1", "_k2"))


def test_a_rule_on_the_line_alone_filters_returned_lines_before_the_join_too() -> None:
    """A returned line counts only when its rule holds (known parent: `_rule`; no parent:
    `_pass`), so the lines whose rule fails may go before the join."""
    big = tree.Binary(">", tree.Name("currentLineItem", "qty"), tree.Literal(Decimal("1")))
    t = target(61, "big lines", entity="LINEITEM", ttype="QUANTITY", rule=big)
    g = group("big lines", gid=7, targets=(t,), periods=PERIODS)
    two_returned = sources(
        transactions=RECORDS["transactions"].collect().to_dicts(),
        line_items=[
            *LINES["line_items"].collect().to_dicts(),
            {"txn_id": "R1", "line_no": 2, "qty": Decimal("5"), "amount": Decimal("-50")},
        ],
    )
    ctx = GroupContext(g, AS_OF, Config(), two_returned)
    assert ("lines with their bills", "RETURN") not in records.derived_frames(ctx, t)
    early = records.return_records(ctx, t, passing_only=True).collect()
    late = records.return_records(ctx, t).collect()
    assert late.height > late.filter(pl.col("_rule")).height > 0  # the rule drops some lines
    assert_frame_equal(early.sort("_k1", "_k2"), late.filter(pl.col("_rule")).sort("_k1", "_k2"))


def test_with_two_threads_the_dearest_groups_start_first() -> None:
    """Longest first: the chain scored last is a cheap one, so no thread idles long at the
    end. Costs are rough (records read, per-customer windows); only their order matters."""
    cheap = line_group(1, "COUNT", "2")
    cheap = replace(cheap, targets=tuple(replace(t, entity=m.TargetEntity.EVENT,
                                                 event_name="AppOpen") for t in cheap.targets))
    lines = line_group(2, "SALES", "100")
    three = replace(spend(3, "three"), targets=(*spend(3, "three").targets,
                                                *line_group(4, "SALES", "1").targets))
    costs = {g.name: engine._estimated_cost(g) for g in (cheap, lines, three)}
    assert costs[cheap.name] < costs[lines.name] < costs[three.name]


def test_the_next_chain_starts_before_a_finished_one_is_handed_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the caller takes a finished chain's results (a run writes them to Parquet), the
    next chain is already scoring, and never more than `workers` chains score at once."""
    lock = threading.Lock()
    running, most = [0], [0]
    third_started, release = threading.Event(), threading.Event()

    def job_of(name: str):
        def job() -> list[tuple[int, str]]:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            if name == "third":
                third_started.set()
            if name == "second":
                assert release.wait(30)  # holds its thread until the caller has seen "first"
            with lock:
                running[0] -= 1
            return [(0, name)]
        return job

    monkeypatch.setattr(engine, "plan_sharing", lambda *a: None)
    monkeypatch.setattr(engine, "_chains", lambda _s, groups, *a: [[(0, g)] for g in groups])
    monkeypatch.setattr(engine, "_estimated_cost", lambda _g: 1.0)
    monkeypatch.setattr(engine, "_chain_job", lambda _s, chain, *a: job_of(chain[0][1]))
    parts = engine.score_pieces([{}], ["first", "second", "third"], AS_OF, Config(), workers=2)
    handed = []
    for part in parts:
        if not handed:
            assert part == "first"
            # The old loop submitted "third" only after the caller came back for more.
            assert third_started.wait(30), "no chain started while the caller held a result"
            release.set()
        handed.append(part)
    assert sorted(handed) == ["first", "second", "third"]
    assert most[0] == 2


@pytest.mark.parametrize("evaluation", ["FIXED_CALENDAR_WINDOW", "CYCLIC_WINDOW"])
def test_a_count_target_over_the_same_records_reads_them_once_with_the_same_scores(
    evaluation: str,
) -> None:
    """COUNT reads no attribute, so it takes the SALES target's records (one frame, collected
    once); each target still scores exactly as in a group of its own."""
    count = target(2, "bills", ttype="COUNT", values=("2",))
    sales = target(1, "spend", values=("100",))
    kw = {"periods": PERIODS} if evaluation.startswith("FIXED") else {
        "frequency_type": m.FrequencyType.MONTHLY, "frequency": 1, "recurring_cycles": 3}
    both = group("both", gid=1, kind="UNIFIED", evaluation=evaluation, targets=(count, sales),
                 **kw)
    ctx = GroupContext(both, AS_OF, Config(), RECORDS)
    qualifying = engine._qualifying(ctx)
    assert qualifying[count.target_id] is qualifying[sales.target_id]
    plan = engine.group_plan(ctx)
    assert plan.counted[count.target_id] is plan.counted[sales.target_id]
    together = engine.score(RECORDS, [both], AS_OF, Config()).tables["target_progress"]
    for t, gid in ((count, 2), (sales, 3)):
        alone = group("alone", gid=gid, evaluation=evaluation, targets=(t,), **kw)
        theirs = engine.score(RECORDS, [alone], AS_OF, Config()).tables["target_progress"]
        mine = together.filter(pl.col("target_id") == t.target_id)
        assert mine.height == theirs.height > 0
        assert_frame_equal(mine.drop("group_id").sort("customer_id", "period_index"),
                           theirs.drop("group_id").sort("customer_id", "period_index"))


def test_bills_that_all_carry_qty_are_not_joined_to_their_lines() -> None:
    """QUANTITY of a bill falls back to its lines only when the bill lacks `qty`: when every
    bill carries it the lines are never summed, and the values are the bills' own."""
    t = target(70, "items", ttype="QUANTITY", values=("3",))
    g = group("items", gid=70, targets=(t,), periods=PERIODS)
    lines = [{"txn_id": "B1", "line_no": 1, "qty": Decimal("9"), "amount": Decimal("10")}]
    bills = [txn("B1", 1, "2024-01-03T10:00:00", "10", qty=Decimal("2")),
             txn("B2", 1, "2024-01-04T10:00:00", "10", qty=Decimal("2"))]
    all_carry = sources(transactions=bills, line_items=lines)
    ctx = GroupContext(g, AS_OF, Config(), all_carry)
    assert ("line quantity per bill",) not in records.derived_frames(ctx, t)
    got = engine.score(all_carry, [g], AS_OF, Config()).tables["target_progress"]
    assert got.filter(pl.col("period_index") == 1)["value"].to_list() == [Decimal("4")]

    one_lacks = sources(transactions=[bills[0] | {"qty": None}, bills[1]], line_items=lines)
    ctx = GroupContext(g, AS_OF, Config(), one_lacks)
    assert ("line quantity per bill",) in records.derived_frames(ctx, t)
    got = engine.score(one_lacks, [g], AS_OF, Config()).tables["target_progress"]
    assert got.filter(pl.col("period_index") == 1)["value"].to_list() == [Decimal("11")]
