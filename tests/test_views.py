"""Analyst views (sql/views): each applies to a fresh database and answers on small tables."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipeline import workspace

VIEWS = workspace.view_files()


def test_there_are_views() -> None:
    assert {p.stem for p in VIEWS} >= {"current_progress", "rewards_per_window",
                                       "streak_distribution"}


@pytest.mark.parametrize("path", VIEWS, ids=[p.stem for p in VIEWS])
def test_view_file_applies_to_a_fresh_database_and_is_documented(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("-- One row per"), "the header says what one row means"
    assert re.search(rf"CREATE OR REPLACE VIEW {path.stem} AS", text), "named after its file"
    con = duckdb.connect()
    try:
        for ddl in workspace.ddl_files():
            con.execute(ddl[1].read_text(encoding="utf-8"))
        con.execute(text)
        assert con.sql(f"SELECT count(*) FROM {path.stem}").fetchall() == [(0,)]
    finally:
        con.close()


@pytest.fixture
def db(fresh_db: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Two groups, a few customers' progress, streaks, rewards and one run."""
    fresh_db.execute("""
        INSERT INTO target_groups (group_id, name, tracking_type, evaluation_type, active,
            user_created, leaderboard_enabled, combination_type, combination_count,
            streak_continuous, definition, created_at)
        VALUES (1, 'Spend', 'DEFAULT', 'FIXED_CALENDAR_WINDOW', true, false, true, 'ALL', 1,
                true, '{}', now()),
               (2, 'Streak', 'STREAK', 'FIXED_CALENDAR_WINDOW', true, false, false, 'ALL', 1,
                true, '{}', now());
        INSERT INTO targets (group_id, target_id, name, target_entity, target_type,
            enrolment_method) VALUES (1, 11, 'spend', 'TRANSACTION', 'SALES', 'TRANSACTION');
        INSERT INTO target_progress (group_id, target_id, customer_id, period_index, ref_code,
            window_start, window_end, status, value, target_value, achieved, run_id)
        VALUES (1, 11, 7, 1, 'OCT', '2026-10-01', '2026-10-31 23:59:59', 'ENDED', 120, 100,
                true, 'r1'),
               (1, 11, 7, 2, 'NOV', '2026-11-01', '2026-11-30 23:59:59', 'RUNNING', 40, 100,
                false, 'r1'),
               (1, 11, 8, 1, 'OCT', '2026-10-01', '2026-10-31 23:59:59', 'ENDED', 10, 100,
                false, 'r1');
        INSERT INTO period_achievements (group_id, customer_id, period_index, ref_code,
            status, achieved, targets_achieved, targets_total)
        VALUES (1, 7, 1, 'OCT', 'ENDED', true, 1, 1), (1, 8, 1, 'OCT', 'ENDED', false, 0, 1);
        INSERT INTO streak_progress (group_id, customer_id, current_count, longest_count,
            levels_achieved) VALUES (2, 7, 2, 3, 1), (2, 8, 2, 2, 1), (2, 9, 0, 2, 1);
        INSERT INTO rewards (reward_id, kind, group_id, group_name, name, customer_id,
            period_index, ref_code, status, issued_run_id, revoked_run_id)
        VALUES ('a', 'TARGET_ACHIEVED', 1, 'Spend', 'spend', 7, 1, 'OCT', 'ISSUED', 'r1', NULL),
               ('b', 'TARGET_ACHIEVED', 1, 'Spend', 'spend', 8, 1, 'OCT', 'REVOKED', 'r1',
                'r2');
        INSERT INTO reward_events VALUES ('r1', 'b', 'ISSUED', '2026-11-02'),
                                         ('r2', 'b', 'REVOKED', '2026-11-03');
        INSERT INTO runs (run_id, started_at, finished_at, status, as_of, groups, awards,
            revocations) VALUES ('r2', '2026-11-03 01:00:00+00', '2026-11-03 01:00:30+00',
            'SUCCEEDED', '2026-11-02', ['Spend'], 0, 1);
        INSERT INTO leaderboard (group_id, target_id, period_index, customer_id, value, rank)
        VALUES (1, 11, 1, 7, 120, 1), (1, 11, 1, 8, 10, 11);
        INSERT INTO capping (group_id, target_id, customer_id, period_index, earned, cap,
            allowed, excess) VALUES (2, 21, 7, 1, 600, 500, 500, 100),
                                    (2, 21, 8, 1, 100, 500, 100, 0);
    """)
    return fresh_db


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    return con.sql(sql).fetchall()


def test_current_progress_is_the_latest_started_window(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT customer_id, ref_code, status, value, pct_of_target "
                    "FROM current_progress ORDER BY customer_id") == [
        (7, "NOV", "RUNNING", Decimal("40.0000"), Decimal("40.0")),
        (8, "OCT", "ENDED", Decimal("10.0000"), Decimal("10.0")),
    ]


def test_rewards_per_window_counts_standing_and_revoked(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT group_name, ref_code, issued, revoked, customers "
                    "FROM rewards_per_window") == [("Spend", "OCT", 1, 1, 2)]


def test_achievement_rates(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT ref_code, customers, achieved, pct_achieved "
                    "FROM achievement_rates") == [("OCT", 2, 1, Decimal("50.0"))]


def test_streak_distribution_counts_current_and_longest(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT length, customers_current, customers_longest "
                    "FROM streak_distribution ORDER BY length") == [(0, 1, 0), (2, 2, 2),
                                                                  (3, 0, 1)]


def test_leaderboard_top10_stops_at_rank_10(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT target_name, rank, customer_id FROM leaderboard_top10") == [
        ("spend", 1, 7)
    ]


def test_capping_summary(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT customers, customers_capped, earned, allowed, excess "
                    "FROM capping_summary") == [(2, 1, Decimal("700.0000"), Decimal("600.0000"),
                                                 Decimal("100.0000"))]


def test_reward_history_names_the_runs(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT customer_id, action, run_id, as_of FROM reward_history "
                    "ORDER BY event_at") == [
        (8, "ISSUED", "r1", None),
        (8, "REVOKED", "r2", date(2026, 11, 2)),
    ]


def test_run_history_has_duration(db: duckdb.DuckDBPyConnection) -> None:
    assert rows(db, "SELECT run_id, seconds, groups, folder FROM run_history") == [
        ("r2", 30.0, 1, None)
    ]


def test_views_survive_the_switch_to_text_customer_ids(
    fresh_db: duckdb.DuckDBPyConnection,
) -> None:
    workspace.set_customer_id_type(fresh_db, "VARCHAR")
    names = {r[0] for r in rows(fresh_db, "SELECT view_name FROM duckdb_views() "
                                          "WHERE NOT internal")}
    assert names == {p.stem for p in VIEWS}
