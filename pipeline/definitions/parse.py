"""POST v3/targetGroups bodies -> typed `model.Group`, with every problem found at once (SPEC §2).

Validation never stops at the first problem: an analyst fixing a file wants the whole list, each
`{code, message}` naming its field path (`targets[0].targetType`). A body with any error gives no
group; warnings never block. Checks that need the database (310069, a name already registered)
belong to `pipeline.registry`; everything else is decided here, from the body and the org config.

Numbers are read exactly: `read_bodies` decodes JSON with `parse_float=Decimal`, so a
`defaultValue` of 0.1 stays 0.1 and the stored definition writes back what was given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.config import Config
from pipeline.definitions import model
from pipeline.definitions.model import (
    POINTS_TYPES,
    RETURNABLE_TYPES,
    EnrolmentMethod,
    EvaluationType,
    FrequencyType,
    TargetEntity,
    TargetType,
    TrackingType,
)
from pipeline.definitions.periods import MAX_WINDOWS, generate_periods, local_date
from pipeline.errors import InputError
from pipeline.rules.parse import RuleError, parse_rule

# Error codes of SPEC §2.2.
NAME_TOO_LONG = 310008
NAME_TAKEN = 310069
LEADERBOARD_NOT_SUPPORTED = 310132
LEADERBOARDS_DISABLED = 310133
BAD_ENTITY_TYPE_PAIR = 310033
EXTENDED_FIELD_NAME_MISSING = 310094
INVALID = 300004

# Warning codes: this project's own (the platform documents none); see docs/groups.md.
W_TOTAL_PERIODS = 390001
W_FEW_DEFAULT_VALUES = 390002
W_UNREACHABLE_LEVEL = 390003
W_UNKNOWN_FIELD = 390004
W_NAME_SPACES = 390005
W_IGNORED = 390006
W_EMPTY_FILTER = 390007

MAX_NAME = 200
MAX_LEVELS = 10
MAX_GRACE = 3
RETURN_EVENT = "ReturnBill"
TXN_EVENT = "TransactionAdd"

_TRACKING = {
    "DEFAULT": "DEFAULT",
    "UNIFIED": "UNIFIED",
    "STREAK": "STREAK",
    "STREAKS": "STREAK",
    "NON_CONTINUOUS_STREAK": "NON_CONTINUOUS_STREAK",
    "CAPPING": "CAPPING",
}
_EVALUATION = {e.value: e.value for e in EvaluationType}
_FREQUENCY = {f.value: f.value for f in FrequencyType}
_ENTITY = {e.value: e.value for e in TargetEntity} | {"POINTS": "REWARDS", "LINE_ITEM": "LINEITEM"}
_TYPE = {t.value: t.value for t in TargetType}
_ENROLMENT = {e.value: e.value for e in EnrolmentMethod}
_FILTER_ENTITY = {"STORE": "STORE", "ZONE": "ZONE", "CONCEPT": "CONCEPT"}
_AGGREGATE = {"SUM": "SUM", "COUNT": "COUNT"}
_WINDOW_TYPE = {"MIN": "MIN", "MAX": "MAX"}
_TIME_UNIT = {"DAY": "DAY"}
_COMBINATION = {"ALL": "ALL", "ANY": "ANY"}

# SPEC §6.1: the (targetEntity, targetType) pairs that have a measure.
_TXN_TYPES = frozenset(
    {
        TargetType.SALES,
        TargetType.GROSS_SALES,
        TargetType.QUANTITY,
        TargetType.COUNT,
        TargetType.VISIT,
        TargetType.EXTENDED_FIELD,
        TargetType.EVENT_ATTRIBUTE,
    }
)
VALID_PAIRS: dict[TargetEntity, frozenset[TargetType]] = {
    TargetEntity.TRANSACTION: _TXN_TYPES,
    TargetEntity.LINEITEM: _TXN_TYPES,
    TargetEntity.EVENT: frozenset({TargetType.COUNT, TargetType.VISIT, TargetType.EVENT_ATTRIBUTE}),
    TargetEntity.REWARDS: POINTS_TYPES,
}

_GROUP_FIELDS = frozenset({
    "name", "description", "active", "trackingType", "targetEvaluationType", "frequencyType",
    "frequency", "recurringCycles", "totalPeriods", "fromDate", "toDate", "targetCycleStartDate",
    "targetCycleEndDate", "timeZoneName", "preferredTillId", "userCreated", "leaderboardEnabled",
    "periods", "targets", "streaks", "combinationType", "combinationCount", "streakContinuous",
    "streakGraceWindows",
})
_PERIOD_FIELDS = frozenset(
    {"refCode", "startDate", "endDate", "periodStatus", "active", "description"}
)
_TARGET_FIELDS = frozenset({
    "name", "targetEntity", "targetType", "eventName", "expression", "expressionJson", "filters",
    "defaultValues", "extendedFieldInfo", "enrolmentMethod", "active", "description",
})
_FILTER_FIELDS = frozenset({"entityType", "entityIds"})
_VALUE_FIELDS = frozenset({"defaultValue"})
_EXTENDED_FIELDS = frozenset({"name", "aggregateFunction", "aggregateWindow"})
_WINDOW_FIELDS = frozenset({"windowType", "windowTimeUnit", "windowValue"})
_STREAK_FIELDS = frozenset({"name", "targetCountOfSequence"})

_FOUR_PLACES = Decimal("0.0001")
_MAX_VALUE = Decimal(10) ** 34  # DECIMAL(38, 4)


@dataclass(frozen=True)
class Problem:
    """One `{code, message}` of the response envelope; the message starts with the field path."""

    code: int
    path: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return {"code": self.code, "message": text}


@dataclass(frozen=True)
class TargetDef:
    """A target as given, active or not; `target` is what the engine reads.

    Inactive targets are kept (they are shown and stored) but never scored (SPEC §13).
    `leg_id` is the id of the derived `<name>_ReturnBill` leg, `value_ids` the ids of the
    effective default values (one per window for FIXED groups), both set at registration.
    """

    index: int
    target: model.Target
    active: bool
    description: str | None = None
    value_ids: tuple[int | None, ...] = ()
    leg_value_ids: tuple[int | None, ...] = ()

    @property
    def has_return_leg(self) -> bool:
        """SALES / GROSS_SALES / QUANTITY of TRANSACTION or LINEITEM carry returns (SPEC §2.3)."""
        t = self.target
        return (
            t.entity in (TargetEntity.TRANSACTION, TargetEntity.LINEITEM)
            and t.type in RETURNABLE_TYPES
        )

    @property
    def leg_name(self) -> str:
        return f"{self.target.name}_{RETURN_EVENT}"


@dataclass(frozen=True)
class ParsedGroup:
    """The outcome of validating one body: a group (None when there are errors) and its notes."""

    body: Any
    group: model.Group | None
    target_defs: tuple[TargetDef, ...] = ()
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    zone: str = "UTC"

    @property
    def ok(self) -> bool:
        return self.group is not None and not self.errors

    @property
    def name(self) -> str | None:
        """The trimmed name, also for a group with errors (for messages)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("name"), str):
            return self.body["name"].strip()
        return None

    def with_errors(self, extra: list[Problem]) -> ParsedGroup:
        """The same outcome with more errors (e.g. the registry's 310069); drops the group."""
        return replace(self, group=None, errors=(*self.errors, *extra))


