"""Slow, obviously-correct reference evaluator of SPEC §4–§9, §13 and §14 (streak grace).

Why it exists: the vectorised engine (`pipeline.scoring`) is checked against this module row for
row by property tests. It is written straight from the SPEC text with plain loops over groups,
customers, windows and records and exact `Decimal`s, and imports nothing of the engine (only the
rule tree and its parser), so that it cannot share the engine's mistakes. Speed does not matter:
running values are recomputed from scratch after every record.

Readings that SPEC leaves open are marked `# READING:` at their spot and listed in
docs/decisions.md ("Reference evaluator").

Example:
    >>> out = evaluate([body], {"transactions": [...]}, date(2024, 3, 31))
    >>> out["target_progress"][0]["value"]
    Decimal('150')
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.rules.tree import TRUE, Binary, Call, Literal, Name, Unary

try:
    from pipeline.rules.parse import parse_rule
except ImportError:  # pragma: no cover - the parser was written in parallel with this module
    parse_rule = None

NODE_TYPES = (Literal, Name, Unary, Binary, Call)
ZERO = Decimal(0)
END_OF_DAY = time(23, 59, 59, 999999)
RETURNABLE = ("SALES", "GROSS_SALES", "QUANTITY")
ATTRIBUTE_TYPES = ("EXTENDED_FIELD", "EVENT_ATTRIBUTE")
POINTS_TYPES = {
    "REGULAR_POINTS": "REGULAR",
    "PROMOTIONAL_POINTS": "PROMOTIONAL",
    "ALL_POINTS": None,
}
# (days, months) of one unit of each frequency type (SPEC §5).
UNITS = {
    "DAILY": (1, 0),
    "WEEKLY": (7, 0),
    "MONTHLY": (0, 1),
    "QUARTERLY": (0, 3),
    "HALF_YEARLY": (0, 6),
    "YEARLY": (0, 12),
}
OUTPUT_TABLES = (
    "target_progress",
    "period_achievements",
    "streak_runs",
    "streak_progress",
    "capping",
    "capping_adjustments",
    "leaderboard",
    "rewards",
)


# --------------------------------------------------------------------------------------------
# Small value helpers
# --------------------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    """A number as an exact Decimal; anything that is not a number is null."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _fold(text: Any) -> str:
    """Names compared trimmed and case-insensitively (SPEC §13 for group names)."""
    return str(text).strip().casefold()


def _aware(value: Any, org_zone: ZoneInfo) -> datetime | None:
    """A record timestamp as an aware datetime; naive ones are local in org.timezone (SPEC §3)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip())
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=org_zone)
    if isinstance(value, date):
        return datetime.combine(value, time(), org_zone)
    raise TypeError(f"not a timestamp: {value!r}")


def _naive(ts: datetime, zone: ZoneInfo) -> datetime:
    """An aware instant as the local wall clock of `zone`, without tzinfo (output convention)."""
    return ts.astimezone(zone).replace(tzinfo=None)


def _body_date(value: Any, zone: ZoneInfo) -> date | None:
    """A date of a group body: one with an offset is converted to the zone first (SPEC §5)."""
    if _blank(value):
        return None
    if isinstance(value, datetime):
        return value.astimezone(zone).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    parsed = datetime.fromisoformat(str(value).strip())
    return parsed.astimezone(zone).date() if parsed.tzinfo else parsed.date()


def _plus_months(start: date, months: int) -> date:
    year, month0 = divmod(start.month - 1 + months, 12)
    year += start.year
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(start.day, last))


def _step(start: date, k: int, unit: tuple[int, int], n: int) -> date:
    """Start of window k+1: always counted from the first start, so month clamps never drift."""
    days, months = unit
    if months:
        return _plus_months(start, months * n * k)
    return start + timedelta(days=days * n * k)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Record keys order numerically when they are integers, else as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


# --------------------------------------------------------------------------------------------
# Group bodies (SPEC §2.1): only the fields scoring needs
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    entity: str
    type: str
    rule: Any
    event_name: str | None
    filters: list[tuple[str, set[str]]]
    defaults: list[Decimal]
    ext_name: str | None
    ext_function: str
    aggregate: tuple[str, int] | None  # (MIN|MAX, block days)
    method: str


@dataclass
class Group:
    name: str
    tracking: str
    evaluation: str
    zone: ZoneInfo
    targets: list[Target]
    user_created: bool
    import_enrolled: bool
    leaderboard: bool
    combination: str
    combination_count: int
    continuous: bool
    grace: int
    levels: list[tuple[str, int]]
    start: date | None
    end: date | None
    periods: list[tuple[str | None, date, date]]  # FIXED windows, given or generated
    unit: tuple[int, int] | None
    n: int
    cycles: int  # CYCLIC: number of cycles; PERIOD_AGNOSTIC: most cycles


def _rule(body: dict) -> Any:
    """The target's rule; a tree node passed in `expressionJson`/`expression` is used as is."""
    as_json, text = body.get("expressionJson"), body.get("expression")
    for given in (as_json, text):
        if isinstance(given, NODE_TYPES):
            return given
    if isinstance(text, bool):
        text = "true" if text else "false"
    if parse_rule is not None:
        return parse_rule(text, as_json)
    if _blank(as_json) and (_blank(text) or str(text).strip() == "true"):
        return TRUE
    raise RuntimeError("pipeline.rules.parse is not available: pass tree nodes instead")


def _upper(value: Any, default: str | None = None) -> str | None:
    if _blank(value):
        return default
    return str(value).strip().upper().replace("-", "_")


def _target(body: dict) -> Target:
    entity = _upper(body["targetEntity"])
    info = body.get("extendedFieldInfo") or {}
    window = info.get("aggregateWindow") or None
    aggregate = None
    if window and not _blank(window.get("windowType")):
        aggregate = (_upper(window["windowType"]), max(int(window.get("windowValue") or 1), 1))
    defaults = []
    for item in body.get("defaultValues") or []:
        raw = item.get("defaultValue") if isinstance(item, dict) else item
        defaults.append(_dec(raw))
    return Target(
        name=body["name"],
        entity="REWARDS" if entity == "POINTS" else entity,
        type=_upper(body["targetType"]),
        rule=_rule(body),
        event_name=body.get("eventName"),
        filters=[
            (_upper(f["entityType"]), {str(i) for i in (f.get("entityIds") or [])})
            for f in body.get("filters") or []
        ],
        defaults=defaults,
        ext_name=info.get("name"),
        ext_function=_upper(info.get("aggregateFunction"), "SUM"),
        aggregate=aggregate,
        method=_upper(body.get("enrolmentMethod"), "IMPORT"),
    )


