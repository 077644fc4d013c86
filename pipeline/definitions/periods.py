"""Dates of a group: bounds as local dates, generated FIXED periods, and window statuses (SPEC §5).

Kept free of I/O so that validation, the registry, the envelope and the scoring engine all agree
on the same dates. The one subtle rule: month steps are counted from the *first* start and clamped
to the month's last day, so a programme starting on 31 Jan keeps coming back to the 31st whenever
the month has one (31 Jan, 29 Feb, 31 Mar, 30 Apr, ...).
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from pipeline.definitions.model import FREQUENCY_UNIT, FrequencyType, Period

MAX_WINDOWS = 100

# ISO 8601 as the platform writes it: a date, optionally a time, optionally an offset or Z.
# Narrower than `datetime.fromisoformat`, which also takes '20240820' and week dates.
_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)


class WindowStatus(Enum):
    """Where a window stands as of a date D (SPEC §5)."""

    NOT_STARTED = "NOT_STARTED"
    """start > D."""
    RUNNING = "RUNNING"
    """start <= D < end."""
    ENDED = "ENDED"
    """end <= D: a window whose last day is D has ended (SPEC §13)."""


def parse_timestamp(value: object) -> datetime:
    """An ISO date or date-time string -> `datetime` (aware when it carried an offset).

    Raises:
        ValueError: not a string, or not ISO 8601 (`YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM]`).
    """
    if not isinstance(value, str) or not _ISO.match(value.strip()):
        raise ValueError(
            f"{value!r} is not an ISO 8601 date such as '2026-01-31' or '2026-01-31T00:00:00Z'"
        )
    text = value.strip()
    if len(text) > 10 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]  # '+0530' -> '+05:30' for fromisoformat
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:  # e.g. 2026-02-30
        raise ValueError(f"{value!r} is not a valid date: {exc}") from None


def local_date(value: object, zone: ZoneInfo) -> date:
    """The local date of a bound in `zone` (SPEC §5).

    An offset (`Z`, `+05:30`) is converted to the zone before the date is taken; a bound without
    one is taken as written:

    >>> local_date("2024-10-08T23:30:00Z", ZoneInfo("Asia/Kolkata"))
    datetime.date(2024, 10, 9)
    >>> local_date("2024-10-08T23:30:00", ZoneInfo("Asia/Kolkata"))
    datetime.date(2024, 10, 8)
    """
    ts = parse_timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.astimezone(zone)
    return ts.date()


def add_months(start: date, months: int) -> date:
    """`start` plus `months`, clamped to the target month's last day (31 Jan + 1 -> 29 Feb 2024)."""
    total = start.year * 12 + (start.month - 1) + months
    year, month = divmod(total, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(start.day, last))


def window_start(first: date, k: int, days: int, months: int) -> date:
    """Start of window k (1-based) of length (`days`, `months`), counted from the first start."""
    if months:
        return add_months(first, (k - 1) * months)
    return first + timedelta(days=(k - 1) * days)


def generate_periods(
    first: date, frequency_type: FrequencyType, frequency: int, total: int
) -> tuple[Period, ...]:
    """`total` back-to-back periods of `max(frequency, 1)` units of `frequency_type` from `first`.

    Period k ends the day before period k+1 starts, so month clamping never leaves a gap:

    >>> [(p.start.isoformat(), p.end.isoformat())
    ...  for p in generate_periods(date(2024, 1, 31), FrequencyType.MONTHLY, 1, 3)]
    [('2024-01-31', '2024-02-28'), ('2024-02-29', '2024-03-30'), ('2024-03-31', '2024-04-29')]
    """
    unit_days, unit_months = FREQUENCY_UNIT[frequency_type]
    n = max(frequency, 1)
    days, months = unit_days * n, unit_months * n
    return tuple(
        Period(
            index=k,
            start=window_start(first, k, days, months),
            end=window_start(first, k + 1, days, months) - timedelta(days=1),
        )
        for k in range(1, total + 1)
    )


def window_status(start: date, end: date | None, as_of: date) -> WindowStatus:
    """NOT_STARTED / RUNNING / ENDED of a window as of `as_of`; an open window (`end` None) runs."""
    if start > as_of:
        return WindowStatus.NOT_STARTED
    if end is not None and end <= as_of:
        return WindowStatus.ENDED
    return WindowStatus.RUNNING


def today_in(zone: ZoneInfo) -> date:
    """Today's date in `zone`: the default as-of date of `groups create|show`."""
    return datetime.now(zone).date()
