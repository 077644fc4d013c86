"""Each export kind gives identical tables from CSV, Parquet and JSON lines (issue 4, acceptance
1), and the bundled sample exports load cleanly and cover every sample programme."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline import workspace
from pipeline.loading import KINDS, load_exports

IST = timezone(timedelta(hours=5, minutes=30))
D = Decimal

# Per kind: rows as typed Python values; events carry attributes (points, rating, channel).
ROWS: dict[str, list[dict[str, Any]]] = {
    "transactions": [
        {"txn_id": "B1", "customer_id": 101, "txn_time": datetime(2024, 3, 15, 20, tzinfo=UTC),
         "amount": D("3.33"), "type": "REGULAR", "parent_txn_id": None, "store_id": "50679757",
         "gross_amount": D("3.50"), "discount": D("0.17"), "qty": D("2")},
        {"txn_id": "B2", "customer_id": 102, "txn_time": datetime(2024, 3, 16, 1, 30, tzinfo=IST),
         "amount": D("1200.1234"), "type": None, "parent_txn_id": None, "store_id": "50679770",
         "gross_amount": None, "discount": None, "qty": None},
        {"txn_id": "R1", "customer_id": 101, "txn_time": datetime(2024, 3, 17, 9, tzinfo=UTC),
         "amount": D("-1.10"), "type": "RETURN", "parent_txn_id": "B1", "store_id": "50679757",
         "gross_amount": None, "discount": None, "qty": D("-1")},
    ],
    "line-items": [
        {"txn_id": "B1", "line_no": 1, "item_code": "SKU-1", "qty": D("1"), "rate": D("2.5"),
         "amount": D("2.33"), "value": D("2.50"), "discount": D("0.17"), "category": "Beauty"},
        {"txn_id": "B1", "line_no": 2, "item_code": "SKU-2", "qty": D("1.5"), "rate": None,
         "amount": D("1"), "value": None, "discount": None, "category": "Grocery"},
    ],
    "events": [
        {"event_id": "E1", "customer_id": 101, "event_name": "spinTheWheel",
         "event_time": datetime(2024, 10, 8, 10, tzinfo=UTC), "store_id": None,
         "points": D("0.3"), "rating": None, "channel": "app"},
        {"event_id": "E2", "customer_id": 102, "event_name": "ProductReview",
         "event_time": datetime(2024, 10, 9, 18, 45, tzinfo=IST), "store_id": "50679770",
         "points": None, "rating": D("4"), "channel": None},
    ],
    "points": [
        {"points_id": "P1", "customer_id": 101, "awarded_at": datetime(2026, 9, 4, tzinfo=UTC),
         "points": D("300"), "points_type": "PROMOTIONAL", "store_id": None, "txn_id": None,
         "promotion_id": "PRM-1"},
        {"points_id": "P2", "customer_id": 101, "awarded_at": datetime(2026, 9, 5, tzinfo=UTC),
         "points": D("12.5"), "points_type": "REGULAR", "store_id": "50679757", "txn_id": "B1",
         "promotion_id": None},
    ],
    "stores": [
        {"store_id": "50679757", "zone_id": "Z-NORTH", "concept_id": "FLAGSHIP", "name": "Main St"},
        {"store_id": "50679791", "zone_id": None, "concept_id": "OUTLET", "name": None},
    ],
    "enrolments": [
        {"group_name": "Gold", "customer_id": 101, "target_name": None, "period_ref": None,
         "enrolled_at": datetime(2024, 10, 1, tzinfo=UTC), "unenrolled_at": None,
         "target_value": D("1.50"), "initial_balance": None},
        {"group_name": "Gold", "customer_id": 101, "target_name": "spend", "period_ref": "P1",
         "enrolled_at": None, "unenrolled_at": datetime(2024, 12, 31, 23, 59, tzinfo=UTC),
         "target_value": None, "initial_balance": D("25")},
    ],
}
ATTRIBUTES = {"points", "rating", "channel"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        # Offset-less in UTC where the value is in UTC: the workspace zone is UTC.
        return value.strftime("%Y-%m-%d %H:%M:%S") if value.utcoffset() == timedelta(0) \
            else value.isoformat()
    return str(value)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    lines = [",".join(cols)] + [",".join(_text(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    def native(v: Any) -> Any:
        if isinstance(v, Decimal):
            return float(v)  # a JSON number, as exporters write them
        if isinstance(v, datetime):
            return v.isoformat()
        return v

    out = []
    for r in rows:
        body = {k: native(v) for k, v in r.items() if k not in ATTRIBUTES}
        attrs = {k: native(v) for k, v in r.items() if k in ATTRIBUTES and v is not None}
        if attrs:
            body["attributes"] = attrs
        out.append(json.dumps(body))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    schema: dict[str, pl.DataType] = {}
    for c in rows[0]:
        sample = next((r[c] for r in rows if r[c] is not None), "")
        if isinstance(sample, Decimal):
            schema[c] = pl.Decimal(18, 4)
        elif isinstance(sample, datetime):
            schema[c] = pl.Datetime("us", "UTC")
        elif isinstance(sample, int):
            schema[c] = pl.Int64
        else:
            schema[c] = pl.String
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)


WRITERS = {"csv": write_csv, "parquet": write_parquet, "jsonl": write_jsonl}


def loaded(tmp_path: Path, kind: str, fmt: str) -> pl.DataFrame:
    con = workspace.connect(":memory:")
    if kind == "line-items":  # their transactions first
        base = tmp_path / "base_transactions.csv"
        write_csv(base, ROWS["transactions"])
        load_exports(con, "transactions", [str(base)])
    path = tmp_path / f"{kind}.{fmt}"
    WRITERS[fmt](path, ROWS[kind])
    report = load_exports(con, kind, [str(path)])
    assert report.rows_rejected == 0, con.sql("SELECT reason FROM rejects").fetchall()
    table = KINDS[kind].table
    frame = con.sql(f"SELECT * FROM {table}").pl()
    con.close()
    # Extra columns are added in the order a file first shows them (JSON attributes: the order
    # of their union), so compare by name.
    return frame.select(sorted(frame.columns)).sort(pl.all())


@pytest.mark.parametrize("kind", list(ROWS))
def test_csv_parquet_and_jsonl_give_identical_tables(tmp_path: Path, kind: str) -> None:
    csv = loaded(tmp_path, kind, "csv")
    assert csv.height == len(ROWS[kind])
    for fmt in ("parquet", "jsonl"):
        other = loaded(tmp_path, kind, fmt)
        assert dict(other.schema) == dict(csv.schema), fmt
        assert other.to_dicts() == csv.to_dicts(), fmt


def test_the_loaded_values_are_the_exported_ones(tmp_path: Path) -> None:
    frame = loaded(tmp_path, "transactions", "jsonl")
    b2 = frame.filter(pl.col("txn_id") == "B2").row(0, named=True)
    assert b2["amount"] == D("1200.1234")
    assert b2["gross_amount"] == D("1200.1234")  # default: amount
    assert b2["type"] == "REGULAR"
    assert b2["txn_time"] == datetime(2024, 3, 15, 20, tzinfo=UTC)  # 01:30 +05:30


# --- the bundled samples --------------------------------------------------------------------------

DATA = Path(__file__).resolve().parent.parent / "data"
ORDER = ("stores", "transactions", "line-items", "events", "points", "enrolments")


def _sample_files(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for kind in ORDER:
        stem = kind.replace("-", "_")
        found += [(kind, p) for p in sorted(folder.glob(f"{stem}*")) if p.is_file()]
    return found


@pytest.fixture(scope="module")
def samples() -> Any:
    con = workspace.connect(":memory:")
    reports = [load_exports(con, kind, [str(p)]) for kind, p in _sample_files(DATA / "exports")]
    yield con, reports
    con.close()


def test_every_sample_export_loads_without_rejects(samples: Any) -> None:
    _, reports = samples
    assert {r.kind for r in reports} == set(ORDER)
    assert [r.rows_rejected for r in reports] == [0] * len(reports)
    total = sum(r.rows_loaded for r in reports)
    assert 150 <= total <= 1000  # small enough for a fast demo


def test_the_samples_cover_what_the_sample_programmes_read(samples: Any) -> None:
    con, _ = samples

    def one(sql: str) -> Any:
        return con.execute(sql).fetchall()[0][0]

    # Seed streak: > 500 at the two filtered stores on 2023-11-17 and 2023-11-18..20.
    assert one("SELECT count(*) FROM transactions WHERE amount > 500 AND store_id IN "
               "('50679757', '50679770') AND txn_time::DATE = DATE '2023-11-17'") >= 2
    assert one("SELECT count(*) FROM transactions WHERE amount > 500 AND store_id IN "
               "('50679757', '50679770') AND txn_time::DATE BETWEEN DATE '2023-11-18' "
               "AND DATE '2023-11-20'") >= 2
    # spinTheWheel with a points attribute, 2024-10-08..11, and enrolments for both twins.
    assert one("SELECT count(*) FROM events WHERE event_name = 'spinTheWheel' AND points IS NOT "
               "NULL AND event_time::DATE BETWEEN DATE '2024-10-08' AND DATE '2024-10-11'") >= 4
    assert one("SELECT count(*) FROM enrolments WHERE group_name = 'UCCtesttarget2'") >= 2
    assert one("SELECT count(*) FROM enrolments WHERE group_name = 'UCCtesttarget2_user' "
               "AND target_value IS NOT NULL") >= 2
    # 2026 programmes up to 2026-11-22, returns with and without parents.
    assert one("SELECT max(txn_time)::DATE FROM transactions") <= datetime(2026, 11, 22).date()
    assert one("SELECT count(*) FROM transactions WHERE type = 'RETURN' "
               "AND parent_txn_id IS NOT NULL") >= 2
    assert one("SELECT count(*) FROM transactions WHERE type = 'RETURN' "
               "AND parent_txn_id IS NULL") >= 1
    assert one("SELECT count(DISTINCT category) FROM line_items") >= 3
    assert one("SELECT count(DISTINCT points_type) FROM points") == 2
    assert one("SELECT count(*) FROM stores WHERE zone_id IS NOT NULL "
               "AND concept_id IS NOT NULL") >= 4
    assert one("SELECT count(*) FROM events WHERE event_name = 'ProductReview' "
               "AND rating >= 1") >= 4
    # Leaderboard seed: TransactionAdd = regular bills in TP1/TP2 2024, with a cartId column.
    assert one("SELECT count(DISTINCT customer_id) FROM transactions WHERE type = 'REGULAR' AND "
               "cartId IS NOT NULL AND txn_time::DATE BETWEEN '2024-08-20' AND '2024-10-19'") >= 3
    assert one("SELECT count(*) FROM enrolments WHERE lower(trim(group_name)) = "
               "'welcome journey'") >= 2
    # Points rows of both types in the capping months, one month over the cap of 500.
    assert one("SELECT max(s) FROM (SELECT sum(points) s FROM points WHERE points_type = "
               "'PROMOTIONAL' GROUP BY customer_id, date_trunc('month', awarded_at))") > 500


def test_the_late_return_unachieves_a_period44_bill() -> None:
    con = workspace.connect(":memory:")
    load_exports(con, "transactions", [str(DATA / "exports" / "transactions.csv")])
    before = con.execute(
        "SELECT customer_id, sum(amount) FROM transactions WHERE txn_time::DATE = '2023-11-17' "
        "AND amount > 500 AND store_id IN ('50679757', '50679770') GROUP BY ALL"
    ).fetchall()
    late = DATA / "exports" / "late" / "transactions_late_returns.csv"
    report = load_exports(con, "transactions", [str(late)])
    assert (report.rows_rejected, report.rows_loaded) == (0, 1)
    (parent, amount), = con.execute(
        "SELECT parent_txn_id, abs(amount) FROM transactions r WHERE txn_id IN "
        "(SELECT txn_id FROM transactions WHERE type = 'RETURN' AND parent_txn_id IN "
        "(SELECT txn_id FROM transactions WHERE txn_time::DATE = '2023-11-17')) "
        "AND txn_time::DATE > '2023-11-20'"
    ).fetchall()
    (bill_customer, bill_amount), = con.execute(
        "SELECT customer_id, amount FROM transactions WHERE txn_id = ?", [parent]
    ).fetchall()
    assert (bill_customer, bill_amount) in before
    assert bill_amount >= 500 > bill_amount - amount  # achieved before, not after
    con.close()