def _group(body: dict, org_zone: ZoneInfo) -> Group:
    tz = body.get("timeZoneName")
    zone = ZoneInfo(tz) if not _blank(tz) else org_zone
    tracking = _upper(body["trackingType"])
    continuous = body.get("streakContinuous", True) is not False
    if tracking == "STREAKS":
        tracking = "STREAK"
    if tracking == "NON_CONTINUOUS_STREAK":
        tracking, continuous = "STREAK", False
    targets = [_target(t) for t in body.get("targets") or [] if t.get("active", True) is not False]
    user_created = bool(body.get("userCreated"))
    start = _body_date(body.get("targetCycleStartDate"), zone) or _body_date(
        body.get("fromDate"), zone
    )
    end = _body_date(body.get("targetCycleEndDate"), zone) or _body_date(body.get("toDate"), zone)
    unit = UNITS.get(_upper(body.get("frequencyType"), "") or "")
    n = max(int(body.get("frequency") or 0), 1)
    total = int(body.get("totalPeriods") or 0)
    recurring = int(body.get("recurringCycles") or 0)
    evaluation = _upper(body.get("targetEvaluationType"), "FIXED_CALENDAR_WINDOW")
    periods: list[tuple[str | None, date, date]] = []
    if evaluation == "FIXED_CALENDAR_WINDOW":
        if body.get("periods"):
            for p in body["periods"]:
                ref = None if _blank(p.get("refCode")) else str(p["refCode"])
                periods.append(
                    (ref, _body_date(p["startDate"], zone), _body_date(p["endDate"], zone))
                )
        else:
            if unit is None or start is None:
                raise ValueError(f"group {body['name']!r}: cannot generate periods")
            # READING: without totalPeriods, recurringCycles (else 1) gives the period count.
            count = total or recurring or 1
            for k in range(1, count + 1):
                s, e = _step(start, k - 1, unit, n), _step(start, k, unit, n) - timedelta(days=1)
                periods.append((None, s, e))
    if evaluation == "CYCLIC_WINDOW":
        cycles = min(recurring if recurring > 0 else (total if total > 0 else 1), 100)
        if unit is None:
            raise ValueError(f"group {body['name']!r}: CYCLIC_WINDOW needs a frequencyType")
    else:
        cycles = min(recurring, 100) if recurring > 0 else 100
    return Group(
        name=body["name"],
        tracking=tracking,
        evaluation=evaluation,
        zone=zone,
        targets=targets,
        user_created=user_created,
        import_enrolled=user_created or any(t.method == "IMPORT" for t in targets),
        leaderboard=bool(body.get("leaderboardEnabled")),
        combination=_upper(body.get("combinationType"), "ALL"),
        combination_count=int(body.get("combinationCount") or 1),
        continuous=continuous,
        grace=int(body.get("streakGraceWindows") or 0) if continuous else 0,
        levels=sorted(
            ((s["name"], int(s["targetCountOfSequence"])) for s in body.get("streaks") or []),
            key=lambda level: level[1],
        ),
        start=start,
        end=end,
        periods=periods,
        unit=unit,
        n=n,
        cycles=cycles,
    )


# --------------------------------------------------------------------------------------------
# Records: one Item per thing a target can count (a bill, a line, an event, a points row)
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    customer: Any
    time: datetime  # aware
    day: date  # local date in the group's zone
    key: tuple  # record key, breaks ties in time order
    is_return: bool  # a RETURN bill (or its line) that reduces SALES/GROSS_SALES/QUANTITY
    enrols: bool  # False for returns: "a return never enrols a customer"
    bill: Any  # txn_id, for COUNT of distinct bills and for parents of returns
    parent: Any  # a return's parent_txn_id
    store_id: str | None
    rows: dict[str, dict | None]  # namespace -> the row its names read
    sales: Decimal | None = None
    gross: Decimal | None = None
    qty: Decimal | None = None
    attr: Any = None  # raw attribute value: COUNT counts non-nulls, SUM/MIN/MAX read numbers
    points: Decimal | None = None


def _column(row: dict | None, column: str) -> Any:
    """A column of a row; attributes may also sit in a nested `attrs`/`attributes` mapping."""
    if row is None:
        return None
    if column in row:
        return row[column]
    for nested in ("attrs", "attributes", "extended_fields"):
        inner = row.get(nested)
        if isinstance(inner, dict) and column in inner:
            return inner[column]
    return None


def _txn(row: dict) -> dict:
    """A transaction with SPEC §3 defaults filled in (missing or null)."""
    out = dict(row)
    out["type"] = _upper(row.get("type"), "REGULAR")
    if row.get("gross_amount") is None:
        out["gross_amount"] = row.get("amount")
    if row.get("discount") is None:
        out["discount"] = ZERO
    out["store_id"] = None if row.get("store_id") is None else str(row["store_id"])
    return out


def _line(row: dict) -> dict:
    out = dict(row)
    if row.get("value") is None:
        out["value"] = row.get("amount")
    return out


@dataclass
class Data:
    """The records, normalised once per evaluate() call."""

    txns: list[dict]
    txn_by_id: dict[Any, dict]
    lines_by_txn: dict[Any, list[dict]]
    events: list[dict]
    points: list[dict]
    stores: dict[str, dict]
    enrolments: list[dict]
    org_zone: ZoneInfo


def _data(records: dict[str, list[dict]], org_zone: ZoneInfo) -> Data:
    txns = [_txn(r) for r in records.get("transactions") or []]
    lines: dict[Any, list[dict]] = {}
    for r in records.get("line_items") or []:
        lines.setdefault(r["txn_id"], []).append(_line(r))
    for group in lines.values():
        group.sort(key=lambda r: _sort_key(r["line_no"]))
    stores = {}
    for r in records.get("stores") or []:
        row = {k: (None if v is None else str(v)) for k, v in r.items() if k != "store_id"}
        stores[str(r["store_id"])] = {**row, "store_id": str(r["store_id"])}
    return Data(
        txns=txns,
        txn_by_id={t["txn_id"]: t for t in txns},
        lines_by_txn=lines,
        events=list(records.get("events") or []),
        points=list(records.get("points") or []),
        stores=stores,
        enrolments=list(records.get("enrolments") or []),
        org_zone=org_zone,
    )


def _store_row(store_id: str | None, data: Data) -> dict | None:
    # READING: currentStore.id is the record's store_id even when `stores` has no row for it.
    if store_id is None:
        return None
    return {**data.stores.get(store_id, {}), "store_id": store_id}


def _txn_quantity(txn: dict, data: Data, absolute: bool) -> Decimal | None:
    """Σ qty of a bill: its own qty, else its line items' qty (SPEC §6.1, §13 for returns)."""
    own = _dec(txn.get("qty"))
    if own is not None:
        return abs(own) if absolute else own
    lines = data.lines_by_txn.get(txn["txn_id"], [])
    qtys = [_dec(line.get("qty")) for line in lines]
    qtys = [q for q in qtys if q is not None]
    if not qtys:
        return ZERO if absolute else None
    return sum((abs(q) if absolute else q for q in qtys), ZERO)


