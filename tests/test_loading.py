"""Loading exports (SPEC §3, issue 4): upserts, rejects per reason, exact decimals, instants,
customer id types, extra columns, atomic commands."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import workspace
from pipeline.errors import InputError, UsageError
from pipeline.loading import load_exports

TXNS = """txn_id,customer_id,txn_time,amount,type,parent_txn_id,store_id,qty
T1,7,2026-11-03 10:00:00,120.50,REGULAR,,S1,2
T2,8,2026-11-04T10:00:00Z,60,REGULAR,,S2,1
T3,8,2026-11-05 09:00,-20,RETURN,T2,S2,-1
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load(con: duckdb.DuckDBPyConnection, kind: str, *paths: Path, tz: str = "UTC"):
    return load_exports(con, kind, [str(p) for p in paths], timezone=tz)


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def rejects(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return rows(con, "SELECT path, row_number, reason FROM rejects ORDER BY load_id, row_number")


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every export table and the load history, as text, for before/after comparisons."""
    tables = ["transactions", "line_items", "events", "points", "stores", "enrolments"]
    out = {t: rows(con, f"SELECT COLUMNS(*)::VARCHAR FROM {t} ORDER BY ALL") for t in tables}
    out["loads"] = rows(con, "SELECT load_id, kind, path, rows_loaded FROM loads ORDER BY ALL")
    out["rejects"] = rows(con, "SELECT load_id, row_number, reason FROM rejects ORDER BY ALL")
    return out


# --- upserts ----------------------------------------------------------------------------------


def test_loaded_rows_are_typed_and_defaults_applied(fresh_db, tmp_path):
    report = load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))
    assert (report.rows_loaded, report.rows_rejected) == (3, 0)
    got = rows(fresh_db, "SELECT txn_id, customer_id, amount, type, parent_txn_id, gross_amount, "
                         "discount, qty FROM transactions ORDER BY txn_id")
    assert got == [
        ("T1", 7, Decimal("120.5000"), "REGULAR", None, Decimal("120.5000"), Decimal("0.0000"),
         Decimal("2.0000")),
        ("T2", 8, Decimal("60.0000"), "REGULAR", None, Decimal("60.0000"), Decimal("0.0000"),
         Decimal("1.0000")),
        ("T3", 8, Decimal("-20.0000"), "RETURN", "T2", Decimal("-20.0000"), Decimal("0.0000"),
         Decimal("-1.0000")),
    ]
    assert rows(fresh_db, "SELECT kind, rows_read, rows_loaded, rows_rejected FROM loads") == [
        ("transactions", 3, 3, 0)
    ]


def test_reloading_a_file_changes_nothing(fresh_db, tmp_path):
    path = write(tmp_path, "t.csv", TXNS)
    load(fresh_db, "transactions", path)
    before = snapshot(fresh_db)
    load(fresh_db, "transactions", path)
    after = snapshot(fresh_db)
    assert after["transactions"] == before["transactions"]
    assert len(after["loads"]) == 2  # the second load is recorded all the same


def test_a_corrected_file_replaces_the_changed_rows_only(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))
    load(fresh_db, "transactions", write(tmp_path, "fix.csv", (
        "txn_id,customer_id,txn_time,amount\n"
        "T2,8,2026-11-04T10:00:00Z,65.25\n"
        "T4,9,2026-11-06 12:00:00,10\n"
    )))
    got = rows(fresh_db, "SELECT txn_id, amount, store_id FROM transactions ORDER BY txn_id")
    assert got == [
        ("T1", Decimal("120.5000"), "S1"),
        ("T2", Decimal("65.2500"), None),  # replaced as a whole: the new row has no store
        ("T3", Decimal("-20.0000"), "S2"),
        ("T4", Decimal("10.0000"), None),
    ]


def test_enrolments_upsert_matches_empty_target_and_period_and_group_case(fresh_db, tmp_path):
    first = write(tmp_path, "e1.csv", (
        "group_name,customer_id,target_name,period_ref,target_value\n"
        "Gold,7,,,100\n"
        "Gold,7,spend,P1,150\n"
    ))
    load(fresh_db, "enrolments", first)
    load(fresh_db, "enrolments", first)
    load(fresh_db, "enrolments", write(tmp_path, "e2.csv", (
        "group_name,customer_id,target_name,period_ref,target_value\n"
        " gold ,7,,,120\n"
    )))
    got = rows(fresh_db, "SELECT group_name, target_name, period_ref, target_value "
                         "FROM enrolments ORDER BY target_value")
    assert got == [(" gold ", None, None, Decimal("120.0000")), ("Gold", "spend", "P1",
                                                                  Decimal("150.0000"))]


def test_line_items_default_value_to_amount_and_key_on_txn_and_line(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))
    items = write(tmp_path, "li.csv", (
        "txn_id,line_no,item_code,qty,amount,value,category\n"
        "T1,1,SKU1,1,100.50,,Beauty\n"
        "T1,2,SKU2,1,20,25,Grocery\n"
        "T2,1,SKU1,1,60,,Beauty\n"
    ))
    load(fresh_db, "line-items", items)
    load(fresh_db, "line_items", items)  # the table's name works as a kind too
    got = rows(fresh_db, "SELECT txn_id, line_no, value, category FROM line_items ORDER BY ALL")
    assert got == [
        ("T1", 1, Decimal("100.5000"), "Beauty"),
        ("T1", 2, Decimal("25.0000"), "Grocery"),
        ("T2", 1, Decimal("60.0000"), "Beauty"),
    ]


# --- rejects: one test per reason ----------------------------------------------------------------

GOOD_TXN = "G1,1,2026-01-01 10:00:00,10,REGULAR,,S1,1\n"
TXN_HEAD = "txn_id,customer_id,txn_time,amount,type,parent_txn_id,store_id,qty\n"


@pytest.mark.parametrize(
    ("kind", "text", "row", "reason"),
    [
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,1,2026-01-01,ten,,,S1,1\n", 2,
                     "amount 'ten': wrong type, not a decimal number", id="wrong type decimal"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,1,2026-01-01,1e3,,,S1,1\n", 2,
                     "amount '1e3': wrong type, not a decimal number", id="exponent is not plain"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,1,31/01/2026,10,,,S1,1\n", 2,
                     "txn_time '31/01/2026': wrong type, not a timestamp",
                     id="wrong type timestamp"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,1,2026-02-30 10:00,10,,,S1,1\n", 2,
                     "txn_time '2026-02-30 10:00': wrong type", id="impossible date"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,,2026-01-01,10,,,S1,1\n", 2,
                     "customer_id: missing required value", id="missing customer"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,1,2026-01-01,10,SALE,,S1,1\n", 2,
                     "type 'SALE': unknown value, expected one of REGULAR, RETURN",
                     id="unknown txn type"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,1,2026-01-01,10,REGULAR,,S1,-2\n",
                     2, "qty '-2': negative qty on a regular transaction", id="negative qty"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "B1,1,2026-01-01,3.33333,,,S1,1\n", 2,
                     "amount '3.33333': more than 4 fractional digits (rejected, never rounded)",
                     id="five fractional digits"),
        pytest.param("transactions", TXN_HEAD + "G1,1,2026-01-01,10,,,S1,1\n"
                     "G1,1,2026-01-02,11,,,S1,1\n", 2,
                     "duplicate key within the file (txn_id); the first row with it was loaded",
                     id="duplicate key"),
        pytest.param("transactions", TXN_HEAD + GOOD_TXN + "R1,1,2026-01-02,5,RETURN,NOPE,S1,1\n",
                     2, "parent_txn_id 'NOPE': return whose parent_txn_id is unknown",
                     id="return with unknown parent"),
        pytest.param("points", "points_id,customer_id,awarded_at,points,points_type\n"
                     "P1,1,2026-01-01,10,promotional\nP2,1,2026-01-01,10,BONUS\n", 2,
                     "points_type 'BONUS': unknown value, expected one of REGULAR, PROMOTIONAL",
                     id="unknown points type"),
        pytest.param("line-items", "txn_id,line_no,qty,amount\nG1,1,1,10\nG1,1.5,1,10\n", 2,
                     "line_no '1.5': wrong type, not a whole number", id="wrong type integer"),
        pytest.param("line-items", "txn_id,line_no,qty,amount\nG1,1,1,10\nZZ,1,1,10\n", 2,
                     "txn_id 'ZZ': line item whose transaction is unknown", id="unknown txn"),
        pytest.param("line-items", "txn_id,line_no,qty,amount\nG1,1,1,10\nG1,2,-1,10\n", 2,
                     "qty '-1': negative qty on a line of a regular transaction",
                     id="negative line qty"),
        pytest.param("line-items", "txn_id,line_no,qty,amount\nG1,1,1,10\nG1,01,1,10\n", 2,
                     "duplicate key within the file (txn_id, line_no)", id="duplicate typed key"),
        pytest.param("events", "event_id,customer_id,event_name,event_time\n"
                     "E1,1,spin,2026-01-01\nE2,1,,2026-01-01\n", 2,
                     "event_name: missing required value", id="missing event name"),
        pytest.param("enrolments", "group_name,customer_id,target_value\nGold,1,100\n"
                     "Gold,2,100.00001\n", 2, "target_value '100.00001': more than 4 fractional",
                     id="enrolment target scale"),
    ],
)
def test_each_reject_reason_names_file_row_and_reason_and_good_rows_load(
    fresh_db, tmp_path, kind, text, row, reason
):
    load(fresh_db, "transactions", write(tmp_path, "base.csv", TXN_HEAD + GOOD_TXN))
    path = write(tmp_path, f"{kind}.csv", text)
    report = load(fresh_db, kind, path)
    assert report.rows_rejected == 1
    ((got_path, got_row, got_reason),) = [r for r in rejects(fresh_db) if r[0] == str(path)]
    assert (got_path, got_row) == (str(path), row)
    assert got_reason.startswith(reason), got_reason
    assert report.rows_loaded == text.count("\n") - 2  # every other row of the file is in


def test_a_row_with_several_problems_is_one_reject_listing_them_all(fresh_db, tmp_path):
    path = write(tmp_path, "t.csv", TXN_HEAD + GOOD_TXN + "B1,1,never,1.23456,SALE,,S1,-1\n")
    report = load(fresh_db, "transactions", path)
    ((_, row, reason),) = rejects(fresh_db)
    assert row == 2
    assert reason.split("; ") == [
        "txn_time 'never': wrong type, not a timestamp (like 2024-03-15 20:00:00 or "
        "2024-03-15T20:00:00Z)",
        "amount '1.23456': more than 4 fractional digits (rejected, never rounded)",
        "type 'SALE': unknown value, expected one of REGULAR, RETURN",
        "qty '-1': negative qty on a regular transaction",
    ]
    assert report.reasons["amount: more than 4 fractional digits (rejected, never rounded)"] == 1
    record = rows(fresh_db, "SELECT record FROM rejects")[0][0]
    assert '"amount":"1.23456"' in record and '"type":"SALE"' in record


def test_all_failing_rows_of_a_check_are_collected_and_counted(fresh_db, tmp_path):
    bad = "".join(f"B{i},1,2026-01-01,x{i},,,S1,1\n" for i in range(5))
    report = load(fresh_db, "transactions", write(tmp_path, "t.csv", TXN_HEAD + GOOD_TXN + bad))
    assert report.reasons == {"amount: wrong type, not a decimal number": 5}
    assert [r[1] for r in rejects(fresh_db)] == [2, 3, 4, 5, 6]
    assert report.rows_loaded == 1


def test_negative_qty_is_allowed_on_returns_and_their_lines(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))  # T3: a return, qty -1
    report = load(fresh_db, "line-items", write(tmp_path, "li.csv",
                                                "txn_id,line_no,qty,amount\nT3,1,-1,-20\n"))
    assert (report.rows_loaded, report.rows_rejected) == (1, 0)


def test_a_return_whose_parent_is_in_another_file_of_the_same_command_loads(fresh_db, tmp_path):
    returns = write(tmp_path, "a_returns.csv", TXN_HEAD + "R1,1,2026-01-05,5,RETURN,G9,S1,1\n")
    bills = write(tmp_path, "b_bills.csv", TXN_HEAD + "G9,1,2026-01-01,10,,,S1,1\n")
    report = load(fresh_db, "transactions", returns, bills)
    assert (report.rows_loaded, report.rows_rejected) == (2, 0)


def test_a_return_whose_parent_is_rejected_in_the_same_command_is_rejected(fresh_db, tmp_path):
    path = write(tmp_path, "t.csv", TXN_HEAD + "G9,1,2026-01-01,bad,,,S1,1\n"
                 "R1,1,2026-01-05,5,RETURN,G9,S1,1\n")
    load(fresh_db, "transactions", path)
    assert [(r[1], r[2].split(":")[0]) for r in rejects(fresh_db)] == [
        (1, "amount 'bad'"), (2, "parent_txn_id 'G9'")
    ]


def test_a_parentless_return_loads(fresh_db, tmp_path):
    report = load(fresh_db, "transactions",
                  write(tmp_path, "t.csv", TXN_HEAD + "R1,1,2026-01-05,-5,RETURN,,S1,\n"))
    assert report.rows_loaded == 1


# --- whole files refused ------------------------------------------------------------------------


def test_a_file_missing_a_required_column_refuses_the_whole_command(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))
    before = snapshot(fresh_db)
    good = write(tmp_path, "good.csv", TXN_HEAD + "N1,1,2026-01-01,10,,,S1,1\n")
    broken = write(tmp_path, "broken.csv", "txn_id,customer_id,txn_time\nN2,1,2026-01-01\n")
    with pytest.raises(InputError) as err:
        load(fresh_db, "transactions", good, broken)
    assert err.value.message == (
        f"{broken}: required column(s) amount missing (found: txn_id, customer_id, txn_time); "
        "nothing of this command was loaded: fix the export's header and load again"
    )
    assert snapshot(fresh_db) == before


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("t.csv", b'txn_id,amount\n"unterminated,1\n', id="bad quoting"),
        pytest.param("t.csv", b"", id="empty csv"),
        pytest.param("t.parquet", b"not parquet at all", id="not parquet"),
        pytest.param("t.jsonl", b'{"txn_id": "T1",\n', id="broken json"),
    ],
)
def test_an_unreadable_file_refuses_the_command(fresh_db, tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot read it as"):
        load(fresh_db, "transactions", path)
    assert rows(fresh_db, "SELECT count(*) FROM loads") == [(0,)]


def test_unknown_extension_kind_and_paths_are_clear_errors(fresh_db, tmp_path):
    with pytest.raises(InputError, match=r"unknown file type '\.txt'"):
        load(fresh_db, "transactions", write(tmp_path, "t.txt", TXNS))
    with pytest.raises(UsageError, match="unknown export kind 'sales'"):
        load(fresh_db, "sales", write(tmp_path, "t.csv", TXNS))
    with pytest.raises(InputError, match="no file matches"):
        load_exports(fresh_db, "transactions", [str(tmp_path / "nope*.csv")])
    with pytest.raises(InputError, match="does not exist"):
        load_exports(fresh_db, "transactions", [str(tmp_path / "nope.csv")])


def test_globs_load_every_matching_file_in_order(fresh_db, tmp_path):
    write(tmp_path, "t_1.csv", TXN_HEAD + "A,1,2026-01-01,1,,,S1,1\n")
    write(tmp_path, "t_2.csv", TXN_HEAD + "A,1,2026-01-01,2,,,S1,1\n")
    report = load_exports(fresh_db, "transactions", [str(tmp_path / "t_*.csv")])
    assert [Path(f.path).name for f in report.files] == ["t_1.csv", "t_2.csv"]
    assert rows(fresh_db, "SELECT amount FROM transactions") == [(Decimal("2.0000"),)]


# --- exact decimals and instants ------------------------------------------------------------------


def test_thirty_times_3_33_plus_0_10_is_exactly_100(fresh_db, tmp_path):
    lines = [f"T{i},42,2026-03-{1 + i % 28:02d} 10:00:00,3.33" for i in range(30)]
    lines.append("T99,42,2026-03-30 10:00:00,0.10")
    load(fresh_db, "transactions",
         write(tmp_path, "t.csv", "txn_id,customer_id,txn_time,amount\n" + "\n".join(lines)))
    total, reached = rows(fresh_db, "SELECT sum(amount), sum(amount) >= 100 FROM transactions "
                                    "WHERE customer_id = 42")[0]
    assert total == Decimal("100.0000")
    assert reached is True
    assert rows(fresh_db, "SELECT data_type FROM information_schema.columns "
                          "WHERE table_name = 'transactions' AND column_name = 'amount'") == [
        ("DECIMAL(18,4)",)
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.decimals(min_value=-10_000, max_value=10_000, places=4,
                            allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_sums_are_exact_whatever_the_values_and_their_order(tmp_path, values):
    con = workspace.connect(":memory:")
    body = "".join(f"T{i},1,2026-01-01 10:00:00,{v}\n" for i, v in enumerate(values))
    path = write(tmp_path, "t.csv", "txn_id,customer_id,txn_time,amount\n" + body)
    load(con, "transactions", path)
    assert rows(con, "SELECT sum(amount) FROM transactions")[0][0] == sum(values)
    con.close()


def test_three_spellings_of_one_instant_load_as_the_same_instant(fresh_db, tmp_path):
    path = write(tmp_path, "t.csv", (
        "txn_id,customer_id,txn_time,amount\n"
        "Z,1,2024-03-15T20:00:00Z,1\n"
        "OFFSET,1,2024-03-16T01:30:00+05:30,1\n"
        "LOCAL,1,2024-03-16 01:30:00,1\n"
    ))
    load(fresh_db, "transactions", path, tz="Asia/Kolkata")
    got = rows(fresh_db, "SELECT DISTINCT epoch(txn_time) FROM transactions")
    assert got == [(1710532800.0,)]  # 2024-03-15 20:00:00 UTC
    assert rows(fresh_db, "SELECT data_type FROM information_schema.columns WHERE "
                          "table_name = 'transactions' AND column_name = 'txn_time'") == [
        ("TIMESTAMP WITH TIME ZONE",)
    ]


def test_local_times_follow_the_zone_and_the_session_zone_is_restored(fresh_db, tmp_path):
    path = write(tmp_path, "t.csv", "txn_id,customer_id,txn_time,amount\nA,1,2024-07-01 12:00,1\n")
    before = rows(fresh_db, "SELECT current_setting('TimeZone')")
    load(fresh_db, "transactions", path, tz="Europe/Paris")  # CEST, UTC+2
    assert rows(fresh_db, "SELECT epoch(txn_time) FROM transactions") == [(1719828000.0,)]
    assert rows(fresh_db, "SELECT current_setting('TimeZone')") == before


# --- customer ids ---------------------------------------------------------------------------------


def test_text_customer_ids_turn_every_customer_id_column_to_text(fresh_db, tmp_path):
    load(fresh_db, "events", write(tmp_path, "e.csv", (
        "event_id,customer_id,event_name,event_time\nE1,C-007,spin,2026-01-01\n"
    )))
    types = rows(fresh_db, "SELECT DISTINCT data_type FROM information_schema.columns "
                           "WHERE column_name = 'customer_id'")
    assert types == [("VARCHAR",)]
    load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))  # integer ids read as text
    assert rows(fresh_db, "SELECT DISTINCT customer_id FROM transactions ORDER BY 1") == [
        ("7",), ("8",)
    ]


def test_leading_zeros_make_customer_ids_text(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv",
                                         "txn_id,customer_id,txn_time,amount\nA,007,2026-01-01,1\n"))
    assert rows(fresh_db, "SELECT customer_id FROM transactions") == [("007",)]


def test_text_ids_into_an_integer_workspace_are_a_clear_error_and_load_nothing(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))
    before = snapshot(fresh_db)
    path = write(tmp_path, "e.csv", "event_id,customer_id,event_name,event_time\n"
                                    "E1,8,spin,2026-01-01\nE2,C-9,spin,2026-01-01\n")
    with pytest.raises(InputError) as err:
        load(fresh_db, "events", path)
    assert err.value.message.startswith(
        f"{path} row 2: customer_id 'C-9' is text, but this workspace's customer ids were loaded "
        "as integers; nothing of this command was loaded"
    )
    assert snapshot(fresh_db) == before


# --- extra columns --------------------------------------------------------------------------------


def test_extra_columns_are_kept_numeric_ones_as_decimal(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv", (
        "txn_id,customer_id,txn_time,amount,Channel,tip,zip,weight\n"
        "A,1,2026-01-01,1,app,1.5,01234,0.123456\n"
        "B,1,2026-01-01,1,store,2,75001,1\n"
    )))
    types = dict(rows(fresh_db, "SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_name = 'transactions'"))
    assert {c: types[c] for c in ("Channel", "tip", "zip", "weight")} == {
        "Channel": "VARCHAR", "tip": "DECIMAL(18,4)", "zip": "VARCHAR", "weight": "VARCHAR"
    }
    # Later files: headers match case-insensitively; a DECIMAL column now checks its values.
    path = write(tmp_path, "t2.csv", "txn_id,customer_id,txn_time,amount,channel,TIP\n"
                                     "C,1,2026-01-01,1,kiosk,3.25\nD,1,2026-01-01,1,app,n/a\n")
    report = load(fresh_db, "transactions", path)
    assert report.reasons == {"tip: wrong type, not a decimal number": 1}
    assert rows(fresh_db, "SELECT txn_id, Channel, tip FROM transactions ORDER BY txn_id") == [
        ("A", "app", Decimal("1.5000")), ("B", "store", Decimal("2.0000")),
        ("C", "kiosk", Decimal("3.2500")),
    ]


def test_jsonl_attributes_are_flattened_into_columns(fresh_db, tmp_path):
    path = write(tmp_path, "e.jsonl", (
        '{"event_id": "E1", "customer_id": 1, "event_name": "spinTheWheel", '
        '"event_time": "2024-10-08T10:00:00Z", "attributes": {"points": 0.3, "wheel": "gold"}}\n'
        '{"event_id": "E2", "customer_id": 1, "event_name": "spinTheWheel", '
        '"event_time": "2024-10-08T11:00:00Z", "attributes": {"points": 0.7}}\n'
    ))
    load(fresh_db, "events", path)
    assert rows(fresh_db, "SELECT event_id, points, wheel FROM events ORDER BY 1") == [
        ("E1", Decimal("0.3000"), "gold"), ("E2", Decimal("0.7000"), None)
    ]
    assert rows(fresh_db, "SELECT sum(points) FROM events") == [(Decimal("1.0000"),)]


def test_an_attribute_clashing_with_a_column_refuses_the_file(fresh_db, tmp_path):
    path = write(tmp_path, "e.jsonl", (
        '{"event_id": "E1", "customer_id": 1, "event_name": "x", '
        '"event_time": "2024-10-08", "attributes": {"event_name": "y"}}\n'
    ))
    with pytest.raises(InputError, match=r"attributes\.event_name clashes with the column"):
        load(fresh_db, "events", path)


def test_progress_reports_each_step(fresh_db, tmp_path):
    seen: list[str] = []
    load_exports(fresh_db, "transactions", [str(write(tmp_path, "t.csv", TXNS))],
                 progress=seen.append)
    assert [s.split(": ", 1)[1] for s in seen] == [
        "reading", "3 rows read; converting", "validating", "writing 3 rows"
    ]


def test_frames_of_the_loaded_tables_keep_exact_types(fresh_db, tmp_path):
    load(fresh_db, "transactions", write(tmp_path, "t.csv", TXNS))
    frame = fresh_db.sql("SELECT amount, txn_time FROM transactions").pl()
    assert frame.schema["amount"] == pl.Decimal(18, 4)
    assert isinstance(frame.schema["txn_time"], pl.Datetime)
