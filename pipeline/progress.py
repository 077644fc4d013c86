"""`milestones progress CUSTOMER_ID`: where one customer stands in every group, as data.

Read from the last run's tables (nothing is scored here), for a programme manager answering
"why didn't I get my reward?": each window's value against its target, the streak count and
next level, the leaderboard rank, and every reward issued or revoked with the run that did it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import polars as pl

from pipeline.errors import InputError
from pipeline.workspace import customer_id_type


def parse_customer(con: duckdb.DuckDBPyConnection, text: str) -> int | str:
    """The id as the workspace stores it: an integer unless text ids were loaded."""
    kind = customer_id_type(con)
    con.complete()  # customer_id_type leaves a half-read result; duckdb 2.0 then refuses con.sql
    if kind != "BIGINT":
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError(
            f"customer id {text!r} is not an integer, and this workspace's ids are integers"
        ) from None


def customer_progress(
    con: duckdb.DuckDBPyConnection, customer: str, groups: Sequence[str] = ()
) -> dict[str, Any]:
    """One customer's standing per group, JSON-ready (decimals and timestamps as text).

    Args:
        customer: the id as typed on the command line.
        groups: only these groups (trimmed, case-insensitive); all when empty.

    Raises:
        InputError: an unknown group name, or a customer with nothing in any group.
    """
    cid = parse_customer(con, customer)
    group_rows = _frame(con, "SELECT group_id, name, tracking_type, evaluation_type, active "
                             "FROM target_groups ORDER BY group_id")
    if groups:
        wanted = {g.strip().casefold() for g in groups}
        known = {n.strip().casefold() for n in group_rows["name"]}
        missing = sorted(wanted - known)
        if missing:
            raise InputError(f"no registered group named {', '.join(map(repr, missing))}; "
                             "see `milestones groups list`")
        group_rows = group_rows.filter(
            pl.col("name").str.strip_chars().str.to_lowercase().is_in(list(wanted))
        )
    ids = group_rows["group_id"].to_list()
    p = {"c": cid, "ids": ids}
    progress = _frame(
        con,
        "SELECT tp.group_id, tp.period_index, tp.ref_code, tp.window_start, tp.window_end, "
        "tp.status, t.name AS target, tp.value, tp.target_value, tp.achieved, tp.achieved_at, "
        "tp.last_activity_at FROM target_progress tp LEFT JOIN targets t USING (target_id) "
        "WHERE tp.customer_id = $c AND list_contains($ids, tp.group_id) "
        "ORDER BY tp.group_id, tp.window_start, tp.period_index, t.name",
        p,
    )
    periods = _frame(
        con,
        "SELECT group_id, period_index, achieved, achieved_at, targets_achieved, targets_total "
        "FROM period_achievements WHERE customer_id = $c AND list_contains($ids, group_id)",
        p,
    )
    streaks = _frame(
        con,
        "SELECT group_id, current_count, longest_count, levels_achieved, next_level_name, "
        "next_level_count FROM streak_progress "
        "WHERE customer_id = $c AND list_contains($ids, group_id)",
        p,
    )
    ranks = _frame(
        con,
        "SELECT group_id, period_index, rank, value FROM leaderboard "
        "WHERE customer_id = $c AND list_contains($ids, group_id)",
        p,
    )
    rewards = _frame(
        con,
        "SELECT group_id, kind, name, period_index, ref_code, value, target_value, achieved_at, "
        "status, issued_run_id, revoked_run_id FROM rewards "
        "WHERE customer_id = $c AND list_contains($ids, group_id) "
        "ORDER BY group_id, achieved_at, kind, name",
        p,
    )
    out_groups = []
    for g in group_rows.iter_rows(named=True):
        gid = g["group_id"]
        windows = _windows(progress.filter(pl.col("group_id") == gid),
                           periods.filter(pl.col("group_id") == gid),
                           ranks.filter(pl.col("group_id") == gid))
        streak = streaks.filter(pl.col("group_id") == gid).drop("group_id").to_dicts()
        mine = rewards.filter(pl.col("group_id") == gid).drop("group_id").to_dicts()
        if not (windows or streak or mine):
            continue
        out_groups.append({
            "group_id": gid,
            "group_name": g["name"],
            "tracking_type": g["tracking_type"],
            "evaluation_type": g["evaluation_type"],
            "active": g["active"],
            "windows": windows,
            "streak": _jsonable(streak[0]) if streak else None,
            "rewards": [_jsonable(r) for r in mine],
        })
    if not out_groups:
        scope = "the groups asked for" if groups else "any group"
        raise InputError(
            f"customer {customer} has no progress, streak or reward in {scope}; check the id, "
            "or run `milestones run` first"
        )
    return {"customer_id": cid, "groups": out_groups}


def _windows(progress: pl.DataFrame, periods: pl.DataFrame, ranks: pl.DataFrame
             ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for (index,), rows in progress.group_by("period_index", maintain_order=True):
        first = rows.row(0, named=True)
        period = periods.filter(pl.col("period_index") == index).to_dicts()
        rank = ranks.filter(pl.col("period_index") == index)["rank"].to_list()
        window = {k: first[k] for k in ("period_index", "ref_code", "window_start",
                                        "window_end", "status")}
        if period:
            window |= {k: period[0][k] for k in ("achieved", "achieved_at", "targets_achieved",
                                                 "targets_total")}
        window["leaderboard_rank"] = rank[0] if rank else None
        window["targets"] = [
            _jsonable({k: r[k] for k in ("target", "value", "target_value", "achieved",
                                         "achieved_at", "last_activity_at")})
            for r in rows.iter_rows(named=True)
        ]
        out.append(_jsonable(window))
    return out


def render(report: dict[str, Any]) -> list[str]:
    """The report as lines for a terminal."""
    lines = [f"Customer {report['customer_id']}"]
    for g in report["groups"]:
        state = "" if g["active"] else ", deactivated"
        lines.append(f"\n{g['group_name']} ({g['tracking_type']}, {g['evaluation_type']}{state})")
        for w in g["windows"]:
            key = w["ref_code"] or f"#{w['period_index']}"
            got = "achieved" if w.get("achieved") else "not achieved"
            rank = f", rank {w['leaderboard_rank']}" if w["leaderboard_rank"] else ""
            lines.append(f"  {key} {_day(w['window_start'])}..{_day(w['window_end'])} "
                         f"{w['status']}: {got}{rank}")
            for t in w["targets"]:
                mark = "ok" if t["achieved"] else "  "
                lines.append(f"    [{mark}] {t['target']}: {_num(t['value'])} of "
                             f"{_num(t['target_value'])}")
        s = g["streak"]
        if s:
            nxt = (f"next level {s['next_level_name']} at {s['next_level_count']}"
                   if s["next_level_name"] else "every level achieved")
            lines.append(f"  streak: current {s['current_count']}, longest "
                         f"{s['longest_count']}, {nxt}")
        for r in g["rewards"]:
            by = (f"revoked by run {r['revoked_run_id']}" if r["status"] == "REVOKED"
                  else f"issued by run {r['issued_run_id']}")
            where = r["ref_code"] or (f"#{r['period_index']}" if r["period_index"] else "")
            lines.append(f"  reward {r['status']}: {r['kind']} {r['name']} {where} ({by})")
    return lines


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None
           ) -> pl.DataFrame:
    return con.sql(sql, params=params).pl()


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in row.items()}


def _value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v.normalize(), "f")  # 120.0000 -> "120", 12.5000 -> "12.5"
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return _jsonable(v)
    return v


def _day(ts: str | None) -> str:
    return ts[:10] if ts else "open"


def _num(v: str | None) -> str:
    return "-" if v is None else v
