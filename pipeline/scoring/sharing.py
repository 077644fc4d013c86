"""Measure once, use twice: groups whose targets and windows are the same share their scores.

Why: programmes pair groups over the same measure all the time ("Monthly spend" and "Monthly
spend streak"): the same targets, the same windows, the same enrolment. Their `target_progress`
and `period_achievements` rows are equal but for the group and target ids, so the second group
takes the first one's rows with its own ids and only adds what its kind adds (streak runs,
rewards, a leaderboard).

Two groups share when `measure_key` is equal: the group with its identity and kind-only fields
blanked, and its targets with their ids and names blanked. Names matter only through enrolment
rows (looked up by group and target name), so a group with enrolment rows never shares; nor
do CAPPING groups (their points split needs the counted records) and PERIOD_AGNOSTIC ones
(scored by their own path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import polars as pl

from pipeline.definitions.model import EvaluationType, Group, TrackingType

if TYPE_CHECKING:
    from pipeline.scoring.context import GroupContext
    from pipeline.scoring.results import GroupScore

SHAREABLE = (TrackingType.DEFAULT, TrackingType.STREAK, TrackingType.UNIFIED)


@dataclass
class Measured:
    """One group's measured rows, with the target ids they carry."""

    group_id: int
    target_ids: tuple[int, ...]
    progress: pl.DataFrame
    achievements: pl.DataFrame


@dataclass
class SharedFrames:
    """Frames derived from the sources that several targets of this shard read (line items
    joined to their bills, line quantities per bill): built and collected once, dropped after
    their last reader.

    Why: joining millions of lines to their bills on a text id costs more than most of a
    target's scoring, and a programme often has several line-item targets. A frame that only
    one target reads stays lazy, so its query still reads only the columns it needs.
    """

    wanted: dict[Hashable, int] = field(default_factory=dict)
    kept: dict[Hashable, pl.LazyFrame] = field(default_factory=dict)
    # Groups may be scored in several threads (`engine.score_each`): one builds, others wait.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def expect(self, key: Hashable) -> None:
        self.wanted[key] = self.wanted.get(key, 0) + 1

    def get(self, key: Hashable, build: Callable[[], pl.LazyFrame]) -> pl.LazyFrame:
        with self.lock:
            readers = self.wanted.get(key, 0)
            self.wanted[key] = max(readers - 1, 0)
            frame = self.kept.get(key)
            if frame is None:
                if readers < 2:
                    return build()
                frame = self.kept[key] = build().collect().lazy()
            if not self.wanted[key]:
                del self.kept[key]
            return frame


@dataclass
class SharedMeasures:
    """Measured rows kept for groups still to come in this shard (`expect` says which keys
    will be asked for again, so nothing is kept that no later group needs), and the derived
    source frames its targets share (`frames`)."""

    wanted: dict[Hashable, int] = field(default_factory=dict)
    kept: dict[Hashable, Measured] = field(default_factory=dict)
    frames: SharedFrames = field(default_factory=SharedFrames)

    def expect(self, key: Hashable | None) -> None:
        if key is not None:
            self.wanted[key] = self.wanted.get(key, 0) + 1

    def take(self, key: Hashable | None, ctx: GroupContext) -> tuple[pl.DataFrame,
                                                                    pl.DataFrame] | None:
        """The rows for `ctx.group` from an earlier group with the same key, or None."""
        if key is None:
            return None
        self._consume(key)
        found = self.kept.get(key)
        if found is None:
            return None
        if not self.wanted.get(key):
            del self.kept[key]
        return relabel(found, ctx.group)

    def keep(self, key: Hashable | None, group: Group, scored: GroupScore) -> None:
        if key is not None and self.wanted.get(key):
            self.kept[key] = Measured(group.group_id, tuple(t.target_id for t in group.targets),
                                      scored.progress, scored.achievements)

    def _consume(self, key: Hashable) -> None:
        if self.wanted.get(key):
            self.wanted[key] -= 1


def measure_key(ctx: GroupContext, has_enrolment_rows: bool) -> Hashable | None:
    """What a group's measured rows depend on, or None when it never shares (see module)."""
    g = ctx.group
    if (has_enrolment_rows or g.tracking_type not in SHAREABLE
            or g.evaluation_type is EvaluationType.PERIOD_AGNOSTIC):
        return None
    unified = g.tracking_type is TrackingType.UNIFIED
    blank = replace(
        g,
        group_id=0,
        name="",
        tracking_type=TrackingType.UNIFIED if unified else TrackingType.DEFAULT,
        targets=tuple(replace(t, target_id=0, name="", return_target_id=None)
                      for t in g.targets),
        # A registered group's periods carry its own database ids: identity, not measure.
        periods=tuple(replace(p, period_id=None, description=None) for p in g.periods),
        streak_levels=(),
        leaderboard_enabled=False,
        streak_continuous=True,
        streak_grace_windows=0,
        combination_type=g.combination_type if unified else "ALL",
        combination_count=g.combination_count if unified else 1,
    )
    return (blank, ctx.tz, ctx.config.returns_mode, ctx.config.track_from_enrolment, ctx.as_of)


def relabel(found: Measured, group: Group) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`found`'s rows with `group`'s id and its targets' ids (matched by position)."""
    ids = dict(zip(found.target_ids, (t.target_id for t in group.targets), strict=True))
    progress = found.progress.with_columns(
        pl.lit(group.group_id, dtype=pl.Int64).alias("group_id"),
        pl.col("target_id").replace_strict(ids, return_dtype=pl.Int64),
    )
    achievements = found.achievements.with_columns(
        pl.lit(group.group_id, dtype=pl.Int64).alias("group_id")
    )
    return progress, achievements
