"""The response envelope of `groups create|validate|show` (SPEC §2.3), in the seed responses' shape.

`{"data": ..., "errors": [...] | null, "warnings": [...] | null}`: `data` is the group as the
platform answers it (ids, date-only period bounds, computed `periodStatus`, per-target
`defaultValues` with `periodId` and `targetPeriodDefaultValuesMap`, the derived `_ReturnBill`
legs). Enum fields are written in their canonical form (`STREAKS` -> `STREAK`) so that scripts can
compare them; the stored definition keeps the spelling that was given.

Numbers are `Decimal`, never floats, so `to_json` is a small writer of its own: the standard
encoder can only write a `Decimal` as a string or through a float.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.definitions import model
from pipeline.definitions.model import EvaluationType, TrackingType
from pipeline.definitions.parse import RETURN_EVENT, ParsedGroup, TargetDef, effective_values
from pipeline.definitions.periods import local_date, window_status


def envelope(parsed: ParsedGroup, *, as_of: date) -> dict[str, Any]:
    """The envelope for one body; `data` is null when the body had errors."""
    data = group_data(parsed, as_of=as_of) if parsed.ok else None
    return {
        "data": data,
        "errors": [p.as_dict() for p in parsed.errors] or None,
        "warnings": [p.as_dict() for p in parsed.warnings] or None,
    }


def group_data(parsed: ParsedGroup, *, as_of: date) -> dict[str, Any]:
    """`data` of the envelope; ids are null until the group is registered."""
    group = parsed.group
    if group is None:
        raise ValueError("group_data needs a valid group")
    body: dict[str, Any] = parsed.body
    zone = ZoneInfo(parsed.zone)
    gid = group.group_id or None
    data: dict[str, Any] = {"id": gid, "name": group.name}
    if body.get("description") is not None:
        data["description"] = body["description"]
    for key in ("fromDate", "toDate"):
        if body.get(key) is not None:
            data[key] = _date_of(body[key], zone)
    data["active"] = group.active
    if body.get("preferredTillId") is not None:
        data["preferredTillId"] = body["preferredTillId"]
    data["periods"] = [_period(p, gid, body, as_of) for p in group.periods]
    if group.tracking_type is TrackingType.STREAK:
        data["streaks"] = [
            {
                "id": level.streak_id or None,
                "targetGroupId": gid,
                "name": level.name,
                "targetCountOfSequence": level.count,
            }
            for level in group.streak_levels
        ]
    data["totalPeriods"] = group.total_periods
    data["targetEvaluationType"] = group.evaluation_type.value
    data["recurringCycles"] = group.recurring_cycles
    data["frequency"] = group.frequency
    data["targetCycleStartDate"] = _cycle_bound(body, "targetCycleStartDate", group.start_date,
                                                time(0, 0), zone)
    data["targetCycleEndDate"] = _cycle_bound(body, "targetCycleEndDate", group.end_date,
                                              time(23, 59, 59), zone)
    data["frequencyType"] = group.frequency_type.value if group.frequency_type else None
    data["trackingType"] = group.tracking_type.value
    data["timeZoneName"] = parsed.zone
    data["combinationType"] = group.combination_type
    data["combinationCount"] = group.combination_count
    if group.tracking_type is TrackingType.STREAK:
        data["streakContinuous"] = group.streak_continuous
        data["streakGraceWindows"] = group.streak_grace_windows
    data["enrolmentMethod"] = group.enrolment_method.value
    targets: list[dict[str, Any]] = []
    raw_targets = body.get("targets") or []
    for d in parsed.target_defs:
        raw = raw_targets[d.index]
        targets.append(_target(d, raw, group, gid, leg=False))
        if d.has_return_leg:
            targets.append(_target(d, raw, group, gid, leg=True))
    data["targets"] = targets
    data["leaderboardEnabled"] = group.leaderboard_enabled
    data["userCreated"] = group.user_created
    return data


def _period(p: model.Period, gid: int | None, body: dict[str, Any], as_of: date) -> dict[str, Any]:
    given = body.get("periods") or []
    raw = given[p.index - 1] if p.index <= len(given) else {}
    out: dict[str, Any] = {
        "id": p.period_id,
        "startDate": p.start.isoformat(),
        "endDate": p.end.isoformat(),
        "refCode": p.ref_code,
        "periodStatus": window_status(p.start, p.end, as_of).value,
        "targetGroupId": gid,
    }
    if p.description is not None:
        out["description"] = p.description
    out["active"] = raw.get("active", True) if isinstance(raw, dict) else True
    return out


def _target(
    d: TargetDef, raw: dict[str, Any], group: model.Group, gid: int | None, *, leg: bool
) -> dict[str, Any]:
    t = d.target
    out: dict[str, Any] = {
        "id": (t.return_target_id if leg else t.target_id) or None,
        "name": d.leg_name if leg else t.name,
        "targetType": t.type.value,
        "targetEntity": t.entity.value,
        "eventName": RETURN_EVENT if leg else t.event_name,
        "targetGroupId": gid,
    }
    if d.description is not None:
        out["description"] = d.description
    out["active"] = d.active
    out["expression"] = t.expression
    expression_json = raw.get("expressionJson")
    if isinstance(expression_json, dict):
        expression_json = to_json(expression_json, indent=None)
    out["expressionJson"] = expression_json
    out["filters"] = [
        {"entityType": f.entity_type, "entityIds": list(raw_f.get("entityIds") or [])}
        for f, raw_f in zip(t.filters, raw.get("filters") or [], strict=False)
    ]
    out["enrolmentMethod"] = t.enrolment_method.value
    ids = d.leg_value_ids if leg else d.value_ids
    values = []
    for k, value in enumerate(effective_values(group, t)):
        period = group.periods[k] if k < len(group.periods) else None
        values.append(
            {
                "id": ids[k] if k < len(ids) else None,
                "periodId": period.period_id if period else None,
                "defaultValue": value,
            }
        )
    out["defaultValues"] = values
    fixed = group.evaluation_type is EvaluationType.FIXED
    out["targetPeriodDefaultValuesMap"] = (
        {
            str(v["periodId"] if v["periodId"] is not None else group.periods[k].key): v
            for k, v in enumerate(values)
        }
        if fixed
        else {}
    )
    out["extendedFieldInfo"] = _extended(t, raw)
    return out


def _extended(t: model.Target, raw: dict[str, Any]) -> dict[str, Any] | None:
    info = t.extended_field
    if info is not None:
        window = info.aggregate_window
        return {
            "name": info.name,
            "aggregateFunction": info.aggregate_function,
            "aggregateWindow": (
                {"windowType": window.window_type, "windowTimeUnit": "DAY",
                 "windowValue": window.days}
                if window
                else None
            ),
        }
    given = raw.get("extendedFieldInfo")
    if isinstance(given, dict):  # echoed as given (the leaderboard seed sends one for COUNT)
        return {**given, "aggregateWindow": given.get("aggregateWindow")}
    return None


def _date_of(value: Any, zone: ZoneInfo) -> Any:
    try:
        return local_date(value, zone).isoformat()
    except ValueError:
        return value


def _cycle_bound(
    body: dict[str, Any], key: str, day: date | None, at: time, zone: ZoneInfo
) -> str | None:
    """As given; else the group's first/last local day at 00:00 / 23:59:59 in its zone."""
    if body.get(key) is not None:
        return str(body[key])
    if day is None:
        return None
    stamp = datetime.combine(day, at, tzinfo=zone).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """JSON text of `value`, writing a `Decimal` as the exact number it holds.

    >>> to_json({"defaultValue": Decimal("500.000"), "ok": True}, indent=None)
    '{"defaultValue": 500.000, "ok": true}'
    """
    parts: list[str] = []
    _write(value, parts, indent, 0)
    return "".join(parts)


def _write(value: Any, out: list[str], indent: int | None, level: int) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written as JSON")
        out.append(str(value))
    elif isinstance(value, dict):
        _write_items(
            [(json.dumps(str(k), ensure_ascii=False) + ": ", v) for k, v in value.items()],
            "{", "}", out, indent, level,
        )
    elif isinstance(value, (list, tuple)):
        _write_items([("", v) for v in value], "[", "]", out, indent, level)
    elif isinstance(value, (date, datetime)):
        out.append(json.dumps(value.isoformat()))
    else:
        out.append(json.dumps(value, ensure_ascii=False))


def _write_items(
    items: list[tuple[str, Any]],
    open_: str,
    close: str,
    out: list[str],
    indent: int | None,
    level: int,
) -> None:
    if not items:
        out.append(open_ + close)
        return
    if indent is None:
        sep, pad, end = ", ", "", ""
    else:
        sep = ",\n" + " " * (indent * (level + 1))
        pad = "\n" + " " * (indent * (level + 1))
        end = "\n" + " " * (indent * level)
    out.append(open_ + pad)
    for i, (prefix, v) in enumerate(items):
        if i:
            out.append(sep)
        out.append(prefix)
        _write(v, out, indent, level + 1)
    out.append(end + close)
