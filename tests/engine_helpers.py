"""Tiny builders of export frames and groups for engine tests (no DuckDB needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl

from pipeline.config import Config
from pipeline.definitions import model as m
from pipeline.rules import tree
from pipeline.scoring.engine import ScoreResult, score

DEC = pl.Decimal(18, 4)
TS = pl.Datetime("us", "UTC")

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "transactions": {
        "txn_id": pl.String,
        "customer_id": pl.Int64,
        "txn_time": TS,
        "amount": DEC,
        "type": pl.String,
        "parent_txn_id": pl.String,
        "store_id": pl.String,
        "gross_amount": DEC,
        "discount": DEC,
        "qty": DEC,
    },
    "line_items": {
        "txn_id": pl.String,
        "line_no": pl.Int32,
        "qty": DEC,
        "amount": DEC,
        "item_code": pl.String,
        "rate": DEC,
        "value": DEC,
        "discount": DEC,
        "category": pl.String,
    },
    "events": {
        "event_id": pl.String,
        "customer_id": pl.Int64,
        "event_name": pl.String,
        "event_time": TS,
        "store_id": pl.String,
        "points": DEC,
    },
    "points": {
        "points_id": pl.String,
        "customer_id": pl.Int64,
        "awarded_at": TS,
        "points": DEC,
        "points_type": pl.String,
        "store_id": pl.String,
    },
    "stores": {"store_id": pl.String, "zone_id": pl.String, "concept_id": pl.String},
    "enrolments": {
        "group_name": pl.String,
        "customer_id": pl.Int64,
        "target_name": pl.String,
        "period_ref": pl.String,
        "enrolled_at": TS,
        "unenrolled_at": TS,
        "target_value": DEC,
        "initial_balance": DEC,
    },
}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sources(**rows: list[dict]) -> dict[str, pl.LazyFrame]:
    out = {}
    for name, schema in SCHEMAS.items():
        data = rows.get(name, [])
        full = [{c: r.get(c) for c in schema} for r in data]
        out[name] = (
            pl.DataFrame(full, schema=schema, orient="row").lazy()
            if full
            else pl.DataFrame(schema=schema).lazy()
        )
    return out


def txn(txn_id: str, cust: int, when: str, amount: str, store: str | None = None, **kw) -> dict:
    return {
        "txn_id": txn_id,
        "customer_id": cust,
        "txn_time": ts(when),
        "amount": Decimal(amount),
        "store_id": store,
        "type": "REGULAR",
        **kw,
    }


def ret(
    txn_id: str,
    cust: int,
    when: str,
    amount: str,
    parent: str | None = None,
    store: str | None = None,
    **kw,
) -> dict:
    return {
        "txn_id": txn_id,
        "customer_id": cust,
        "txn_time": ts(when),
        "amount": Decimal(amount),
        "store_id": store,
        "type": "RETURN",
        "parent_txn_id": parent,
        **kw,
    }


def gt(column: str, value: str, ns: str = "currentTxn") -> tree.Node:
    return tree.Binary(">", tree.Name(ns, column), tree.Literal(Decimal(value)))


def target(
    tid: int,
    name: str,
    entity: str = "TRANSACTION",
    ttype: str = "SALES",
    rule: tree.Node = tree.TRUE,
    values: tuple[str, ...] = ("100",),
    method: str = "TRANSACTION",
    **kw,
) -> m.Target:
    return m.Target(
        target_id=tid,
        name=name,
        entity=m.TargetEntity(entity),
        type=m.TargetType(ttype),
        rule=rule,
        default_values=tuple(Decimal(v) for v in values),
        enrolment_method=m.EnrolmentMethod(method),
        **kw,
    )


def periods(*spans: tuple[str, str, str | None]) -> tuple[m.Period, ...]:
    return tuple(
        m.Period(index=i, start=date.fromisoformat(s), end=date.fromisoformat(e), ref_code=ref)
        for i, (s, e, ref) in enumerate(spans, start=1)
    )


def group(
    name: str = "g",
    *,
    targets: tuple[m.Target, ...],
    kind: str = "DEFAULT",
    evaluation: str = "FIXED_CALENDAR_WINDOW",
    gid: int = 1,
    **kw,
) -> m.Group:
    return m.Group(
        group_id=gid,
        name=name,
        tracking_type=m.TrackingType(kind),
        evaluation_type=m.EvaluationType(evaluation),
        targets=targets,
        **kw,
    )


def run(
    groups: list[m.Group], as_of: str, config: Config | None = None, **rows: list[dict]
) -> ScoreResult:
    return score(sources(**rows), groups, date.fromisoformat(as_of), config or Config())


def rows(frame: pl.DataFrame, *cols: str) -> list[tuple]:
    return [tuple(r) for r in frame.sort(list(frame.columns[:4])).select(cols).iter_rows()]