def _abs(value: Decimal | None) -> Decimal | None:
    return None if value is None else abs(value)


def _items(g: Group, t: Target, data: Data) -> list[Item]:
    """Every record the target could count, before window, enrolment, filter and rule checks."""
    zone, out = g.zone, []

    def make(row: dict, ts_field: str, key: tuple, **kw: Any) -> Item:
        ts = _aware(row[ts_field], data.org_zone)
        return Item(time=ts, day=ts.astimezone(zone).date(), key=key, **kw)

    if t.entity == "TRANSACTION":
        for txn in data.txns:
            ret = txn["type"] == "RETURN"
            rows = {"currentTxn": txn, "currentStore": _store_row(txn["store_id"], data)}
            amount, gross = _dec(txn.get("amount")), _dec(txn.get("gross_amount"))
            out.append(
                make(
                    txn, "txn_time", (_sort_key(txn["txn_id"]),),
                    customer=txn["customer_id"], is_return=ret, enrols=not ret,
                    bill=txn["txn_id"], parent=txn.get("parent_txn_id") if ret else None,
                    store_id=txn["store_id"], rows=rows,
                    sales=_abs(amount) if ret else amount,
                    gross=_abs(gross) if ret else gross,
                    qty=_txn_quantity(txn, data, absolute=ret),
                    attr=_column(txn, t.ext_name) if t.ext_name else None,
                )
            )  # fmt: skip
    elif t.entity == "LINEITEM":
        for txn in data.txns:
            ret = txn["type"] == "RETURN"
            for line in data.lines_by_txn.get(txn["txn_id"], []):
                rows = {
                    "currentTxn": txn,
                    "currentLineItem": line,
                    "currentStore": _store_row(txn["store_id"], data),
                }
                amount, gross, qty = (_dec(line.get(c)) for c in ("amount", "value", "qty"))
                attr = None
                if t.ext_name:
                    # READING: the line's value, else (null or absent) its transaction's.
                    attr = _column(line, t.ext_name)
                    if attr is None:
                        attr = _column(txn, t.ext_name)
                out.append(
                    make(
                        txn, "txn_time",
                        (_sort_key(txn["txn_id"]), _sort_key(line["line_no"])),
                        customer=txn["customer_id"], is_return=ret, enrols=not ret,
                        bill=txn["txn_id"], parent=txn.get("parent_txn_id") if ret else None,
                        store_id=txn["store_id"], rows=rows,
                        sales=_abs(amount) if ret else amount,
                        gross=_abs(gross) if ret else gross,
                        qty=_abs(qty) if ret else qty,
                        attr=attr,
                    )
                )  # fmt: skip
    elif t.entity == "EVENT":
        if t.event_name in ("TransactionAdd", "ReturnBill"):
            wanted = "REGULAR" if t.event_name == "TransactionAdd" else "RETURN"
            for txn in data.txns:
                if txn["type"] != wanted:
                    continue
                # READING: a bill seen as an event answers currentEvent.name/date/id too.
                event = {
                    **txn,
                    "event_name": t.event_name,
                    "event_time": txn["txn_time"],
                    "event_id": txn["txn_id"],
                }
                rows = {
                    "currentTxn": txn,
                    "currentEvent": event,
                    "currentStore": _store_row(txn["store_id"], data),
                }
                out.append(
                    make(
                        txn, "txn_time", (_sort_key(txn["txn_id"]),),
                        customer=txn["customer_id"], is_return=False,
                        enrols=wanted == "REGULAR", bill=txn["txn_id"], parent=None,
                        store_id=txn["store_id"], rows=rows,
                        attr=_column(event, t.ext_name) if t.ext_name else None,
                    )
                )  # fmt: skip
        else:
            for ev in data.events:
                if ev.get("event_name") != t.event_name:
                    continue
                store = None if ev.get("store_id") is None else str(ev["store_id"])
                rows = {"currentEvent": ev, "currentStore": _store_row(store, data)}
                out.append(
                    make(
                        ev, "event_time", (_sort_key(ev["event_id"]),),
                        customer=ev["customer_id"], is_return=False, enrols=True,
                        bill=ev["event_id"], parent=None, store_id=store, rows=rows,
                        attr=_column(ev, t.ext_name) if t.ext_name else None,
                    )
                )  # fmt: skip
    elif t.entity == "REWARDS":
        wanted = POINTS_TYPES[t.type]
        for p in data.points:
            if wanted is not None and _upper(p.get("points_type")) != wanted:
                continue
            store = None if p.get("store_id") is None else str(p["store_id"])
            # READING: rules on points targets read the points row through currentTxn/currentEvent.
            rows = {"currentTxn": p, "currentEvent": p, "currentStore": _store_row(store, data)}
            out.append(
                make(
                    p, "awarded_at", (_sort_key(p["points_id"]),),
                    customer=p["customer_id"], is_return=False, enrols=True,
                    bill=p["points_id"], parent=None, store_id=store, rows=rows,
                    points=_dec(p.get("points")),
                )
            )  # fmt: skip
    else:
        raise ValueError(f"unknown targetEntity {t.entity!r}")
    return out


# --------------------------------------------------------------------------------------------
# The rule tree, interpreted row by row with three-valued logic (SPEC §4, §13)
# --------------------------------------------------------------------------------------------


def _value(raw: Any) -> Any:
    """Record and literal values as rule values: numbers become Decimal, the rest stays."""
    if raw is None or isinstance(raw, bool | str | datetime | date):
        return raw
    if isinstance(raw, int | float | Decimal):
        return _dec(raw)
    return raw


