"""Typed, validated group definitions: what the scoring engine reads.

`pipeline.definitions.parse` turns a POST v3/targetGroups body into these; the engine never looks
at the raw JSON again. Everything here is immutable and pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Any


class TrackingType(Enum):
    """What a group tracks (SPEC §8)."""

    DEFAULT = "DEFAULT"
    """One target; a window is achieved when the target is."""
    UNIFIED = "UNIFIED"
    """Several targets combined with ALL or ANY n."""
    STREAK = "STREAK"
    """Runs of consecutive achieved windows checked against levels."""
    CAPPING = "CAPPING"
    """Points per window held to a cap; no rewards."""


class EvaluationType(Enum):
    """How windows are laid out (SPEC §5)."""

    FIXED = "FIXED_CALENDAR_WINDOW"
    """The same calendar periods for every customer."""
    CYCLIC = "CYCLIC_WINDOW"
    """Per customer, from their first qualifying record."""
    PERIOD_AGNOSTIC = "PERIOD_AGNOSTIC_WINDOW"
    """Per customer, a cycle closes at the record that reaches the target."""


class FrequencyType(Enum):
    """Window length unit; `months` = 0 means a length in days."""

    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    QUARTERLY = "QUARTERLY"
    HALF_YEARLY = "HALF_YEARLY"
    YEARLY = "YEARLY"
    CUSTOM = "CUSTOM"


# (days, months) of one unit of each frequency type.
FREQUENCY_UNIT: dict[FrequencyType, tuple[int, int]] = {
    FrequencyType.DAILY: (1, 0),
    FrequencyType.WEEKLY: (7, 0),
    FrequencyType.MONTHLY: (0, 1),
    FrequencyType.QUARTERLY: (0, 3),
    FrequencyType.HALF_YEARLY: (0, 6),
    FrequencyType.YEARLY: (0, 12),
}


class TargetEntity(Enum):
    """Which records a target measures (SPEC §6.1 rows)."""

    TRANSACTION = "TRANSACTION"
    LINEITEM = "LINEITEM"
    EVENT = "EVENT"
    REWARDS = "REWARDS"


class TargetType(Enum):
    """What is measured from the records (SPEC §6.1 columns)."""

    SALES = "SALES"
    GROSS_SALES = "GROSS_SALES"
    QUANTITY = "QUANTITY"
    COUNT = "COUNT"
    VISIT = "VISIT"
    EXTENDED_FIELD = "EXTENDED_FIELD"
    EVENT_ATTRIBUTE = "EVENT_ATTRIBUTE"
    REGULAR_POINTS = "REGULAR_POINTS"
    PROMOTIONAL_POINTS = "PROMOTIONAL_POINTS"
    ALL_POINTS = "ALL_POINTS"


POINTS_TYPES = frozenset(
    {TargetType.REGULAR_POINTS, TargetType.PROMOTIONAL_POINTS, TargetType.ALL_POINTS}
)
RETURNABLE_TYPES = frozenset({TargetType.SALES, TargetType.GROSS_SALES, TargetType.QUANTITY})


class EnrolmentMethod(Enum):
    TRANSACTION = "TRANSACTION"
    IMPORT = "IMPORT"


@dataclass(frozen=True)
class Period:
    """One fixed calendar window; `index` is 1-based, dates are local and inclusive."""

    index: int
    start: date
    end: date
    ref_code: str | None = None  # None for generated periods
    period_id: int | None = None
    description: str | None = None

    @property
    def key(self) -> str:
        """The window key of SPEC §13: refCode, else the period number as text."""
        return self.ref_code if self.ref_code is not None else str(self.index)


@dataclass(frozen=True)
class StoreFilter:
    """`filters[]` entry: the record's store must have its STORE/ZONE/CONCEPT id in `ids`."""

    entity_type: str  # "STORE" | "ZONE" | "CONCEPT"
    ids: tuple[str, ...]  # ids compared as text


@dataclass(frozen=True)
class AggregateWindow:
    """`extendedFieldInfo.aggregateWindow`: MIN or MAX per block of `days` days."""

    window_type: str  # "MIN" | "MAX"
    days: int


@dataclass(frozen=True)
class ExtendedField:
    name: str
    aggregate_function: str = "SUM"  # "SUM" | "COUNT"
    aggregate_window: AggregateWindow | None = None


@dataclass(frozen=True)
class Target:
    """An active user target. Its `_ReturnBill` leg is not a separate Target: the engine folds
    returns into this one (SPEC §11); `return_target_id` is the derived leg's id."""

    target_id: int
    name: str
    entity: TargetEntity
    type: TargetType
    rule: Any  # pipeline.rules.tree.Node; `Literal(True)` when there is no expression
    expression: str | None = None  # the text form as given, for display
    event_name: str | None = None
    filters: tuple[StoreFilter, ...] = ()
    default_values: tuple[Decimal, ...] = ()
    extended_field: ExtendedField | None = None
    enrolment_method: EnrolmentMethod = EnrolmentMethod.IMPORT
    return_target_id: int | None = None

    def default_value(self, index: int) -> Decimal | None:
        """`defaultValues[k-1]`, the last one when there are fewer (SPEC §5)."""
        if not self.default_values:
            return None
        return self.default_values[min(index, len(self.default_values)) - 1]


@dataclass(frozen=True)
class StreakLevel:
    streak_id: int
    name: str
    count: int  # targetCountOfSequence


@dataclass(frozen=True)
class Group:
    """A registered, validated target group with its resolved defaults."""

    group_id: int
    name: str
    tracking_type: TrackingType
    evaluation_type: EvaluationType
    targets: tuple[Target, ...]  # active user targets only, in definition order
    periods: tuple[Period, ...] = ()  # FIXED: given or generated; else empty
    frequency_type: FrequencyType | None = None
    frequency: int = 0
    recurring_cycles: int = 0
    total_periods: int | None = None
    time_zone: str | None = None  # None: org.timezone applies
    start_date: date | None = None  # targetCycleStartDate, else fromDate (local date)
    end_date: date | None = None  # targetCycleEndDate, else toDate, else last period end
    streak_levels: tuple[StreakLevel, ...] = ()  # sorted by count
    user_created: bool = False
    leaderboard_enabled: bool = False
    combination_type: str = "ALL"  # "ALL" | "ANY"
    combination_count: int = 1
    streak_continuous: bool = True
    streak_grace_windows: int = 0
    active: bool = True
    definition: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def enrolment_method(self) -> EnrolmentMethod:
        """IMPORT when userCreated or any active target is IMPORT, else TRANSACTION (§13)."""
        if self.user_created or any(
            t.enrolment_method is EnrolmentMethod.IMPORT for t in self.targets
        ):
            return EnrolmentMethod.IMPORT
        return EnrolmentMethod.TRANSACTION

    @property
    def window_length(self) -> tuple[int, int]:
        """(days, months) of one window: `max(frequency, 1)` units of `frequencyType`."""
        days, months = FREQUENCY_UNIT.get(self.frequency_type or FrequencyType.MONTHLY, (0, 1))
        n = max(self.frequency, 1)
        return days * n, months * n

    @property
    def max_cycles(self) -> int:
        """CYCLIC: recurringCycles if > 0, else totalPeriods, else 1 (at most 100).
        PERIOD_AGNOSTIC: recurringCycles if > 0, else 100."""
        if self.evaluation_type is EvaluationType.PERIOD_AGNOSTIC:
            return min(self.recurring_cycles, 100) if self.recurring_cycles > 0 else 100
        n = self.recurring_cycles if self.recurring_cycles > 0 else (self.total_periods or 1)
        return max(1, min(n, 100))
