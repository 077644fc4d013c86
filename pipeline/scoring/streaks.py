"""Streak runs, progress and level rewards of a STREAK group (SPEC §8, §11, §13, §14).

Pure: the group's `period_achievements` rows in, three output frames out. Nothing loops over
customers or windows. Rows are sorted by customer and window once; a run starts at an achieved
window whose predecessor (same customer) was not inside a run, and a global cumulative sum of those
starts numbers every run of every customer at once.

Grace windows (§14) make "inside a run" depend on how many misses the run has forgiven since it
started, which a plain cumulative sum cannot express. Each window is then a transition function of
a tiny state machine (state = misses forgiven so far, or "no run"); the functions form a small
table-driven monoid and are composed with a parallel prefix scan: log2(windows per customer)
vectorised steps, whatever the row count.

Example (g = 1; A achieved, M ended unachieved, r running not yet achieved)::

    windows  1 2 3 4 5 6 r
             A M A M A A r   ->  runs 1-3 (length 2, 1 grace), 5-6 (length 2, current)
"""

from __future__ import annotations

import functools

import polars as pl

from pipeline.definitions.model import Group, StreakLevel
from pipeline.errors import InputError
from pipeline.scoring.kinds import REWARD_COLUMNS

RUN_COLUMNS = (
    "group_id",
    "customer_id",
    "start_period_index",
    "end_period_index",
    "length",
    "is_current",
    "graces_used",
)
PROGRESS_COLUMNS = (
    "group_id",
    "customer_id",
    "current_count",
    "longest_count",
    "levels_achieved",
    "next_level_name",
    "next_level_count",
)
# An earned STREAK_LEVEL_ACHIEVED reward without its kind and group name (kinds.apply adds them).
LEVEL_REWARD_COLUMNS = tuple(c for c in REWARD_COLUMNS if c not in ("kind", "group_name"))