def _as_local(value: Any, zone: ZoneInfo) -> datetime | None:
    """A timestamp on the group's wall clock, for the date functions."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.astimezone(zone) if value.tzinfo else value
    if isinstance(value, date):
        return datetime.combine(value, time())
    return None


def _coerce(a: Any, b: Any, zone: ZoneInfo) -> tuple[Any, Any] | None:
    """Bring two non-null values to one comparable type, or None when they cannot be compared."""
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    # READING: a number compared with text compares numerically when the text is a number.
    if isinstance(a, Decimal) and isinstance(b, str):
        nb = _dec(b)
        return None if nb is None else (a, nb)
    if isinstance(a, str) and isinstance(b, Decimal):
        na = _dec(a)
        return None if na is None else (na, b)
    if isinstance(a, datetime | date) or isinstance(b, datetime | date):
        la, lb = _as_local(a, zone), _as_local(b, zone)
        if la is None or lb is None:
            return None
        # Naive (text) sides are wall-clock times in the group's zone.
        la = la if la.tzinfo else la.replace(tzinfo=zone)
        lb = lb if lb.tzinfo else lb.replace(tzinfo=zone)
        return la, lb
    return None


def _compare(op: str, a: Any, b: Any, zone: ZoneInfo) -> bool | None:
    if a is None or b is None:
        return None
    pair = _coerce(a, b, zone)
    if pair is None:
        return {"==": False, "!=": True}.get(op)
    x, y = pair
    if isinstance(x, bool) and op not in ("==", "!="):
        return None
    return {
        "==": x == y,
        "!=": x != y,
        "<": x < y,
        "<=": x <= y,
        ">": x > y,
        ">=": x >= y,
    }[op]


def _arith(op: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if not (isinstance(a, Decimal) and isinstance(b, Decimal)):
        return None
    if op in ("/", "%") and b == 0:
        return None  # READING: division by zero is null, so the record does not count.
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if op == "/" else a % b


def _bool3(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _hour_between(ts: Any, lo: Any, hi: Any, zone: ZoneInfo) -> bool | None:
    local = _as_local(ts, zone)
    if local is None or lo is None or hi is None:
        return None
    lo_h, hi_h, h = int(lo), int(hi), local.hour
    if lo_h <= hi_h:
        return lo_h <= h < hi_h
    # READING: from > to wraps midnight (22, 6 means 22:00-05:59).
    return h >= lo_h or h < hi_h


def _call(name: str, args: list[Any], zone: ZoneInfo) -> Any:
    if name == "isNull":
        return args[0] is None
    if name == "isNotNull":
        return args[0] is not None
    if name == "in":
        if args[0] is None:
            return None
        # READING: null candidates are skipped: in(x, null) is false, not null.
        return any(_compare("==", args[0], c, zone) is True for c in args[1:] if c is not None)
    if any(a is None for a in args):
        return None
    if name == "contains":
        return str(args[1]) in str(args[0])
    if name == "matches":
        return re.search(str(args[1]), str(args[0])) is not None
    if name == "isHourBetween":
        return _hour_between(args[0], args[1], args[2], zone)
    local = _as_local(args[0], zone)
    if local is None:
        return None
    if name == "day":
        return Decimal(local.day)
    if name == "month":
        return Decimal(local.month)
    if name == "year":
        return Decimal(local.year)
    if name == "weekday":
        return Decimal(local.isoweekday())
    if name == "isWeekend":
        return local.isoweekday() >= 6
    if name == "isWeekday":
        return local.isoweekday() <= 5
    raise ValueError(f"unknown function {name!r}")


def evaluate_rule(node: Any, rows: dict[str, dict | None], zone: ZoneInfo) -> Any:
    """The value of a rule tree for one record: True, False, None (null) or a plain value."""
    if isinstance(node, Literal):
        return _value(node.value)
    if isinstance(node, Name):
        return _value(_column(rows.get(node.namespace), node.column))
    if isinstance(node, Unary):
        v = evaluate_rule(node.operand, rows, zone)
        if node.op == "!":
            b = _bool3(v)
            return None if b is None else not b
        return -v if isinstance(v, Decimal) else None
    if isinstance(node, Binary):
        a = evaluate_rule(node.left, rows, zone)
        b = evaluate_rule(node.right, rows, zone)
        if node.op == "&&":
            x, y = _bool3(a), _bool3(b)
            if x is False or y is False:
                return False
            return True if x is True and y is True else None
        if node.op == "||":
            x, y = _bool3(a), _bool3(b)
            if x is True or y is True:
                return True
            return False if x is False and y is False else None
        if node.op in ("==", "!=", "<", "<=", ">", ">="):
            return _compare(node.op, a, b, zone)
        return _arith(node.op, a, b)
    if isinstance(node, Call):
        return _call(node.name, [evaluate_rule(a, rows, zone) for a in node.args], zone)
    raise TypeError(f"not a rule node: {node!r}")


def _passes_filters(t: Target, item: Item, data: Data) -> bool:
    for entity, ids in t.filters:
        if item.store_id is None:
            return False
        store = data.stores.get(item.store_id, {})
        column = {"STORE": "store_id", "ZONE": "zone_id", "CONCEPT": "concept_id"}[entity]
        value = item.store_id if entity == "STORE" else store.get(column)
        if value is None or str(value) not in ids:
            return False
    return True


def _passes(g: Group, t: Target, item: Item, data: Data) -> bool:
    """Filters, then the rule: the record counts only when the rule is exactly True."""
    return _passes_filters(t, item, data) and evaluate_rule(t.rule, item.rows, g.zone) is True


def _passes_rule(g: Group, t: Target, item: Item) -> bool:
    return evaluate_rule(t.rule, item.rows, g.zone) is True


# --------------------------------------------------------------------------------------------
# Measures and running values (SPEC §6)
# --------------------------------------------------------------------------------------------


def measure(t: Target, items: list[Item], window_start: date) -> Decimal:
    """The target's measure over counted records (returns carry positive sizes that reduce)."""
    regular = [i for i in items if not i.is_return]
    returns = [i for i in items if i.is_return]
    if t.type in RETURNABLE:
        attr = {"SALES": "sales", "GROSS_SALES": "gross", "QUANTITY": "qty"}[t.type]
        plus = [getattr(i, attr) for i in regular]
        minus = [getattr(i, attr) for i in returns]
        return sum((v for v in plus if v is not None), ZERO) - sum(
            (v for v in minus if v is not None), ZERO
        )
    if t.type == "COUNT":
        if t.entity == "LINEITEM":
            return Decimal(len({i.bill for i in regular}))
        return Decimal(len(regular))
    if t.type == "VISIT":
        return Decimal(len({i.day for i in regular}))
    if t.type in ATTRIBUTE_TYPES:
        if t.ext_function == "COUNT" and t.aggregate is None:
            return Decimal(sum(1 for i in regular if i.attr is not None))
        numbers = [(i.day, _dec(i.attr)) for i in regular]
        values = [(day, v) for day, v in numbers if v is not None]
        if t.aggregate is not None:
            kind, days = t.aggregate
            blocks: dict[int, Decimal] = {}
            for day, v in values:
                b = (day - window_start).days // days
                if b not in blocks:
                    blocks[b] = v
                else:
                    blocks[b] = min(blocks[b], v) if kind == "MIN" else max(blocks[b], v)
            return sum(blocks.values(), ZERO)
        return sum((v for _, v in values), ZERO)
    if t.type in POINTS_TYPES:
        return sum((i.points for i in regular if i.points is not None), ZERO)
    raise ValueError(f"unknown targetType {t.type!r}")


def _in_time_order(items: Iterable[Item]) -> list[Item]:
    return sorted(items, key=lambda i: (i.time, i.key))


@dataclass
class Progress:
    value: Decimal
    achieved: bool
    achieved_at: datetime | None
    last_activity_at: datetime | None


