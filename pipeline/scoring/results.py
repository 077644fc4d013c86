"""What scoring produces: the column lists of the measured tables and the result containers.

Kept apart from `engine` so that the modules `engine` calls (group kinds, PERIOD_AGNOSTIC,
sharing, explain) can name them without importing `engine` back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

TARGET_PROGRESS = [
    "group_id",
    "target_id",
    "customer_id",
    "period_index",
    "ref_code",
    "window_start",
    "window_end",
    "status",
    "value",
    "target_value",
    "achieved",
    "achieved_at",
    "last_activity_at",
]
PERIOD_ACHIEVEMENTS = [
    "group_id",
    "customer_id",
    "period_index",
    "ref_code",
    "window_start",
    "window_end",
    "status",
    "achieved",
    "achieved_at",
    "targets_achieved",
    "targets_total",
]
TABLES = (
    "target_progress",
    "period_achievements",
    "streak_runs",
    "streak_progress",
    "capping",
    "capping_adjustments",
    "leaderboard",
)


@dataclass
class ScoreResult:
    """Everything one scoring pass produced; nothing is written anywhere yet."""

    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    rewards: pl.DataFrame = field(default_factory=pl.DataFrame)
    failures: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


@dataclass
class GroupScore:
    progress: pl.DataFrame
    achievements: pl.DataFrame
    extra: dict[str, pl.DataFrame] = field(default_factory=dict)
    rewards: list[pl.DataFrame] = field(default_factory=list)