def effective_values(group: model.Group, target: model.Target) -> tuple[Decimal, ...]:
    """The default values the envelope lists: one per period for FIXED groups (the last value
    repeating), else the values as given (one per cycle)."""
    if not target.default_values:
        return ()
    if group.evaluation_type is EvaluationType.FIXED:
        return tuple(
            target.default_value(k) or Decimal(0) for k in range(1, len(group.periods) + 1)
        )
    return target.default_values


# ---------------------------------------------------------------------------------------------
# Reading files


def read_bodies(path: Path) -> list[tuple[str, Any]]:
    """The group bodies in `path` (one JSON object, or a list of them) with a label for each:
    the path, or `path[i]` for the i-th element of a list.

    Raises:
        InputError: missing file, a directory, not UTF-8, malformed JSON (with line and column),
            or JSON that is neither an object nor a non-empty list.
    """
    if path.is_dir():
        raise InputError(
            f"{path} is a directory; give the group files inside it, e.g. {path}/*.json"
        )
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path (a group file is a .json file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8 JSON") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror})") from exc
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
            "fix the file and run the command again"
        ) from exc
    except ValueError as exc:
        raise InputError(f"{path}: {exc}; write numbers as plain JSON numbers") from exc
    if isinstance(data, dict):
        return [(str(path), data)]
    if isinstance(data, list) and data:
        return [(f"{path}[{i}]", body) for i, body in enumerate(data)]
    raise InputError(
        f"{path}: expected one group object or a non-empty list of group objects, "
        f"found {'an empty list' if isinstance(data, list) else type(data).__name__}"
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number this project accepts")


# ---------------------------------------------------------------------------------------------
# Validation


class _Checker:
    """Collects problems while reading typed values out of the body."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, path: str, message: str, code: int = INVALID) -> None:
        self.errors.append(Problem(code, path, message))

    def warn(self, path: str, message: str, code: int) -> None:
        self.warnings.append(Problem(code, path, message))

    def unknown_fields(self, obj: dict[str, Any], known: frozenset[str], path: str) -> None:
        for key in obj:
            if key not in known:
                where = f"{path}.{key}" if path else key
                self.warn(where, "unknown field; kept in the stored definition but not used",
                          W_UNKNOWN_FIELD)

    def object(self, value: Any, path: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"must be a JSON object, got {_show(value)}")
        return None

    def list(self, obj: dict[str, Any], key: str, path: str) -> list[Any]:
        value = obj.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.error(path, f"must be a list, got {_show(value)}")
        return []

    def text(
        self, obj: dict[str, Any], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.error(path, "is required")
            return None
        if isinstance(value, str):
            if required and not value.strip():
                self.error(path, "must not be empty")
                return None
            return value
        self.error(path, f"must be a string, got {_show(value)}")
        return None

    def flag(self, obj: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        self.error(path, f"must be true or false, got {_show(value)}")
        return default

    def integer(
        self,
        obj: dict[str, Any],
        key: str,
        path: str,
        *,
        minimum: int = 0,
        maximum: int | None = None,
    ) -> int | None:
        value = obj.get(key)
        if value is None:
            return None
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, Decimal) and value == value.to_integral_value():
            number = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value.strip())
        if number is None:
            self.error(path, f"must be a whole number, got {_show(value)}")
            return None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.error(path, f"must be {bound}, got {number}")
            return None
        return number

    def choice(
        self,
        obj: dict[str, Any],
        key: str,
        path: str,
        options: dict[str, str],
        *,
        required: bool = False,
    ) -> str | None:
        """An enum value, matched case-insensitively (`Half-yearly` = `HALF_YEARLY`)."""
        value = obj.get(key)
        if value is None:
            if required:
                self.error(path, f"is required; one of {', '.join(_shown(options))}")
            return None
        if isinstance(value, str):
            norm = value.strip().upper().replace("-", "_").replace(" ", "_")
            if norm in options:
                return options[norm]
        self.error(path, f"{_show(value)} is not one of {', '.join(_shown(options))}")
        return None

    def name(self, obj: dict[str, Any], path: str) -> str | None:
        """A required name: trimmed, at most 200 characters (310008), spaces warned about."""
        raw = self.text(obj, "name", path, required=True)
        if raw is None:
            return None
        name = raw.strip()
        if len(name) > MAX_NAME:
            self.error(path, f"is {len(name)} characters long; the limit is {MAX_NAME}",
                       NAME_TOO_LONG)
        if name != raw:
            self.warn(path, f"leading/trailing spaces removed: registered as {name!r}",
                      W_NAME_SPACES)
        return name

    def local_date(self, obj: dict[str, Any], key: str, path: str, zone: ZoneInfo) -> date | None:
        value = obj.get(key)
        if value is None:
            return None
        try:
            return local_date(value, zone)
        except ValueError as exc:
            self.error(path, str(exc))
            return None

    def decimal(self, value: Any, path: str) -> Decimal | None:
        number: Decimal | None = None
        if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            number = Decimal(value)
        elif isinstance(value, str):
            try:
                number = Decimal(value.strip())
            except InvalidOperation:
                number = None
        if number is None or not number.is_finite():
            self.error(path, f"must be a number, got {_show(value)}")
            return None
        if abs(number) >= _MAX_VALUE or number != number.quantize(_FOUR_PLACES):
            self.error(path, f"{value} has more than 4 decimal places or is too large")
            return None
        return number


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, Decimal)):
        return str(value)
    return f"a {'list' if isinstance(value, list) else 'object'}"


def _shown(options: dict[str, str]) -> list[str]:
    return sorted(set(options.values()))


def parse_group(body: Any, *, config: Config, org_checks: bool = True) -> ParsedGroup:
    """Validate one POST v3/targetGroups body against SPEC §2.2 and build its typed group.

    Args:
        body: the decoded JSON object (numbers as `int` / `Decimal`).
        config: the org settings: `org.timezone` for dates, `org.leaderboards_enabled`.
        org_checks: False when re-reading a registered definition, so that a later change of
            `org.leaderboards_enabled` does not make a registered group unreadable.

    Returns:
        A `ParsedGroup`; its `group` is None when any error was found. Ids are not assigned here
        (group_id 0, target_id 0, period_id None): `pipeline.registry` assigns them.
    """
    c = _Checker()
    obj = c.object(body, "")
    if obj is None:
        return ParsedGroup(body, None, errors=tuple(c.errors))
    c.unknown_fields(obj, _GROUP_FIELDS, "")

    name = c.name(obj, "name")
    c.text(obj, "description", "description")
    active = c.flag(obj, "active", "active", True)
    user_created = c.flag(obj, "userCreated", "userCreated", False)
    leaderboard = c.flag(obj, "leaderboardEnabled", "leaderboardEnabled", False)

    zone_name = c.text(obj, "timeZoneName", "timeZoneName")
    zone = _zone(c, zone_name, config)

    tracking = c.choice(obj, "trackingType", "trackingType", _TRACKING, required=True)
    continuous_given = obj.get("streakContinuous")
    continuous = c.flag(obj, "streakContinuous", "streakContinuous", True)
    if tracking == "NON_CONTINUOUS_STREAK":
        if continuous_given is True:
            c.error("streakContinuous", "is true but trackingType is NON_CONTINUOUS_STREAK; "
                    "drop one of them")
        tracking, continuous = "STREAK", False
    evaluation = EvaluationType(
        c.choice(obj, "targetEvaluationType", "targetEvaluationType", _EVALUATION)
        or EvaluationType.FIXED.value
    )
    freq_name = c.choice(obj, "frequencyType", "frequencyType", _FREQUENCY)
    frequency_type = FrequencyType(freq_name) if freq_name else None
    frequency = c.integer(obj, "frequency", "frequency") or 0
    recurring = c.integer(obj, "recurringCycles", "recurringCycles") or 0
    total_periods = c.integer(obj, "totalPeriods", "totalPeriods")

    dates = {
        key: c.local_date(obj, key, key, zone)
        for key in ("fromDate", "toDate", "targetCycleStartDate", "targetCycleEndDate")
    }
    for start_key, end_key in (
        ("fromDate", "toDate"),
        ("targetCycleStartDate", "targetCycleEndDate"),
    ):
        start, end = dates[start_key], dates[end_key]
        if start and end and end < start:
            c.error(end_key, f"{end} is before {start_key} {start}")

    periods = _periods(c, obj, evaluation, frequency_type, frequency, total_periods, dates, zone)
    windows = _window_count(c, evaluation, len(periods), recurring, total_periods)

    targets = _targets(c, obj, windows=windows, user_created=user_created)
    active_defs = [t for t in targets if t.active]
    levels = _streaks(c, obj, tracking, evaluation, windows)
    combination, combination_count = _combination(c, obj, tracking, len(active_defs))
    grace = _grace(c, obj, tracking, continuous)
    _group_rules(c, obj, tracking, evaluation, user_created, active_defs, leaderboard,
                 config if org_checks else None)

    if c.errors or name is None or tracking is None:
        return ParsedGroup(obj, None, tuple(targets), tuple(c.errors), tuple(c.warnings),
                           zone.key)

    start_date = dates["targetCycleStartDate"] or dates["fromDate"]
    end_date = dates["targetCycleEndDate"] or dates["toDate"]
    if evaluation is EvaluationType.FIXED and periods:
        start_date = start_date or periods[0].start
        end_date = end_date or periods[-1].end
    group = model.Group(
        group_id=0,
        name=name,
        tracking_type=TrackingType(tracking),
        evaluation_type=evaluation,
        targets=tuple(t.target for t in active_defs),
        periods=periods,
        frequency_type=frequency_type,
        frequency=frequency,
        recurring_cycles=recurring,
        total_periods=total_periods,
        time_zone=zone_name,
        start_date=start_date,
        end_date=end_date,
        streak_levels=levels,
        user_created=user_created,
        leaderboard_enabled=leaderboard,
        combination_type=combination,
        combination_count=combination_count,
        streak_continuous=continuous,
        streak_grace_windows=grace,
        active=active,
        definition=obj,
    )
    return ParsedGroup(obj, group, tuple(targets), (), tuple(c.warnings), zone.key)


def _zone(c: _Checker, zone_name: str | None, config: Config) -> ZoneInfo:
    if zone_name is not None:
        try:
            return ZoneInfo(zone_name.strip())
        except (ZoneInfoNotFoundError, ValueError):
            c.error("timeZoneName", f"{zone_name!r} is not an IANA time zone such as "
                    "'Europe/Paris'; leave it out to use org.timezone")
    return ZoneInfo(config.timezone)


def _periods(
    c: _Checker,
    obj: dict[str, Any],
    evaluation: EvaluationType,
    frequency_type: FrequencyType | None,
    frequency: int,
    total_periods: int | None,
    dates: dict[str, date | None],
    zone: ZoneInfo,
) -> tuple[model.Period, ...]:
    """FIXED windows: `periods[]` as given (checked for order and overlap), else generated."""
    raw = c.list(obj, "periods", "periods")
    if evaluation is not EvaluationType.FIXED:
        if raw:
            c.warn("periods", f"ignored: {evaluation.value} groups have per-customer cycles",
                   W_IGNORED)
        return ()
    if raw:
        if len(raw) > MAX_WINDOWS:
            c.error("periods", f"has {len(raw)} periods; at most {MAX_WINDOWS} are allowed")
        if total_periods is not None and total_periods != len(raw):
            c.warn("totalPeriods", f"is {total_periods} but {len(raw)} periods are given; "
                   "the periods given are used", W_TOTAL_PERIODS)
        return _given_periods(c, raw, zone)
    if frequency_type is None or frequency_type is FrequencyType.CUSTOM:
        why = "CUSTOM frequency needs" if frequency_type else "give frequencyType or"
        c.error("periods", f"{why} periods[]: without periods[] the windows are generated "
                "from frequencyType (DAILY ... YEARLY)")
        return ()
    first = dates["targetCycleStartDate"] or dates["fromDate"]
    if first is None:
        if "targetCycleStartDate" not in obj and "fromDate" not in obj:
            c.error("targetCycleStartDate", "is required to generate periods (or fromDate, "
                    "or give periods[])")
        return ()
    if not total_periods:
        c.error("totalPeriods", "must be at least 1 to generate periods (or give periods[])")
        return ()
    if total_periods > MAX_WINDOWS:
        c.error("totalPeriods", f"is {total_periods}; at most {MAX_WINDOWS} windows are allowed")
        return ()
    return generate_periods(first, frequency_type, frequency, total_periods)


def _given_periods(c: _Checker, raw: list[Any], zone: ZoneInfo) -> tuple[model.Period, ...]:
    periods: list[model.Period] = []
    refs: dict[str, int] = {}
    previous: model.Period | None = None
    for i, item in enumerate(raw):
        path = f"periods[{i}]"
        p = c.object(item, path)
        if p is None:
            continue
        c.unknown_fields(p, _PERIOD_FIELDS, path)
        c.flag(p, "active", f"{path}.active", True)
        description = c.text(p, "description", f"{path}.description")
        ref = p.get("refCode")
        ref_code: str | None = None
        if isinstance(ref, (str, int)) and not isinstance(ref, bool):
            ref_code = str(ref).strip() or None
        elif ref is not None:
            c.error(f"{path}.refCode", f"must be a string, got {_show(ref)}")
        if ref_code is not None:
            if ref_code.lower() in refs:
                c.error(f"{path}.refCode", f"{ref_code!r} is already used by "
                        f"periods[{refs[ref_code.lower()]}]; refCodes must be unique")
            refs.setdefault(ref_code.lower(), i)
        for key in ("startDate", "endDate"):
            if p.get(key) is None:
                c.error(f"{path}.{key}", "is required")
        start = c.local_date(p, "startDate", f"{path}.startDate", zone)
        end = c.local_date(p, "endDate", f"{path}.endDate", zone)
        if start is None or end is None:
            continue
        if end < start:
            c.error(f"{path}.endDate", f"{end} is before the period's startDate {start}")
            continue
        if previous is not None and start <= previous.end:
            how = "overlaps" if start >= previous.start else "comes before"
            c.error(f"{path}.startDate", f"period {start}..{end} {how} the previous period "
                    f"{previous.start}..{previous.end}; list periods in order without overlap")
        period = model.Period(index=i + 1, start=start, end=end, ref_code=ref_code,
                              description=description)
        periods.append(period)
        previous = period
    return tuple(periods)


def _window_count(
    c: _Checker,
    evaluation: EvaluationType,
    fixed_periods: int,
    recurring: int,
    total_periods: int | None,
) -> int | None:
    """How many windows a customer can have, None when unbounded by the definition."""
    if evaluation is EvaluationType.FIXED:
        return fixed_periods
    if recurring > MAX_WINDOWS:
        c.error("recurringCycles", f"is {recurring}; at most {MAX_WINDOWS} cycles are allowed")
        return None
    if evaluation is EvaluationType.PERIOD_AGNOSTIC:
        return recurring or None
    if not recurring and total_periods and total_periods > MAX_WINDOWS:
        c.error("totalPeriods", f"is {total_periods}; at most {MAX_WINDOWS} cycles are allowed")
        return None
    return recurring or total_periods or 1


def _targets(
    c: _Checker, obj: dict[str, Any], *, windows: int | None, user_created: bool
) -> list[TargetDef]:
    raw = obj.get("targets")
    if raw is None or raw == []:
        c.error("targets", "is required: give at least one target")
        return []
    items = c.list(obj, "targets", "targets")
    defs: list[TargetDef] = []
    names: dict[str, str] = {}
    for i, item in enumerate(items):
        d = _target(c, item, f"targets[{i}]", i, windows=windows, user_created=user_created)
        if d is None:
            continue
        for name in (d.target.name, d.leg_name) if d.has_return_leg else (d.target.name,):
            key = name.lower()
            if key in names:
                c.error(f"targets[{i}].name", f"{name!r} clashes with {names[key]}; target "
                        "names must be unique (case-insensitive, including _ReturnBill legs)")
            names.setdefault(key, f"the target named {name!r} of targets[{i}]")
        defs.append(d)
    return defs


def _target(
    c: _Checker, item: Any, path: str, index: int, *, windows: int | None, user_created: bool
) -> TargetDef | None:
    t = c.object(item, path)
    if t is None:
        return None
    c.unknown_fields(t, _TARGET_FIELDS, path)
    errors_before = len(c.errors)
    name = c.name(t, f"{path}.name")
    description = c.text(t, "description", f"{path}.description")
    active = c.flag(t, "active", f"{path}.active", True)
    entity_name = c.choice(t, "targetEntity", f"{path}.targetEntity", _ENTITY, required=True)
    type_name = c.choice(t, "targetType", f"{path}.targetType", _TYPE, required=True)
    entity = TargetEntity(entity_name) if entity_name else None
    ttype = TargetType(type_name) if type_name else None
    if entity and ttype and ttype not in VALID_PAIRS[entity]:
        allowed = ", ".join(sorted(v.value for v in VALID_PAIRS[entity]))
        c.error(f"{path}.targetType", f"{ttype.value} cannot be measured on {entity.value} "
                f"records; use one of {allowed}", BAD_ENTITY_TYPE_PAIR)

    event_name = c.text(t, "eventName", f"{path}.eventName")
    event_name = event_name.strip() if event_name else None
    if entity is TargetEntity.EVENT and not event_name:
        c.error(f"{path}.eventName", "is required for EVENT targets (e.g. 'TransactionAdd')")
    elif entity in (TargetEntity.TRANSACTION, TargetEntity.LINEITEM):
        if event_name and event_name.lower() != TXN_EVENT.lower():
            c.error(f"{path}.eventName", f"{event_name!r} on a {entity.value} target: leave it "
                    f"out or use {TXN_EVENT!r} (returns get their own {RETURN_EVENT} leg)")
        event_name = TXN_EVENT

    extended = _extended_field(c, t, f"{path}.extendedFieldInfo", ttype)
    filters = _filters(c, t, f"{path}.filters")
    values = _default_values(c, t, f"{path}.defaultValues", windows=windows,
                             user_created=user_created)
    method = c.choice(t, "enrolmentMethod", f"{path}.enrolmentMethod", _ENROLMENT)
    rule, expression = _rule(c, t, path)

    if len(c.errors) > errors_before or not (name and entity and ttype):
        return None
    target = model.Target(
        target_id=0,
        name=name,
        entity=entity,
        type=ttype,
        rule=rule,
        expression=expression,
        event_name=event_name,
        filters=filters,
        default_values=values,
        extended_field=extended,
        enrolment_method=EnrolmentMethod(method or EnrolmentMethod.IMPORT.value),
    )
    return TargetDef(index=index, target=target, active=active, description=description)


def _rule(c: _Checker, t: dict[str, Any], path: str) -> tuple[Any, str | None]:
    """The target's rule tree; `expressionJson` wins when both forms are given (SPEC §4)."""
    expression = t.get("expression")
    expression_json = t.get("expressionJson")
    text: str | None = None
    if isinstance(expression, bool):
        # The platform's flag form: `true` and `false` both mean "every record" (SPEC §4).
        text = "true" if expression else None
    elif isinstance(expression, str):
        text = expression
    elif expression is not None:
        c.error(f"{path}.expression", f"must be a string, got {_show(expression)}")
        return None, None
    if expression_json is not None and not isinstance(expression_json, (str, dict)):
        c.error(f"{path}.expressionJson", f"must be a JSON string or object, got "
                f"{_show(expression_json)}")
        return None, text
    where = f"{path}.expressionJson" if expression_json not in (None, "") else f"{path}.expression"
    try:
        return parse_rule(expression, expression_json), text
    except RuleError as exc:
        c.error(where, exc.message)
        return None, text


def _extended_field(
    c: _Checker, t: dict[str, Any], path: str, ttype: TargetType | None
) -> model.ExtendedField | None:
    raw = t.get("extendedFieldInfo")
    needs = ttype in (TargetType.EXTENDED_FIELD, TargetType.EVENT_ATTRIBUTE)
    info = c.object(raw, path) if raw is not None else None
    name = None
    if info is not None:
        c.unknown_fields(info, _EXTENDED_FIELDS, path)
        value = info.get("name")
        if isinstance(value, str) and value.strip():
            name = value.strip()
        elif value is not None and not isinstance(value, str):
            c.error(f"{path}.name", f"must be a string, got {_show(value)}")
    if needs and name is None:
        c.error(f"{path}.name", f"is required for {ttype.value if ttype else ''} targets: the "
                "column or attribute to aggregate", EXTENDED_FIELD_NAME_MISSING)
    if info is None or name is None or not needs:
        return None
    function = c.choice(info, "aggregateFunction", f"{path}.aggregateFunction", _AGGREGATE)
    window = None
    raw_window = info.get("aggregateWindow")
    if raw_window is not None:
        wpath = f"{path}.aggregateWindow"
        w = c.object(raw_window, wpath)
        if w is not None:
            c.unknown_fields(w, _WINDOW_FIELDS, wpath)
            wtype = c.choice(w, "windowType", f"{wpath}.windowType", _WINDOW_TYPE, required=True)
            c.choice(w, "windowTimeUnit", f"{wpath}.windowTimeUnit", _TIME_UNIT)
            days = c.integer(w, "windowValue", f"{wpath}.windowValue", minimum=1)
            if wtype:
                window = model.AggregateWindow(window_type=wtype, days=days or 1)
    return model.ExtendedField(name=name, aggregate_function=function or "SUM",
                               aggregate_window=window)


def _filters(c: _Checker, t: dict[str, Any], path: str) -> tuple[model.StoreFilter, ...]:
    filters = []
    for i, item in enumerate(c.list(t, "filters", path)):
        fpath = f"{path}[{i}]"
        f = c.object(item, fpath)
        if f is None:
            continue
        c.unknown_fields(f, _FILTER_FIELDS, fpath)
        kind = c.choice(f, "entityType", f"{fpath}.entityType", _FILTER_ENTITY, required=True)
        if f.get("entityIds") is None:
            c.error(f"{fpath}.entityIds", "is required: the store, zone or concept ids")
            continue
        ids: list[str] = []
        for j, value in enumerate(c.list(f, "entityIds", f"{fpath}.entityIds")):
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                c.error(f"{fpath}.entityIds[{j}]", f"must be an id, got {_show(value)}")
            else:
                ids.append(str(value).strip())
        if isinstance(f.get("entityIds"), list) and not f["entityIds"]:
            c.warn(f"{fpath}.entityIds", "is empty: this filter passes no record, so the "
                   "target can never count anything", W_EMPTY_FILTER)
        if kind:
            filters.append(model.StoreFilter(entity_type=kind, ids=tuple(ids)))
    return tuple(filters)


def _default_values(
    c: _Checker, t: dict[str, Any], path: str, *, windows: int | None, user_created: bool
) -> tuple[Decimal, ...]:
    values = []
    raw = c.list(t, "defaultValues", path)
    for i, item in enumerate(raw):
        vpath = f"{path}[{i}]"
        v = c.object(item, vpath)
        if v is None:
            continue
        c.unknown_fields(v, _VALUE_FIELDS, vpath)
        if v.get("defaultValue") is None:
            c.error(f"{vpath}.defaultValue", "is required")
            continue
        number = c.decimal(v["defaultValue"], f"{vpath}.defaultValue")
        if number is not None:
            values.append(number)
    if user_created or windows is None:
        return tuple(values)
    given = len(raw)
    if given < windows:
        if given:
            c.warn(path, f"has {given} value(s) for {windows} windows; the last value "
                   "repeats", W_FEW_DEFAULT_VALUES)
        else:
            c.warn(path, f"is empty for {windows} windows: only customers with a target_value "
                   "in enrolments can achieve this target", W_FEW_DEFAULT_VALUES)
    elif given > windows:
        c.warn(path, f"has {given} values for {windows} windows; the last {given - windows} "
               "are never used", W_IGNORED)
    return tuple(values)


def _streaks(
    c: _Checker,
    obj: dict[str, Any],
    tracking: str | None,
    evaluation: EvaluationType,
    windows: int | None,
) -> tuple[model.StreakLevel, ...]:
    """Streak levels, sorted by count: given in any order, but counts must be distinct."""
    raw = c.list(obj, "streaks", "streaks")
    if tracking != "STREAK":
        if evaluation is EvaluationType.PERIOD_AGNOSTIC and raw:
            c.error("streaks", "streaks need FIXED_CALENDAR_WINDOW or CYCLIC_WINDOW, not "
                    "PERIOD_AGNOSTIC_WINDOW")
        elif raw:
            c.warn("streaks", f"ignored: trackingType is {tracking}, not STREAK", W_IGNORED)
        return ()
    if evaluation is EvaluationType.PERIOD_AGNOSTIC:
        c.error("targetEvaluationType", "STREAK groups need FIXED_CALENDAR_WINDOW or "
                "CYCLIC_WINDOW, not PERIOD_AGNOSTIC_WINDOW")
    if not raw:
        c.error("streaks", "is required for STREAK groups: give 1 to 10 levels "
                "{name, targetCountOfSequence}")
        return ()
    if len(raw) > MAX_LEVELS:
        c.error("streaks", f"has {len(raw)} levels; at most {MAX_LEVELS} are allowed")
    levels: list[model.StreakLevel] = []
    counts: dict[int, int] = {}
    names: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"streaks[{i}]"
        s = c.object(item, path)
        if s is None:
            continue
        c.unknown_fields(s, _STREAK_FIELDS, path)
        name = c.name(s, f"{path}.name")
        if s.get("targetCountOfSequence") is None:
            c.error(f"{path}.targetCountOfSequence", "is required: the run length of this level")
            continue
        count = c.integer(s, "targetCountOfSequence", f"{path}.targetCountOfSequence", minimum=1)
        if count is None or name is None:
            continue
        if count in counts:
            c.error(f"{path}.targetCountOfSequence", f"{count} is already the count of "
                    f"streaks[{counts[count]}]; levels must have strictly ascending counts")
        if name.lower() in names:
            c.error(f"{path}.name",
                    f"{name!r} is already the name of streaks[{names[name.lower()]}]")
        counts.setdefault(count, i)
        names.setdefault(name.lower(), i)
        if windows is not None and count > windows:
            c.warn(f"{path}.targetCountOfSequence", f"{count} is more than the {windows} windows "
                   "of the group: this level can never be reached", W_UNREACHABLE_LEVEL)
        levels.append(model.StreakLevel(streak_id=0, name=name, count=count))
    return tuple(sorted(levels, key=lambda level: level.count))


def _combination(
    c: _Checker, obj: dict[str, Any], tracking: str | None, active_targets: int
) -> tuple[str, int]:
    kind = c.choice(obj, "combinationType", "combinationType", _COMBINATION) or "ALL"
    count = c.integer(obj, "combinationCount", "combinationCount", minimum=1)
    if kind == "ANY" and tracking != "UNIFIED":
        c.error("combinationType", f"ANY applies to UNIFIED groups only, not {tracking}")
    if kind == "ANY" and count is not None and active_targets and count > active_targets:
        c.error("combinationCount", f"is {count} but the group has {active_targets} active "
                "targets")
    return kind, count or 1


def _grace(c: _Checker, obj: dict[str, Any], tracking: str | None, continuous: bool) -> int:
    grace = c.integer(obj, "streakGraceWindows", "streakGraceWindows", maximum=MAX_GRACE) or 0
    if grace and (tracking != "STREAK" or not continuous):
        c.error("streakGraceWindows", "applies to continuous STREAK groups only")
    return grace


def _group_rules(
    c: _Checker,
    obj: dict[str, Any],
    tracking: str | None,
    evaluation: EvaluationType,
    user_created: bool,
    active: list[TargetDef],
    leaderboard: bool,
    config: Config | None,
) -> None:
    """Rules that look at the group as a whole (target counts, leaderboards)."""
    n = len(active)
    if obj.get("targets") and not n and not c.errors:
        c.error("targets", "has no active target; activate at least one")
    if tracking == "DEFAULT" and n > 1:
        c.error("targets", f"a DEFAULT group has exactly 1 active target, this one has {n}; "
                "use trackingType UNIFIED to combine targets")
    if tracking == "UNIFIED" and n < 2:
        c.error("targets", f"a UNIFIED group needs at least 2 active targets, this one has {n}; "
                "use trackingType DEFAULT for one target")
    if tracking == "CAPPING":
        for d in active:
            if d.target.type not in POINTS_TYPES:
                c.error(f"targets[{d.index}].targetType", f"a CAPPING group caps points: use "
                        f"targetEntity REWARDS with a points type, not {d.target.type.value}")
    if evaluation is EvaluationType.PERIOD_AGNOSTIC and n > 1:
        c.error("targets", f"only single-target PERIOD_AGNOSTIC_WINDOW groups are supported, "
                f"this one has {n} active targets")
    if user_created and n > 1:
        c.error("targets", f"a userCreated group has one target (the customer's goal), this "
                f"one has {n}")
    if leaderboard:
        if evaluation is not EvaluationType.FIXED:
            c.error("targetEvaluationType", f"leaderboards need FIXED_CALENDAR_WINDOW, not "
                    f"{evaluation.value}", LEADERBOARD_NOT_SUPPORTED)
        if tracking is not None and tracking != "DEFAULT":
            c.error("trackingType", f"leaderboards need trackingType DEFAULT, not {tracking}",
                    LEADERBOARD_NOT_SUPPORTED)
        if config is not None and not config.leaderboards_enabled:
            c.error("leaderboardEnabled", "leaderboards are not enabled for the org; set "
                    "org.leaderboards_enabled = true in milestones.toml", LEADERBOARDS_DISABLED)


__all__ = [
    "VALID_PAIRS",
    "ParsedGroup",
    "Problem",
    "TargetDef",
    "effective_values",
    "parse_group",
    "read_bodies",
]