def progress(
    t: Target, items: list[Item], window_start: date, balance: Decimal, target: Decimal | None
) -> Progress:
    """Value, achievement and the record that reached the target, by replaying every prefix."""
    ordered = _in_time_order(items)
    final = balance + measure(t, ordered, window_start)
    achieved = target is not None and final >= target
    achieved_at = None
    # READING: achieved_at is null exactly when the balance alone already reached the target.
    if achieved and balance < target:
        for k in range(1, len(ordered) + 1):
            if balance + measure(t, ordered[:k], window_start) >= target:
                achieved_at = ordered[k - 1].time
                break
    last = max((i.time for i in ordered), default=None)
    return Progress(final, achieved, achieved_at, last)


# --------------------------------------------------------------------------------------------
# Enrolment (SPEC §7, §13)
# --------------------------------------------------------------------------------------------


@dataclass
class Enrolment:
    rows: list[dict] = field(default_factory=list)
    enrolled_at: datetime | None = None
    unenrolled_at: datetime | None = None


def _enrolments(g: Group, data: Data) -> dict[str, tuple[Any, Enrolment]]:
    """Rows per customer: earliest enrolled_at, latest unenrolled_at (nulls ignored)."""
    out: dict[str, tuple[Any, Enrolment]] = {}
    for row in data.enrolments:
        if _fold(row.get("group_name", "")) != _fold(g.name):
            continue
        cid = row["customer_id"]
        _, e = out.setdefault(str(cid), (cid, Enrolment()))
        e.rows.append(row)
        at = _aware(row.get("enrolled_at"), data.org_zone)
        until = _aware(row.get("unenrolled_at"), data.org_zone)
        # READING: a null enrolled_at/unenrolled_at in one row does not override another's value.
        if at is not None and (e.enrolled_at is None or at < e.enrolled_at):
            e.enrolled_at = at
        if until is not None and (e.unenrolled_at is None or until > e.unenrolled_at):
            e.unenrolled_at = until
    return out


def _lookup(rows: list[dict], column: str, target: str, ref_code: str | None) -> Decimal | None:
    """SPEC §13 order: (target, window) → (target, -) → (-, window) → (-, -).

    `ref_code` is None for generated periods and cycles: a period_ref matches a given refCode only.
    """
    levels = [(target, ref_code), (target, None), (None, ref_code), (None, None)]
    for want_target, want_ref in levels:
        for row in rows:
            row_target = None if _blank(row.get("target_name")) else str(row["target_name"])
            row_ref = None if _blank(row.get("period_ref")) else str(row["period_ref"])
            # READING: target_name matches trimmed and case-insensitively, like group_name.
            same_target = (
                (row_target is None)
                if want_target is None
                else (row_target is not None and _fold(row_target) == _fold(want_target))
            )
            if not same_target or row_ref != want_ref:
                continue
            value = _dec(row.get(column))
            # READING: a matching row with a null value falls through to the next level; among
            # several matching rows the first (input order) wins.
            if value is not None:
                return value
    return None


# --------------------------------------------------------------------------------------------
# Windows (SPEC §5)
# --------------------------------------------------------------------------------------------


@dataclass
class Window:
    index: int
    ref_code: str | None
    start: date
    end: date
    status: str

    @property
    def start_ts(self) -> datetime:
        return datetime.combine(self.start, time())

    @property
    def end_ts(self) -> datetime:
        return datetime.combine(self.end, END_OF_DAY)

    def holds(self, day: date) -> bool:
        return self.start <= day <= self.end


def _status(start: date, end: date, as_of: date) -> str:
    if start > as_of:
        return "NOT_STARTED"
    return "RUNNING" if as_of < end else "ENDED"


def _fixed_windows(g: Group, as_of: date) -> list[Window]:
    return [
        Window(k, ref, s, e, _status(s, e, as_of))
        for k, (ref, s, e) in enumerate(g.periods, start=1)
        if s <= as_of
    ]


def _cycles(g: Group, first: date, as_of: date, last_start: datetime | None) -> list[Window]:
    out = []
    for k in range(1, g.cycles + 1):
        s = _step(first, k - 1, g.unit, g.n)
        e = _step(first, k, g.unit, g.n) - timedelta(days=1)
        if s > as_of or (g.end is not None and s > g.end):
            break
        if last_start is not None and datetime.combine(s, time()) > last_start:
            break
        out.append(Window(k, None, s, e, _status(s, e, as_of)))
    return out


# --------------------------------------------------------------------------------------------
# Scoring one group
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    org_zone: ZoneInfo
    returns_mode: str
    track_from_enrolment: bool


def _enrolled_at_time(g: Group, e: Enrolment | None, item: Item, cfg: Settings) -> bool:
    """IMPORT: nothing after unenrolled_at counts, nor before enrolled_at if tracking from it."""
    if not g.import_enrolled:
        return True
    if e is None:
        return False
    if e.unenrolled_at is not None and item.time > e.unenrolled_at:
        return False
    return not (
        cfg.track_from_enrolment and e.enrolled_at is not None and item.time < e.enrolled_at
    )


def _target_value(
    g: Group, t: Target, e: Enrolment | None, w_index: int, ref: str | None
) -> Decimal | None:
    rows = e.rows if e is not None else []
    value = _lookup(rows, "target_value", t.name, ref)
    if value is not None or g.user_created:
        return value  # a user goal never falls back to defaultValues (SPEC §13)
    if not t.defaults:
        return None
    return t.defaults[min(w_index, len(t.defaults)) - 1]


def _balance_window(
    g: Group, windows: list[Window], e: Enrolment | None, zone: ZoneInfo
) -> Window | None:
    """initial_balance goes to the first window that had not ended before enrolled_at."""
    if not windows:
        return None
    at = e.enrolled_at if (g.import_enrolled and e is not None) else None
    if at is None:
        return windows[0]
    local = _naive(at, zone)
    return next((w for w in windows if w.end_ts >= local), None)


@dataclass
class Row:
    """One (customer, target, window) cell before it becomes output rows."""

    window: Window
    target: Decimal | None
    balance: Decimal
    items: list[Item] = field(default_factory=list)