def streak_tables(
    achievements: pl.DataFrame, group: Group
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Turn a STREAK group's window achievements into (streak_runs, streak_progress, level_rewards).

    Args:
        achievements: the group's `period_achievements` rows of started windows: group_id,
            customer_id (Int64 or String), period_index, ref_code, window_start, window_end,
            status (RUNNING/ENDED), achieved, achieved_at. A customer may lack rows for some
            windows; those are skipped (they neither break nor extend a run).
        group: the registered group; reads `streak_levels`, `streak_continuous` and
            `streak_grace_windows`.

    Returns:
        `streak_runs` and `streak_progress` with exactly the SPEC §11 columns, and one
        level-reward row per customer and level reached, at the window where the count first
        reached the level's N (`value` = `target_value` = N). Every frame is sorted by customer.

    Raises:
        InputError: a streak level asks for fewer than one window.
    """
    levels = _sorted_levels(group)
    windows = _sorted_windows(achievements)
    grace = group.streak_grace_windows if group.streak_continuous else 0
    events = _events(windows, grace, group.streak_continuous)
    if group.streak_continuous:
        runs = _runs(events, group.group_id)
    else:
        runs = _total_run(events, group.group_id)
    customers = windows.filter(_changes(pl.col("customer_id"))).select("customer_id")
    progress = _progress(customers, runs, levels, group)
    rewards = _level_rewards(achievements, events, levels, group.group_id)
    return runs, progress, rewards


def _sorted_levels(group: Group) -> list[StreakLevel]:
    """Levels by N; sorted here too so a hand-built Group cannot award them out of order."""
    for level in group.streak_levels:
        if level.count < 1:
            raise InputError(
                f"Group {group.name!r}: streak level {level.name!r} has targetCountOfSequence "
                f"{level.count}; it must be at least 1. Fix streaks[] and register the group again."
            )
    return sorted(group.streak_levels, key=lambda level: level.count)


def _changes(column: pl.Expr, offset: int = 1) -> pl.Expr:
    """True where a sorted column differs from its neighbour `offset` rows away (or has none)."""
    return (column != column.shift(offset)).fill_null(True)


def _sorted_windows(achievements: pl.DataFrame) -> pl.DataFrame:
    """The narrow columns run detection needs, in (customer, window) order.

    The wide columns (dates, ref_code) stay behind and are fetched by `_row` for the few rows
    that become level rewards: sorting 24M rows of four narrow columns is several times cheaper.
    The sort is skipped when the engine already hands the rows over in order.
    """
    narrow = achievements.select(
        "customer_id",
        "period_index",
        pl.col("achieved").fill_null(False),
        _ended=pl.col("status") == "ENDED",
        _row=pl.int_range(pl.len(), dtype=pl.Int64),
    )
    customer, period = pl.col("customer_id"), pl.col("period_index")
    in_order = (customer > customer.shift(1)) | (
        (customer == customer.shift(1)) & (period > period.shift(1))
    )
    if not narrow.select(in_order.fill_null(True).all()).item():
        narrow = narrow.sort(_packed_key(narrow))
    # Sorted by customer now: lets group_by take its sorted fast path.
    return narrow.with_columns(customer.set_sorted())


def _packed_key(narrow: pl.DataFrame) -> pl.Expr | list[str]:
    """One Int64 holding (customer, window) when both fit, else the two columns.

    Sorting on one integer is about three times faster than polars' two-column sort on 24M
    shuffled rows; text ids (or ids too far apart to pack) take the two-column sort.
    """
    both = ["customer_id", "period_index"]
    if narrow.is_empty() or not narrow.schema["customer_id"].is_integer():
        return both
    customer, period = pl.col("customer_id"), pl.col("period_index")
    low, high, first, last = narrow.select(
        customer.min().alias("low"),
        customer.max().alias("high"),
        period.min().alias("first"),
        period.max().alias("last"),
    ).row(0)
    bits = (last - first).bit_length()
    if high - low >= 2 ** (62 - bits):
        return both
    offset = (customer - low).cast(pl.Int64) * 2**bits
    return offset + (period - first).cast(pl.Int64)


def _events(windows: pl.DataFrame, grace: int, continuous: bool) -> pl.DataFrame:
    """The windows that matter to runs, with the streak count reached at each.

    Columns added: `_first`/`_last` (the customer's first/last such window) and `_count`
    (continuous: achieved windows of the current run so far; non-continuous: of the customer).
    Continuous also gets `_in_run` (the window is inside a run once it is processed), `_start`
    (it opens a run) and `_run` (global run number, meaningful where `_in_run`).
    """
    achieved = pl.col("achieved")
    events = (
        # A RUNNING window not yet achieved neither breaks nor extends a run (§8): drop it.
        windows.filter(achieved | pl.col("_ended")).with_columns(
            _first=_changes(pl.col("customer_id")),
            _last=_changes(pl.col("customer_id"), -1),
            _cum=achieved.cast(pl.Int32).cum_sum(),
        )
    )
    # Counts are a global cumulative sum minus its value where the run (or customer) began.
    if not continuous:
        base = pl.when(pl.col("_first")).then(pl.col("_cum") - achieved.cast(pl.Int32))
        return events.with_columns(_count=pl.col("_cum") - base.forward_fill())
    in_run = _in_run_with_grace(events, grace) if grace > 0 else events["achieved"]
    events = events.with_columns(_in_run=in_run).with_columns(
        _start=achieved & (pl.col("_first") | ~pl.col("_in_run").shift(1).fill_null(False))
    )
    base = pl.when(pl.col("_start")).then(pl.col("_cum") - 1).forward_fill()
    return events.with_columns(
        _run=pl.col("_start").cast(pl.UInt32).cum_sum().set_sorted(),
        _count=pl.col("_cum") - base,
    )


def _in_run_with_grace(events: pl.DataFrame, grace: int) -> pl.Series:
    """Whether each window is inside a run once up to `grace` misses per run are forgiven.

    Each window is a transition of a small state machine (see `_transitions`). A Hillis-Steele
    scan makes every row hold the composition of its customer's transitions so far, one table
    lookup per row and step; the state after a row is that composition applied to "no run".
    """
    compose, from_none, size, none = _transitions(grace)
    code = pl.col("_code")
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    scan = events.select(
        _code=pl.when(pl.col("achieved")).then(0).otherwise(1).cast(pl.UInt32),
        _pos=row - pl.when(pl.col("_first")).then(row).forward_fill(),
    )
    longest = (scan["_pos"].max() or 0) + 1
    step = 1
    while step < longest:  # log2(windows per customer) steps, each over every row at once
        later_after_earlier = pl.lit(compose).gather(code * size + code.shift(step))
        scan = scan.with_columns(
            _code=pl.when(pl.col("_pos") >= step).then(later_after_earlier).otherwise(code)
        )
        step *= 2
    return scan.select(pl.lit(from_none).gather(code) < none).to_series()


@functools.cache
def _transitions(grace: int) -> tuple[pl.Series, pl.Series, int, int]:
    """The monoid of a run's state transitions under `grace`, as lookup tables.

    States 0..grace count the misses the open run has forgiven; state `grace + 1` means no run.
    An achieved window keeps the state, or opens a run (state 0) from "no run"; a missed window
    adds one, and the miss that goes past `grace` closes the run. Every sequence of windows is
    one of a few hundred functions on those states (330 for grace 3), numbered from 0 (achieved)
    and 1 (missed).

    Returns:
        (compose, from_none, size, none): `compose[later * size + earlier]` is the number of
        "earlier, then later"; `from_none[f]` is the state f reaches from "no run".
    """
    none = grace + 1
    achieved = (*range(none), 0)
    missed = tuple(min(s + 1, none) for s in range(none + 1))
    functions = [achieved, missed]
    number = {achieved: 0, missed: 1}
    for f in functions:  # grows while new compositions appear; every word is reached this way
        for then in (achieved, missed):
            h = tuple(then[f[s]] for s in range(none + 1))
            if h not in number:
                number[h] = len(functions)
                functions.append(h)
    compose = [
        number[tuple(later[earlier[s]] for s in range(none + 1))]
        for later in functions
        for earlier in functions
    ]
    return (
        pl.Series("compose", compose, dtype=pl.UInt32),
        pl.Series("from_none", [f[none] for f in functions], dtype=pl.UInt8),
        len(functions),
        none,
    )


def _runs(events: pl.DataFrame, group_id: int) -> pl.DataFrame:
    """Continuous: one row per run.

    Every miss forgiven while the run was alive counts in `graces_used`, also one after the
    run's last achieved window (pending, or spent before the run broke); `end_period_index` is
    always an achieved window. `_run` is sorted, so the group_by takes its sorted fast path.
    """
    return (
        events.filter(pl.col("_in_run"))
        .group_by("_run", maintain_order=True)
        .agg(
            pl.col("customer_id").first(),
            start_period_index=pl.col("period_index").first(),
            end_period_index=pl.when("achieved").then(pl.col("period_index")).max(),
            length=pl.col("_count").last(),  # a miss leaves the count as it was
            # The customer's last window is inside this run: it is the one still open as of D.
            is_current=pl.col("_last").last(),
            _windows=pl.len(),
        )
        .select(
            pl.lit(group_id, pl.Int64).alias("group_id"),
            pl.col("customer_id").set_sorted(),
            pl.col("start_period_index", "end_period_index", "length").cast(pl.Int32),
            "is_current",
            (pl.col("_windows") - pl.col("length")).cast(pl.Int32).alias("graces_used"),
        )
    )


def _total_run(events: pl.DataFrame, group_id: int) -> pl.DataFrame:
    """Non-continuous: misses never break, so a customer has one run, first to last achieved
    window, of length = achieved windows; it is the run `current_count` counts."""
    return (
        events.filter(pl.col("achieved"))
        .group_by("customer_id", maintain_order=True)
        .agg(
            start_period_index=pl.col("period_index").first(),
            end_period_index=pl.col("period_index").last(),
            length=pl.len(),
        )
        .select(
            pl.lit(group_id, pl.Int64).alias("group_id"),
            pl.col("customer_id").set_sorted(),
            pl.col("start_period_index").cast(pl.Int32),
            pl.col("end_period_index").cast(pl.Int32),
            pl.col("length").cast(pl.Int32),
            pl.lit(True).alias("is_current"),
            pl.lit(0, pl.Int32).alias("graces_used"),
        )
    )


def _progress(
    customers: pl.DataFrame,
    runs: pl.DataFrame,
    levels: list[StreakLevel],
    group: Group,
) -> pl.DataFrame:
    """One row per customer; `longest_count` is also the highest count ever reached."""
    counts = runs.group_by("customer_id").agg(
        current_count=pl.col("length").filter(pl.col("is_current")).sum(),
        longest_count=pl.col("length").max(),
    )
    longest = pl.col("longest_count")
    reached = (
        pl.sum_horizontal(*(longest >= level.count for level in levels)) if levels else pl.lit(0)
    )
    next_name: pl.Expr = pl.lit(None, pl.String)
    next_count: pl.Expr = pl.lit(None, pl.Int32)
    for level in reversed(levels):  # at most 10 levels: builds one when/then chain
        next_name = pl.when(longest < level.count).then(pl.lit(level.name)).otherwise(next_name)
        next_count = pl.when(longest < level.count).then(pl.lit(level.count)).otherwise(next_count)
    return (
        customers.join(counts, on="customer_id", how="left", maintain_order="left")
        .with_columns(pl.col("current_count", "longest_count").fill_null(0).cast(pl.Int32))
        .select(
            pl.lit(group.group_id, pl.Int64).alias("group_id"),
            "customer_id",
            "current_count",
            "longest_count",
            reached.cast(pl.Int32).alias("levels_achieved"),
            next_name.cast(pl.String).alias("next_level_name"),
            next_count.cast(pl.Int32).alias("next_level_count"),
        )
    )


def _level_rewards(
    achievements: pl.DataFrame,
    events: pl.DataFrame,
    levels: list[StreakLevel],
    group_id: int,
) -> pl.DataFrame:
    """The window at which each customer's count first equalled each level's N.

    Counts grow by one per achieved window, so "first reached N" is the earliest achieved window
    whose count is exactly N; a later run that reaches N again does not award it twice (§8).
    """
    table = pl.DataFrame(
        {
            "name": [level.name for level in levels],
            "_count": [level.count for level in levels],
            "_level": list(range(len(levels))),
        },
        schema={"name": pl.String, "_count": pl.Int32, "_level": pl.Int32},
    )
    top = max((level.count for level in levels), default=0)
    hits = (
        events.filter(pl.col("achieved") & (pl.col("_count") <= top))
        .select("customer_id", "period_index", "_row", pl.col("_count").cast(pl.Int32))
        .join(table, on="_count", how="inner", maintain_order="left_right")
        # Rows are in (customer, window) order: the first per level is the earliest window.
        .filter(pl.struct("customer_id", "_level").is_first_distinct())
    )
    wide = achievements.select(
        pl.col("ref_code", "window_start", "window_end", "achieved_at").gather(hits["_row"])
    )
    return pl.concat([hits, wide], how="horizontal").select(
        pl.lit(group_id, pl.Int64).alias("group_id"),
        "name",
        "customer_id",
        pl.col("period_index").cast(pl.Int32),
        "ref_code",
        "window_start",
        "window_end",
        pl.col("_count").alias("value"),
        pl.col("_count").alias("target_value"),
        "achieved_at",
    )
