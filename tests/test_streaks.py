"""streak_tables: golden cases by hand (SPEC §8, §13, §14) and a per-customer loop to compare with.

Achievement histories are written one letter per window, in window order:
`A` ended achieved, `M` ended missed, `R` running achieved, `r` running not yet achieved,
`.` no row for that window (skipped: neither breaks nor extends).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline.definitions.model import EvaluationType, Group, StreakLevel, TrackingType
from pipeline.errors import InputError
from pipeline.scoring.streaks import streak_tables

SCHEMA = {
    "group_id": pl.Int64,
    "customer_id": pl.Int64,
    "period_index": pl.Int32,
    "ref_code": pl.String,
    "window_start": pl.Datetime("us"),
    "window_end": pl.Datetime("us"),
    "status": pl.String,
    "achieved": pl.Boolean,
    "achieved_at": pl.Datetime("us", "UTC"),
}
RUNS = {
    "group_id": pl.Int64,
    "customer_id": pl.Int64,
    "start_period_index": pl.Int32,
    "end_period_index": pl.Int32,
    "length": pl.Int32,
    "is_current": pl.Boolean,
    "graces_used": pl.Int32,
}
PROGRESS = {
    "group_id": pl.Int64,
    "customer_id": pl.Int64,
    "current_count": pl.Int32,
    "longest_count": pl.Int32,
    "levels_achieved": pl.Int32,
    "next_level_name": pl.String,
    "next_level_count": pl.Int32,
}
FIRST_DAY = datetime(2024, 1, 1)


def weekly(k: int) -> tuple[datetime, datetime]:
    start = FIRST_DAY + timedelta(days=7 * (k - 1))
    return start, start + timedelta(days=7) - timedelta(microseconds=1)


def achievements(
    histories: dict[Any, str],
    bounds: Callable[[int], tuple[datetime, datetime]] = weekly,
    ref: Callable[[int], str | None] = "W{}".format,
    customer: Any = pl.Int64,
) -> pl.DataFrame:
    """period_achievements rows from one letter per window; achieved at noon UTC, day 2."""
    rows = []
    for cid, letters in histories.items():
        for k, letter in enumerate(letters, start=1):
            if letter == ".":
                continue
            start, end = bounds(k)
            achieved = letter in "AR"
            rows.append(
                {
                    "group_id": 7,
                    "customer_id": cid,
                    "period_index": k,
                    "ref_code": ref(k),
                    "window_start": start,
                    "window_end": end,
                    "status": "RUNNING" if letter in "Rr" else "ENDED",
                    "achieved": achieved,
                    "achieved_at": (start + timedelta(days=1, hours=12)) if achieved else None,
                }
            )
    return pl.DataFrame(rows, schema={**SCHEMA, "customer_id": customer})


def group(levels: list[tuple[str, int]], *, continuous: bool = True, grace: int = 0) -> Group:
    return Group(
        group_id=7,
        name="streak",
        tracking_type=TrackingType.STREAK,
        evaluation_type=EvaluationType.FIXED,
        targets=(),
        streak_levels=tuple(StreakLevel(i, name, n) for i, (name, n) in enumerate(levels, 1)),
        streak_continuous=continuous,
        streak_grace_windows=grace,
    )


def runs_frame(rows: dict[str, list]) -> pl.DataFrame:
    return pl.DataFrame({"group_id": [7] * len(rows["customer_id"]), **rows}, schema=RUNS)


def progress_frame(rows: dict[str, list]) -> pl.DataFrame:
    return pl.DataFrame({"group_id": [7] * len(rows["customer_id"]), **rows}, schema=PROGRESS)


def rewards_of(frame: pl.DataFrame) -> list[tuple]:
    return frame.select("customer_id", "name", "period_index", "value", "target_value").rows()


# --- golden cases ---------------------------------------------------------------------------


def test_streak_seed_levels_over_period44_and_period45() -> None:
    """The seed body: period44 (17 Nov) ENDED and period45 (18-20 Nov) RUNNING as of 19 Nov."""
    days = {1: (datetime(2023, 11, 17), datetime(2023, 11, 17, 23, 59, 59, 999999)),
            2: (datetime(2023, 11, 18), datetime(2023, 11, 20, 23, 59, 59, 999999))}  # fmt: skip
    frame = achievements(
        {101: "AR", 102: "Ar", 103: "MR", 104: "Mr"},
        bounds=days.__getitem__,
        ref=lambda k: f"period{43 + k}",
    )
    seed = group([("streakTestt193", 1), ("streakTestt123", 2)])
    runs, progress, rewards = streak_tables(frame, seed)

    assert_frame_equal(
        runs,
        runs_frame(
            {
                "customer_id": [101, 102, 103],
                "start_period_index": [1, 1, 2],
                "end_period_index": [2, 1, 2],
                "length": [2, 1, 1],
                "is_current": [True, True, True],
                "graces_used": [0, 0, 0],
            }
        ),
    )
    assert_frame_equal(
        progress,
        progress_frame(
            {
                "customer_id": [101, 102, 103, 104],
                "current_count": [2, 1, 1, 0],
                "longest_count": [2, 1, 1, 0],
                "levels_achieved": [2, 1, 1, 0],
                "next_level_name": [None, "streakTestt123", "streakTestt123", "streakTestt193"],
                "next_level_count": [None, 2, 2, 1],
            }
        ),
    )
    assert rewards.columns == [
        "group_id", "name", "customer_id", "period_index", "ref_code",
        "window_start", "window_end", "value", "target_value", "achieved_at",
    ]  # fmt: skip
    assert rewards.select("customer_id", "name", "ref_code", "value", "achieved_at").rows() == [
        (101, "streakTestt193", "period44", 1, datetime(2023, 11, 18, 12, tzinfo=UTC)),
        (101, "streakTestt123", "period45", 2, datetime(2023, 11, 19, 12, tzinfo=UTC)),
        (102, "streakTestt193", "period44", 1, datetime(2023, 11, 18, 12, tzinfo=UTC)),
        (103, "streakTestt193", "period45", 1, datetime(2023, 11, 19, 12, tzinfo=UTC)),
    ]
    assert rewards["window_end"].to_list() == [days[1][1], days[2][1], days[1][1], days[2][1]]
    assert rewards["target_value"].to_list() == rewards["value"].to_list()


@pytest.mark.parametrize(
    ("history", "runs", "current", "longest"),
    [
        pytest.param("AAMAAr", [(1, 2, 2, False), (4, 5, 2, True)], 2, 2,
                     id="missed ENDED week breaks, RUNNING unachieved week does not"),
        pytest.param("AAA.AR", [(1, 6, 5, True)], 5, 5,
                     id="week without a row is skipped, RUNNING achieved week extends"),
        pytest.param("AAAMr", [(1, 3, 3, False)], 0, 3,
                     id="latest ENDED week missed and running not achieved: current 0"),
        pytest.param("AAMR", [(1, 2, 2, False), (4, 4, 1, True)], 1, 2,
                     id="latest ENDED week missed, running achieved: current 1"),
        pytest.param("MMr", [], 0, 0, id="never achieved"),
        pytest.param("r", [], 0, 0, id="only a running week not yet achieved"),
    ],
)  # fmt: skip
def test_weekly_continuous_streak(
    history: str, runs: list[tuple], current: int, longest: int
) -> None:
    got_runs, progress, _ = streak_tables(achievements({1: history}), group([("two", 2)]))
    assert (
        got_runs.select("start_period_index", "end_period_index", "length", "is_current").rows()
        == runs
    )
    assert progress.select("current_count", "longest_count").row(0) == (current, longest)


def test_weekly_levels_are_awarded_once_at_the_window_that_first_reaches_n() -> None:
    frame = achievements({1: "AAMAAr", 2: "AAA.AR", 3: "AAAMr", 4: "AAMAAAA"})
    _, progress, rewards = streak_tables(frame, group([("two weeks", 2), ("four weeks", 4)]))
    assert rewards_of(rewards) == [
        (1, "two weeks", 2, 2, 2),  # the second run reaches 2 again at week 5: not awarded
        (2, "two weeks", 2, 2, 2),
        (2, "four weeks", 5, 4, 4),  # week 4 has no row: counts 1, 2, 3, -, 4
        (3, "two weeks", 2, 2, 2),
        (4, "two weeks", 2, 2, 2),
        (4, "four weeks", 7, 4, 4),
    ]
    assert progress.select("levels_achieved", "next_level_name", "next_level_count").rows() == [
        (1, "four weeks", 4),
        (2, None, None),
        (1, "four weeks", 4),  # a level reached before a break is never taken back
        (2, None, None),
    ]


def test_non_continuous_monthly_streak_counts_every_achieved_month() -> None:
    def monthly(k: int) -> tuple[datetime, datetime]:
        start = datetime(2024, k, 1)
        return start, datetime(2024, k + 1, 1) - timedelta(microseconds=1)

    frame = achievements({1: "AMAMMR", 2: "MMr", 3: ".A.A"}, bounds=monthly, ref="M{}".format)
    runs, progress, rewards = streak_tables(
        frame, group([("two", 2), ("three", 3)], continuous=False, grace=2)
    )
    assert_frame_equal(
        runs,
        runs_frame(
            {
                "customer_id": [1, 3],
                "start_period_index": [1, 2],
                "end_period_index": [6, 4],
                "length": [3, 2],
                "is_current": [True, True],
                "graces_used": [0, 0],  # grace applies to continuous streaks only
            }
        ),
    )
    assert progress.select("customer_id", "current_count", "longest_count").rows() == [
        (1, 3, 3),
        (2, 0, 0),
        (3, 2, 2),
    ]
    assert rewards_of(rewards) == [
        (1, "two", 3, 2, 2),
        (1, "three", 6, 3, 3),
        (3, "two", 4, 2, 2),
    ]


def test_cyclic_streak_with_cycle_numbers_per_customer() -> None:
    """CYCLIC windows differ per customer; only the cycle number orders them."""

    def cycle_of(customer: int) -> Callable[[int], tuple[datetime, datetime]]:
        return lambda k: weekly(k + customer)

    frames = [
        achievements({c: h}, bounds=cycle_of(c), ref=lambda k: None)
        for c, h in {5: "AAR", 6: "AMA"}.items()
    ]
    runs, _, rewards = streak_tables(pl.concat(frames), group([("three", 3)]))
    assert runs.select("customer_id", "start_period_index", "length", "is_current").rows() == [
        (5, 1, 3, True),
        (6, 1, 1, False),
        (6, 3, 1, True),
    ]
    assert rewards_of(rewards) == [(5, "three", 3, 3, 3)]
    assert rewards["ref_code"].to_list() == [None]
    assert rewards["window_start"].to_list() == [weekly(8)[0]]


def test_levels_given_unsorted_are_sorted_by_count() -> None:
    unsorted = group([("gold", 3), ("bronze", 1), ("silver", 2)])
    _, progress, rewards = streak_tables(achievements({1: "AAr", 2: "AAA"}), unsorted)
    assert rewards_of(rewards) == [
        (1, "bronze", 1, 1, 1),
        (1, "silver", 2, 2, 2),
        (2, "bronze", 1, 1, 1),
        (2, "silver", 2, 2, 2),
        (2, "gold", 3, 3, 3),
    ]
    assert progress.select("levels_achieved", "next_level_name", "next_level_count").rows() == [
        (2, "gold", 3),
        (3, None, None),
    ]


def test_level_below_one_window_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"level 'never' has targetCountOfSequence 0"):
        streak_tables(achievements({1: "A"}), group([("never", 0)]))


@pytest.mark.parametrize(
    ("grace", "history", "runs", "current"),
    [
        pytest.param(1, "AMAMAr", [(1, 3, 2, False, 1), (5, 5, 1, True, 0)], 1,
                     id="g=1: first missed week forgiven, second breaks"),
        pytest.param(1, "AAMr", [(1, 2, 2, True, 1)], 2,
                     id="g=1: trailing forgiven miss keeps the run current"),
        pytest.param(1, "AMMA", [(1, 1, 1, False, 1), (4, 4, 1, True, 0)], 1,
                     id="g=1: two misses in a row break; the spent grace is still counted"),
        pytest.param(2, "AMMA", [(1, 4, 2, True, 2)], 2,
                     id="g=2: two misses in a row forgiven"),
        pytest.param(1, "MMAMR", [(3, 5, 2, True, 1)], 2,
                     id="g=1: misses before the first achieved week use no grace"),
        pytest.param(3, "AMAMAMAMA", [(1, 7, 4, False, 3), (9, 9, 1, True, 0)], 1,
                     id="g=3: the fourth miss of one run breaks it"),
    ],
)  # fmt: skip
def test_grace_windows(grace: int, history: str, runs: list[tuple], current: int) -> None:
    got_runs, progress, _ = streak_tables(achievements({1: history}), group([], grace=grace))
    assert (
        got_runs.select(
            "start_period_index", "end_period_index", "length", "is_current", "graces_used"
        ).rows()
        == runs
    )
    assert progress["current_count"].to_list() == [current]


def test_no_rows_gives_empty_frames_with_the_spec_columns() -> None:
    runs, progress, rewards = streak_tables(achievements({}), group([("one", 1)], grace=1))
    assert runs.schema == pl.Schema(RUNS)
    assert progress.schema == pl.Schema(PROGRESS)
    assert (runs.height, progress.height, rewards.height) == (0, 0, 0)


def test_text_customer_ids_keep_their_type() -> None:
    frame = achievements({"b": "AA", "a": "MA"}, customer=pl.String)
    runs, progress, rewards = streak_tables(frame, group([("two", 2)]))
    assert runs.schema["customer_id"] == pl.String
    assert progress.select("customer_id", "current_count").rows() == [("a", 1), ("b", 2)]
    assert rewards_of(rewards) == [("b", "two", 2, 2, 2)]


def test_integer_ids_too_far_apart_to_pack_into_one_sort_key() -> None:
    far = {2**62: "AMA", -(2**62): "AA", 0: "MA"}
    frame = achievements(far).reverse()  # out of order, so the sort runs
    runs, progress, _ = streak_tables(frame, group([]))
    assert runs.select("customer_id", "start_period_index", "length").rows() == [
        (-(2**62), 1, 2),
        (0, 2, 1),
        (2**62, 1, 1),
        (2**62, 3, 1),
    ]
    assert progress["customer_id"].to_list() == [-(2**62), 0, 2**62]


# --- property: the vectorised tables equal a per-customer loop ------------------------------


def loop_reference(
    frame: pl.DataFrame, levels: list[tuple[str, int]], continuous: bool, grace: int
) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """SPEC §8/§14 read literally, one customer and one window at a time."""
    levels = sorted(levels, key=lambda level: level[1])
    grace = grace if continuous else 0
    runs, progress, rewards = [], [], []
    by_customer: dict[Any, list[dict]] = {}
    for row in frame.sort("customer_id", "period_index").iter_rows(named=True):
        by_customer.setdefault(row["customer_id"], []).append(row)
    for cid, windows in by_customer.items():
        mine: list[dict] = []
        open_run: dict | None = None
        total = best = 0
        for w in windows:
            if w["achieved"]:
                total += 1
                if open_run is None:
                    open_run = {"start": w["period_index"], "length": 0, "graces": 0}
                    mine.append(open_run)
                open_run["length"] += 1
                open_run["end"] = w["period_index"]
                count = open_run["length"] if continuous else total
                for name, n in levels:
                    if count == n and n > best:
                        rewards.append((cid, name, w["period_index"], n, n))
                best = max(best, count)
            elif w["status"] == "ENDED" and open_run is not None and continuous:
                if open_run["graces"] < grace:
                    open_run["graces"] += 1
                else:
                    open_run = None
        if continuous:
            for run in mine:
                runs.append((cid, run["start"], run["end"], run["length"],
                             run is open_run, run["graces"]))  # fmt: skip
            current = open_run["length"] if open_run is not None else 0
        else:
            if mine:
                runs.append((cid, mine[0]["start"], mine[-1]["end"], total, True, 0))
            current = total
        reached = [level for level in levels if level[1] <= best]
        following = levels[len(reached)] if len(reached) < len(levels) else (None, None)
        progress.append((cid, current, best, len(reached), *following))
    return runs, progress, rewards


@st.composite
def histories(draw: st.DrawFn) -> tuple[pl.DataFrame, list[tuple[str, int]], bool, int]:
    windows = draw(st.integers(1, 9))
    text_ids = draw(st.booleans())
    customers = draw(st.lists(st.integers(-5, 30), min_size=0, max_size=5, unique=True))
    running = draw(st.booleans())  # does the last window run (as of D) or has it ended?
    letters = st.sampled_from("AAMM.")
    last = st.sampled_from("Rr." if running else "AM.")
    frame = achievements(
        {
            (f"c{c}" if text_ids else c): "".join(draw(st.lists(letters, min_size=windows - 1,
                                                                  max_size=windows - 1)))
            + draw(last)
            for c in customers
        },
        customer=pl.String if text_ids else pl.Int64,
    )  # fmt: skip
    counts = draw(st.lists(st.integers(1, 6), max_size=3, unique=True))
    levels = [(f"L{n}", n) for n in counts]
    return frame, levels, draw(st.booleans()), draw(st.integers(0, 3))


@settings(max_examples=150, deadline=None)
@given(case=histories(), seed=st.integers(0, 2**16))
def test_streak_tables_equal_a_per_customer_loop(
    case: tuple[pl.DataFrame, list[tuple[str, int]], bool, int], seed: int
) -> None:
    frame, levels, continuous, grace = case
    want_runs, want_progress, want_rewards = loop_reference(frame, levels, continuous, grace)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)  # row order must not matter
    runs, progress, rewards = streak_tables(shuffled, group(levels, continuous=continuous,
                                                            grace=grace))  # fmt: skip
    assert runs.drop("group_id").rows() == want_runs
    assert progress.drop("group_id").rows() == want_progress
    assert sorted(rewards_of(rewards)) == sorted(want_rewards)
    # Each reward row carries its own window's facts.
    facts = frame.select("customer_id", "period_index", "ref_code", "achieved_at")
    assert (
        rewards.join(facts, on=["customer_id", "period_index"])
        .filter(
            pl.col("ref_code").ne_missing(pl.col("ref_code_right"))
            | pl.col("achieved_at").ne_missing(pl.col("achieved_at_right"))
        )
        .is_empty()
    )