def _score_group(g: Group, data: Data, as_of: date, cfg: Settings, out: dict) -> None:
    if g.evaluation == "PERIOD_AGNOSTIC_WINDOW":
        _score_agnostic(g, data, as_of, cfg, out)
        return
    zone = g.zone
    enrolments = _enrolments(g, data)
    items = {t.name: [i for i in _items(g, t, data) if i.day <= as_of] for t in g.targets}
    by_customer: dict[str, dict[str, list[Item]]] = {}
    originals: dict[str, Any] = {}
    for t in g.targets:
        for i in items[t.name]:
            originals.setdefault(str(i.customer), i.customer)
            by_customer.setdefault(str(i.customer), {}).setdefault(t.name, []).append(i)
    for ck, (cid, _) in enrolments.items():
        originals.setdefault(ck, cid)
    candidates = sorted(enrolments) if g.import_enrolled else sorted(by_customer)

    fixed = _fixed_windows(g, as_of) if g.evaluation == "FIXED_CALENDAR_WINDOW" else []
    cells: dict[str, dict[str, dict[int, Row]]] = {}  # customer -> target -> window index
    counted_bills: dict[str, dict[Any, int]] = {t.name: {} for t in g.targets}

    # Phase 1: windows and counted regular records, per customer.
    for ck in candidates:
        e = enrolments.get(ck, (None, None))[1]
        mine = by_customer.get(ck, {})
        last_start = None
        if g.import_enrolled and e is not None and e.unenrolled_at is not None:
            last_start = _naive(e.unenrolled_at, zone)
        if g.evaluation == "CYCLIC_WINDOW":
            first = None
            for t in g.targets:
                for i in mine.get(t.name, []):
                    if i.is_return or not i.enrols:
                        continue  # cycle 1 opens at a regular record, never a return
                    if g.start is not None and i.day < g.start:
                        continue
                    if g.import_enrolled and e is not None:
                        if e.enrolled_at is not None and i.time < e.enrolled_at:
                            continue
                        if e.unenrolled_at is not None and i.time > e.unenrolled_at:
                            continue
                    if _passes(g, t, i, data) and (first is None or i.time < first.time):
                        first = i
            windows = [] if first is None else _cycles(g, first.day, as_of, last_start)
        else:
            windows = [w for w in fixed if last_start is None or w.start_ts <= last_start]
        customer_cells: dict[str, dict[int, Row]] = {}
        for t in g.targets:
            t_cells: dict[int, Row] = {}
            for w in windows:
                tv = _target_value(g, t, e, w.index, w.ref_code)
                if g.user_created and tv is None:
                    continue  # no goal, no row
                t_cells[w.index] = Row(w, tv, ZERO)
            t_windows = [c.window for c in t_cells.values()]
            bw = _balance_window(g, t_windows, e, zone)
            if bw is not None:
                rows = e.rows if e is not None else []
                t_cells[bw.index].balance = (
                    _lookup(rows, "initial_balance", t.name, bw.ref_code) or ZERO
                )
            for i in mine.get(t.name, []):
                if i.is_return or not _enrolled_at_time(g, e, i, cfg):
                    continue
                cell = next((c for c in t_cells.values() if c.window.holds(i.day)), None)
                if cell is not None and _passes(g, t, i, data):
                    cell.items.append(i)
            customer_cells[t.name] = t_cells
        if not g.import_enrolled:
            enrolled = any(
                i.enrols for t_cells in customer_cells.values() for c in t_cells.values()
                for i in c.items
            )  # fmt: skip
            if not enrolled:
                continue
        cells[ck] = customer_cells
        for t in g.targets:
            for c in customer_cells[t.name].values():
                for i in c.items:
                    counted_bills[t.name][i.bill] = c.window.index

    # Phase 2: returns (SPEC §6.2, §6.3, §13 "Returns and parents").
    if cfg.returns_mode != "ignore":
        for ck, customer_cells in cells.items():
            e = enrolments.get(ck, (None, None))[1]
            for t in g.targets:
                if t.entity not in ("TRANSACTION", "LINEITEM") or t.type not in RETURNABLE:
                    continue
                t_cells = sorted(customer_cells[t.name].values(), key=lambda c: c.window.index)
                for i in by_customer.get(ck, {}).get(t.name, []):
                    if not i.is_return or not _enrolled_at_time(g, e, i, cfg):
                        continue
                    cell = _return_cell(g, t, i, t_cells, counted_bills[t.name], data, cfg)
                    if cell is not None:
                        cell.items.append(i)

    # Phase 3: output rows.
    for ck in sorted(cells, key=_sort_key):
        _emit_customer(g, originals[ck], cells[ck], zone, out)
    _emit_leaderboards(g, out)


def _return_cell(
    g: Group,
    t: Target,
    item: Item,
    cells: list[Row],
    counted: dict[Any, int],
    data: Data,
    cfg: Settings,
) -> Row | None:
    """The window a return reduces, or None when it does not count (yet)."""
    parent_known = item.parent is not None and item.parent in data.txn_by_id
    if parent_known:
        if item.parent not in counted:
            return None  # the parent bill did not count for this target
        if t.entity == "LINEITEM" and not _passes_rule(g, t, item):
            return None  # a returned line must pass the rule itself
    elif not _passes(g, t, item, data):
        return None
    if cfg.returns_mode == "carry":
        # Also covers a return dated between windows: the first window starting after it.
        return next((c for c in cells if c.window.start > item.day), None)
    if parent_known:
        return next((c for c in cells if c.window.index == counted[item.parent]), None)
    return next((c for c in cells if c.window.holds(item.day)), None)


def _window_fields(w: Window) -> dict:
    return {
        "period_index": w.index,
        "ref_code": w.ref_code,
        "window_start": w.start_ts,
        "window_end": w.end_ts,
        "status": w.status,
    }


def _emit_customer(
    g: Group, cid: Any, customer_cells: dict[str, dict[int, Row]], zone: ZoneInfo, out: dict
) -> None:
    by_window: dict[int, list[tuple[Target, dict]]] = {}
    fields_of: dict[int, dict] = {}
    for t in g.targets:
        for index in sorted(customer_cells[t.name]):
            cell = customer_cells[t.name][index]
            p = progress(t, cell.items, cell.window.start, cell.balance, cell.target)
            row = {
                "group": g.name,
                "target": t.name,
                "customer_id": cid,
                **_window_fields(cell.window),
                "value": p.value,
                "target_value": cell.target,
                "achieved": p.achieved,
                "achieved_at": p.achieved_at,
                "last_activity_at": p.last_activity_at,
            }
            out["target_progress"].append(row)
            by_window.setdefault(index, []).append((t, row))
            fields_of[index] = _window_fields(cell.window)
            if g.tracking == "CAPPING":
                _emit_capping(g, t, cid, cell, out)
    achievements = []
    for index in sorted(by_window):
        pa = _period_achievement(g, cid, fields_of[index], [r for _, r in by_window[index]])
        out["period_achievements"].append(pa)
        achievements.append(pa)
    if g.tracking in ("DEFAULT", "UNIFIED"):
        for index in sorted(by_window):
            for _, row in by_window[index]:
                if row["achieved"]:
                    out["rewards"].append(_reward("TARGET_ACHIEVED", g, row["target"], row))
    if g.tracking == "UNIFIED":
        for pa in achievements:
            if pa["achieved"]:
                needed = g.combination_count if g.combination == "ANY" else len(g.targets)
                out["rewards"].append(
                    _reward(
                        "UNIFIED_ACHIEVED", g, g.name,
                        {**pa, "value": Decimal(pa["targets_achieved"]),
                         "target_value": Decimal(needed)},
                    )
                )  # fmt: skip
    # READING: streak_progress only for customers with at least one window row.
    if g.tracking == "STREAK" and achievements:
        _emit_streak(g, cid, achievements, out)


def _period_achievement(g: Group, cid: Any, window: dict, rows: list[dict]) -> dict:
    """A window is achieved when ALL (or ANY n, UNIFIED only) of the user targets are."""
    done = [r for r in rows if r["achieved"]]
    total = len(g.targets)
    if g.tracking == "UNIFIED" and g.combination == "ANY":
        needed = g.combination_count
        achieved = len(done) >= needed
        # READING: a target reached by its balance alone (achieved_at null) counts as earliest.
        times = sorted((r["achieved_at"] for r in done), key=lambda x: (x is not None, x))
        at = times[needed - 1] if achieved else None
    else:
        achieved = len(done) == total and len(rows) == total
        at = max((r["achieved_at"] for r in done if r["achieved_at"] is not None), default=None)
        at = at if achieved else None
    return {
        "group": g.name,
        "customer_id": cid,
        **window,
        "achieved": achieved,
        "achieved_at": at,
        "targets_achieved": len(done),
        "targets_total": total,
    }


def _reward(kind: str, g: Group, name: str, row: dict) -> dict:
    return {
        "kind": kind,
        "group": g.name,
        "name": name,
        "customer_id": row["customer_id"],
        "period_index": row["period_index"],
        "ref_code": row["ref_code"],
        "window_start": row["window_start"],
        "window_end": row["window_end"],
        "value": row["value"],
        "target_value": row["target_value"],
        "achieved_at": row["achieved_at"],
    }


# --------------------------------------------------------------------------------------------
# Streaks (SPEC §8, §13, §14 grace)
# --------------------------------------------------------------------------------------------


def _emit_streak(g: Group, cid: Any, windows: list[dict], out: dict) -> None:
    runs: list[dict] = []
    current: dict | None = None
    count = total = 0
    next_level = 0
    for w in windows:  # only windows with a row: the others neither break nor extend
        if w["achieved"]:
            total += 1
            if current is None:
                current = {"start": w["period_index"], "end": w["period_index"], "length": 0,
                           "graces": 0}  # fmt: skip
                runs.append(current)
            current["length"] += 1
            current["end"] = w["period_index"]
            count = current["length"] if g.continuous else total
            # The count grows by one per achieved window, so each level is met exactly at N.
            while next_level < len(g.levels) and count >= g.levels[next_level][1]:
                name, n = g.levels[next_level]
                out["rewards"].append(
                    _reward(
                        "STREAK_LEVEL_ACHIEVED", g, name,
                        {**w, "value": Decimal(count), "target_value": Decimal(n)},
                    )
                )  # fmt: skip
                next_level += 1
        elif w["status"] == "ENDED" and g.continuous and current is not None:
            if current["graces"] < g.grace:
                current["graces"] += 1  # forgiven: neither breaks nor extends
            else:
                current = None
        # A RUNNING window not yet achieved neither breaks nor extends the run.
    if g.continuous:
        for run in runs:
            out["streak_runs"].append(
                {
                    "group": g.name,
                    "customer_id": cid,
                    "start_period_index": run["start"],
                    "end_period_index": run["end"],
                    "length": run["length"],
                    "is_current": run is current,
                    "graces_used": run["graces"],
                }
            )
        current_count = current["length"] if current is not None else 0
        longest = max((r["length"] for r in runs), default=0)
    else:
        # READING: a non-continuous streak is one run that never breaks: first to last achieved.
        if runs:
            out["streak_runs"].append(
                {
                    "group": g.name,
                    "customer_id": cid,
                    "start_period_index": runs[0]["start"],
                    "end_period_index": runs[-1]["end"],
                    "length": total,
                    "is_current": True,
                    "graces_used": 0,
                }
            )
        current_count = longest = total
    following = g.levels[next_level] if next_level < len(g.levels) else (None, None)
    out["streak_progress"].append(
        {
            "group": g.name,
            "customer_id": cid,
            "current_count": current_count,
            "longest_count": longest,
            "levels_achieved": next_level,
            "next_level_name": following[0],
            "next_level_count": following[1],
        }
    )


# --------------------------------------------------------------------------------------------
# Capping (SPEC §8) and leaderboards
# --------------------------------------------------------------------------------------------


def _emit_capping(g: Group, t: Target, cid: Any, cell: Row, out: dict) -> None:
    """Rows only for windows with counted points rows (SPEC §13 makes the others optional)."""
    ordered = _in_time_order(cell.items)
    if not ordered:
        return
    cap = cell.target
    earned = ZERO
    capped_at = None
    for i in ordered:
        pts = i.points if i.points is not None else ZERO
        if cap is None:
            allowed = pts  # READING: no cap value means nothing is held back.
        elif pts >= 0:
            allowed = max(ZERO, min(cap - earned, pts))
        else:
            # READING: a reversal (negative points) takes back the excess first, so the rows'
            # allowed points add up to the window's `allowed = min(earned, cap)`.
            allowed = min(earned + pts, cap) - min(earned, cap)
        before, earned = earned, earned + pts
        # READING: with reversals the sum can pass the cap more than once; capped_at is the
        # last time it went from at or below the cap to above it (the first, without them).
        if cap is not None and before <= cap < earned:
            capped_at = i.time
        out["capping_adjustments"].append(
            {
                "group": g.name,
                "target": t.name,
                "customer_id": cid,
                "period_index": cell.window.index,
                "points_id": i.rows["currentTxn"]["points_id"],
                "awarded_at": i.time,
                "points": pts,
                "allowed_points": allowed,
                "excess_points": pts - allowed,
            }
        )
    if cap is None or earned <= cap:
        capped_at = None  # READING: a window that ends at or below its cap is not capped
    out["capping"].append(
        {
            "group": g.name,
            "target": t.name,
            "customer_id": cid,
            "period_index": cell.window.index,
            "earned": earned,
            "cap": cap,
            "allowed": earned if cap is None else min(earned, cap),
            "excess": ZERO if cap is None else max(ZERO, earned - cap),
            "capped_at": capped_at,
        }
    )


def _customer_order(ids: list[Any]) -> Callable[[Any], Any]:
    """Leaderboard ties end on customer_id: numeric when every id is an integer, else text."""
    numeric = all(
        (isinstance(c, int) and not isinstance(c, bool))
        or (isinstance(c, str) and re.fullmatch(r"-?\d+", c.strip()) is not None)
        for c in ids
    )
    return (lambda c: int(c)) if numeric else (lambda c: str(c))


def _emit_leaderboards(g: Group, out: dict) -> None:
    if not (g.leaderboard and g.tracking == "DEFAULT" and g.evaluation == "FIXED_CALENDAR_WINDOW"):
        return
    boards: dict[tuple[str, int], list[dict]] = {}
    for row in out["target_progress"]:
        if row["group"] == g.name and row["last_activity_at"] is not None:
            boards.setdefault((row["target"], row["period_index"]), []).append(row)
    for (target, index), rows in sorted(boards.items()):
        order = _customer_order([r["customer_id"] for r in rows])
        rows = sorted(
            rows, key=lambda r: (-r["value"], r["last_activity_at"], order(r["customer_id"]))
        )
        for rank, r in enumerate(rows, start=1):
            out["leaderboard"].append(
                {
                    "group": g.name,
                    "target": target,
                    "period_index": index,
                    "customer_id": r["customer_id"],
                    "value": r["value"],
                    "last_activity_at": r["last_activity_at"],
                    "rank": rank,
                }
            )


# --------------------------------------------------------------------------------------------
# PERIOD_AGNOSTIC_WINDOW (SPEC §5, §13)
# --------------------------------------------------------------------------------------------


@dataclass
class Cycle:
    index: int
    target: Decimal | None
    opened: Item
    balance: Decimal = ZERO
    items: list[Item] = field(default_factory=list)
    closed: Item | None = None


def _score_agnostic(g: Group, data: Data, as_of: date, cfg: Settings, out: dict) -> None:
    """Per customer, records in time order fill cycle after cycle; returns hit the open one."""
    t = g.targets[0]
    zone = g.zone
    enrolments = _enrolments(g, data)

    def in_group_dates(i: Item) -> bool:
        return (g.start is None or i.day >= g.start) and (g.end is None or i.day <= g.end)

    by_customer: dict[str, list[Item]] = {}
    originals: dict[str, Any] = {}
    for i in _items(g, t, data):
        if i.day <= as_of and in_group_dates(i):
            originals.setdefault(str(i.customer), i.customer)
            by_customer.setdefault(str(i.customer), []).append(i)
    for ck, (cid, _) in enrolments.items():
        originals.setdefault(ck, cid)
    candidates = sorted(enrolments) if g.import_enrolled else sorted(by_customer)
    apply_returns = (
        cfg.returns_mode != "ignore"  # READING: `ignore` wins over "always at their own time"
        and t.entity in ("TRANSACTION", "LINEITEM")
        and t.type in RETURNABLE
    )
    for ck in sorted(candidates, key=_sort_key):
        e = enrolments.get(ck, (None, None))[1]
        rows = e.rows if e is not None else []
        balance = _lookup(rows, "initial_balance", t.name, None) or ZERO
        enrolled_at = e.enrolled_at if (g.import_enrolled and e is not None) else None
        balance_done = False
        cycles: list[Cycle] = []
        open_cycle: Cycle | None = None
        counted: set[Any] = set()
        for i in _in_time_order(by_customer.get(ck, [])):
            if not _enrolled_at_time(g, e, i, cfg):
                continue
            if i.is_return:
                if not apply_returns or open_cycle is None:
                    continue  # a return when no cycle is open is dropped
                if i.parent is not None and i.parent in data.txn_by_id:
                    if i.parent not in counted:
                        continue
                    if t.entity == "LINEITEM" and not _passes_rule(g, t, i):
                        continue
                elif not _passes(g, t, i, data):
                    continue
            else:
                if not _passes(g, t, i, data):
                    continue
                if open_cycle is None:
                    k = len(cycles) + 1
                    if k > g.cycles:
                        continue
                    tv = _target_value(g, t, e, k, None)
                    if g.user_created and tv is None:
                        break  # no goal for this cycle: nothing further is scored
                    open_cycle = Cycle(k, tv, i)
                    cycles.append(open_cycle)
                counted.add(i.bill)
            # READING: the balance joins the cycle open at enrolled_at (or the next one opened),
            # counted from the first record at or after enrolled_at.
            if not balance_done and (enrolled_at is None or i.time >= enrolled_at):
                open_cycle.balance = balance
                balance_done = True
            open_cycle.items.append(i)
            value = open_cycle.balance + measure(t, open_cycle.items, open_cycle.opened.day)
            if open_cycle.target is not None and value >= open_cycle.target:
                open_cycle.closed = i
                open_cycle = None
        if open_cycle is not None and not balance_done and enrolled_at is not None:
            end_of_d = datetime.combine(as_of, END_OF_DAY, zone)
            if enrolled_at <= end_of_d:
                open_cycle.balance = balance
        if not g.import_enrolled and not cycles:
            continue
        _emit_agnostic_customer(g, t, originals[ck], cycles, zone, out)


def _emit_agnostic_customer(
    g: Group, t: Target, cid: Any, cycles: list[Cycle], zone: ZoneInfo, out: dict
) -> None:
    for c in cycles:
        value = c.balance + measure(t, c.items, c.opened.day)
        achieved = c.target is not None and value >= c.target
        window = {
            "period_index": c.index,
            "ref_code": None,
            "window_start": _naive(c.opened.time, zone),
            "window_end": None if c.closed is None else _naive(c.closed.time, zone),
            "status": "RUNNING" if c.closed is None else "ENDED",
        }
        # READING: a cycle's achieved_at is its closing record, even when the target was <= 0.
        row = {
            "group": g.name,
            "target": t.name,
            "customer_id": cid,
            **window,
            "value": value,
            "target_value": c.target,
            "achieved": achieved,
            "achieved_at": None if c.closed is None else c.closed.time,
            "last_activity_at": max(i.time for i in c.items),
        }
        out["target_progress"].append(row)
        out["period_achievements"].append(_period_achievement(g, cid, window, [row]))
        if achieved and g.tracking != "CAPPING":
            out["rewards"].append(_reward("TARGET_ACHIEVED", g, t.name, row))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def evaluate(
    bodies: list[dict],
    records: dict[str, list[dict]],
    as_of: date,
    config: dict | None = None,
) -> dict[str, list[dict]]:
    """Score raw group bodies against records as of the run date D, by SPEC, slowly.

    Args:
        bodies: POST v3/targetGroups bodies, already valid. A rule may also be given as a
            `pipeline.rules.tree` node in `expressionJson` (used as is).
        records: keys transactions, line_items, events, points, stores, enrolments.
        as_of: the run date D; records after the end of D (group zone) are ignored.
        config: timezone, returns_mode, track_from_enrolment (SPEC §1 defaults).

    Returns:
        One list of row dicts per output table (see OUTPUT_TABLES), names instead of ids.
    """
    config = config or {}
    cfg = Settings(
        org_zone=ZoneInfo(config.get("timezone", "UTC")),
        returns_mode=str(config.get("returns_mode", "original")).lower(),
        track_from_enrolment=bool(config.get("track_from_enrolment", False)),
    )
    data = _data(records, cfg.org_zone)
    out: dict[str, list[dict]] = {name: [] for name in OUTPUT_TABLES}
    for body in bodies:
        if body.get("active", True) is False:
            continue  # READING: inactive groups are out of every run's scope
        _score_group(_group(body, cfg.org_zone), data, as_of, cfg, out)
    return out
