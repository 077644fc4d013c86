"""`milestones explain CUSTOMER_ID --group NAME`: why a customer has (or lost) a reward.

Scores the one group for the one customer with the engine's own plans (`pipeline.scoring.trace`)
on that customer's records only, read from a read-only database, and lays out per window and
target the records that counted (contribution, running value, the record that reached the
target), the records that did not and why, and each reward's history from the ledger: which run
issued it, which revoked it, and which record took it back.

Attributing a revocation (docs/explain.md): the records are not stamped with the load that
brought them, so the revoking records are found from today's data: the returns counted in the
windows that are no longer achieved, those dated after the issuing run's as-of first, then the
latest first, as many as it takes for the value to reach the target again. Loads made between the
issuing and the revoking run are named as the likely source.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import polars as pl

from pipeline import registry
from pipeline.config import Config
from pipeline.definitions.model import Group
from pipeline.errors import InputError
from pipeline.progress import parse_customer
from pipeline.rewards import ledger
from pipeline.runs import SOURCE_TABLES
from pipeline.scoring.context import GroupContext
from pipeline.scoring.trace import REASONS, GroupTrace, TargetTrace, trace_group

# Which loads can bring the records a target measures (for naming a revocation's source).
LOAD_KINDS = {
    "TRANSACTION": ("transactions",),
    "LINEITEM": ("transactions", "line-items"),
    "EVENT": ("events", "transactions"),
    "REWARDS": ("points",),
}


# --------------------------------------------------------------------------------- reading


def customer_sources(
    con: duckdb.DuckDBPyConnection, customer: int | str
) -> dict[str, pl.LazyFrame]:
    """The exports restricted to one customer (and the bills their returns name, so that a
    return's parent is known exactly as in a full run); stores whole."""
    present = {
        r[0]
        for r in con.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
        ).fetchall()
    }
    txn = (
        "SELECT * FROM transactions WHERE customer_id = $c OR txn_id IN "
        "(SELECT parent_txn_id FROM transactions WHERE customer_id = $c)"
    )
    queries = {
        "transactions": txn,
        "line_items": f"SELECT * FROM line_items WHERE txn_id IN (SELECT txn_id FROM ({txn}))",
        "events": "SELECT * FROM events WHERE customer_id = $c",
        "points": "SELECT * FROM points WHERE customer_id = $c",
        "stores": "SELECT * FROM stores",
        "enrolments": "SELECT * FROM enrolments WHERE customer_id = $c",
    }
    out: dict[str, pl.LazyFrame] = {}
    for name in SOURCE_TABLES:
        if name not in present:
            out[name] = pl.LazyFrame()
            continue
        sql = queries[name]
        params = {"c": customer} if "$c" in sql else None
        table = con.sql(sql, params=params).to_arrow_table()
        out[name] = pl.from_arrow(table).lazy()  # type: ignore[union-attr]
    return out


def committed_runs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Runs that committed (their state is in the ledger), oldest first."""
    return con.sql(
        "SELECT run_id, as_of, started_at, finished_at, status FROM runs "
        "WHERE status IN ('SUCCEEDED', 'PARTIAL') ORDER BY started_at"
    ).pl()


def _group(con: duckdb.DuckDBPyConnection, name: str, config: Config) -> Group:
    groups = registry.load_groups(con, [name], include_inactive=True, config=config)
    con.complete()
    return groups[0]


# --------------------------------------------------------------------------------- explain


def explain(
    con: duckdb.DuckDBPyConnection,
    customer: str,
    group_name: str,
    *,
    config: Config,
    as_of: date | None = None,
    window: str | None = None,
) -> dict[str, Any]:
    """The explanation of one customer in one group, JSON-ready.

    Args:
        con: the workspace, opened read-only.
        customer: the id as typed on the command line.
        as_of: the day to explain as of (default: the latest committed run's as-of).
        window: only this window: its number, or its refCode (case-insensitive).

    Raises:
        InputError: unknown group, no run and no `as_of`, unknown window, or a customer with
            no record, window or reward in the group.
    """
    cid = parse_customer(con, customer)
    group = _group(con, group_name, config)
    runs = committed_runs(con)
    if as_of is None:
        if runs.is_empty():
            raise InputError(
                "no run has been committed in this workspace, so there is no as-of day to "
                "explain; give --as-of YYYY-MM-DD or run `milestones run` first"
            )
        latest = runs.row(-1, named=True)
        as_of, as_of_from = latest["as_of"], f"the latest run {latest['run_id']}"
    else:
        as_of_from = "--as-of"
    ctx = GroupContext(group=group, as_of=as_of, config=config, sources=customer_sources(con, cid))
    traced = trace_group(ctx)
    windows, loose = _windows(ctx, traced, cid)
    rewards = _rewards(con, ctx, traced, cid, runs)
    if not windows and not loose and not rewards:
        raise InputError(
            f"customer {customer} has no record, window or reward in group {group.name!r} as of "
            f"{as_of}; check the id and the group (`milestones progress {customer}`)"
        )
    if window is not None:
        windows = _pick_window(windows, window, group.name)
        loose = []
    return {
        "customer_id": cid,
        "group": {
            "group_id": group.group_id,
            "name": group.name,
            "tracking_type": group.tracking_type.value,
            "evaluation_type": group.evaluation_type.value,
            "active": group.active,
        },
        "as_of": as_of.isoformat(),
        "as_of_from": as_of_from,
        "time_zone": ctx.tz,
        "returns_mode": config.returns_mode,
        "windows": windows,
        "not_in_any_window": loose,
        "streak": _streak(traced, cid),
        "rewards": rewards,
    }


def _pick_window(windows: list[dict[str, Any]], wanted: str, group: str) -> list[dict[str, Any]]:
    key = wanted.strip().casefold()
    picked = [
        w
        for w in windows
        if str(w["period_index"]) == key or (w["ref_code"] or "").casefold() == key
    ]
    if not picked:
        known = ", ".join(_window_label(w) for w in windows) or "none"
        raise InputError(
            f"--window {wanted!r}: group {group!r} has no such window for this customer "
            f"(windows: {known}); give a window number or refCode"
        )
    return picked


# ------------------------------------------------------------------------------- windows


def _windows(
    ctx: GroupContext, traced: GroupTrace, cid: int | str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per window: its state and, per target, the counted and excluded records; and the records
    whose date falls in no window of this customer."""
    achievements = traced.score.achievements.filter(pl.col("customer_id") == cid)
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for row in achievements.sort("period_index").iter_rows(named=True):
        k = row["period_index"]
        seen.add(k)
        targets = [_target(ctx, t, cid, k) for t in traced.targets]
        out.append(
            _jsonable(
                {
                    **{c: row[c] for c in ("period_index", "ref_code", "window_start",
                                           "window_end", "status", "achieved", "achieved_at",
                                           "targets_achieved", "targets_total")},
                    "targets": [t for t in targets if t is not None],
                }
            )
        )
    loose: list[dict[str, Any]] = []
    for t in traced.targets:
        rows = t.excluded.filter(pl.col("_win").is_null() | ~pl.col("_win").is_in(list(seen)))
        loose += [{"target": t.target.name, **r} for r in _records(ctx, rows)]
    loose.sort(key=lambda r: (r["at"], r["record"], r["line"] or 0))
    return out, loose


def _target(ctx: GroupContext, t: TargetTrace, cid: int | str, k: int) -> dict[str, Any] | None:
    rows = t.progress.filter((pl.col("customer_id") == cid) & (pl.col("period_index") == k))
    if rows.is_empty():
        return None
    p = rows.row(0, named=True)
    counted = t.counted.filter((pl.col("_cust") == cid) & (pl.col("_win") == k))
    contributed = sum((r for r in counted["_contrib"].to_list()), Decimal(0))
    excluded = t.excluded.filter(pl.col("_win") == k)
    return {
        "target_id": t.target.target_id,
        "name": t.target.name,
        "entity": t.target.entity.value,
        "type": t.target.type.value,
        **{c: p[c] for c in ("value", "target_value", "achieved", "achieved_at",
                             "last_activity_at")},
        "opening_balance": (p["value"] - contributed) if p["value"] is not None else None,
        "counted": _records(ctx, counted),
        "excluded": _records(ctx, excluded),
    }


def _records(ctx: GroupContext, rows: pl.DataFrame) -> list[dict[str, Any]]:
    """Record rows of a trace as dicts, with local times and readable reasons."""
    if rows.is_empty():
        return []
    frame = rows.with_columns(ctx.local_naive(pl.col("_ts")).alias("_local"))
    out = []
    for r in frame.iter_rows(named=True):
        line = r["_k2"] if r["_k2"] else None
        rec: dict[str, Any] = {
            "record": r["_k1"],
            "line": line,
            "kind": r["_kind"],
            "parent": r["_parent"],
            "at": r["_local"],
        }
        if "_contrib" in r:
            rec |= {"contribution": r["_contrib"], "running": r["_running"],
                    "reached": bool(r["_reached"])}
        if "_reasons" in r:
            rec |= {"reasons": list(r["_reasons"]),
                    "why": [REASONS.get(c, c) for c in r["_reasons"]]}
        out.append(_jsonable(rec))
    return out


def _streak(traced: GroupTrace, cid: int | str) -> dict[str, Any] | None:
    frame = traced.score.extra.get("streak_progress")
    if frame is None or frame.is_empty():
        return None
    mine = frame.filter(pl.col("customer_id") == cid)
    if mine.is_empty():
        return None
    row = mine.row(0, named=True)
    return _jsonable({k: v for k, v in row.items() if k not in ("group_id", "customer_id")})


# ------------------------------------------------------------------------------- rewards


def _rewards(
    con: duckdb.DuckDBPyConnection,
    ctx: GroupContext,
    traced: GroupTrace,
    cid: int | str,
    runs: pl.DataFrame,
) -> list[dict[str, Any]]:
    """Every ledger reward of the customer in the group, with its history; plus rewards the
    engine finds earned as of D that the ledger does not hold yet."""
    g = ctx.group
    stored = con.sql(
        "SELECT * FROM rewards WHERE group_id = $g AND customer_id = $c ORDER BY kind, name, "
        "period_index",
        params={"g": g.group_id, "c": cid},
    ).pl()
    events = con.sql(
        "SELECT e.reward_id, e.action, e.run_id, e.event_at FROM reward_events e "
        "JOIN rewards r USING (reward_id) WHERE r.group_id = $g AND r.customer_id = $c "
        "ORDER BY e.event_at, e.action DESC",
        params={"g": g.group_id, "c": cid},
    ).pl()
    loads = con.sql("SELECT load_id, kind, path, loaded_at FROM loads ORDER BY load_id").pl()
    earned_parts = [f for f in traced.score.rewards if f.height]
    earned = ledger.with_reward_ids(
        pl.concat(earned_parts, how="vertical_relaxed") if earned_parts else pl.DataFrame()
    )
    earned = earned.filter(pl.col("customer_id") == cid) if earned.height else earned
    now = {r["reward_id"]: r for r in earned.iter_rows(named=True)}
    run_info = {r["run_id"]: r for r in runs.iter_rows(named=True)}
    out: list[dict[str, Any]] = []
    for r in stored.iter_rows(named=True):
        rid = r["reward_id"]
        history = []
        evs = events.filter(pl.col("reward_id") == rid).to_dicts()
        for i, e in enumerate(evs):
            run = run_info.get(e["run_id"], {})
            item: dict[str, Any] = {
                "action": e["action"],
                "run_id": e["run_id"],
                "run_as_of": run.get("as_of"),
                "at": e["event_at"],
            }
            if e["action"] == ledger.REVOKED:
                issued = next((x for x in reversed(evs[:i]) if x["action"] == ledger.ISSUED), None)
                latest = i == len(evs) - 1
                item |= _cause(ctx, traced, cid, r, issued, e, run_info, loads,
                               current=latest and rid not in now)
            history.append(item)
        current = now.get(rid)
        entry = {
            **{k: r[k] for k in ("reward_id", "kind", "name", "period_index", "ref_code",
                                 "value", "target_value", "achieved_at", "status",
                                 "issued_run_id", "revoked_run_id")},
            "earned_as_of": current is not None,
            "earned_now_in": _window_key(current) if current else None,
            "history": history,
        }
        out.append(_jsonable(entry))
    for rid, e in now.items():
        if rid not in set(stored["reward_id"].to_list() if stored.height else []):
            out.append(_jsonable({
                **{k: e[k] for k in ("reward_id", "kind", "name", "period_index", "ref_code",
                                     "value", "target_value", "achieved_at")},
                "status": None, "issued_run_id": None, "revoked_run_id": None,
                "earned_as_of": True, "earned_now_in": _window_key(e), "history": [],
            }))
    return out


def _window_key(row: Mapping[str, Any]) -> str:
    return row["ref_code"] or f"#{row['period_index']}"


def _cause(
    ctx: GroupContext,
    traced: GroupTrace,
    cid: int | str,
    reward: Mapping[str, Any],
    issued: Mapping[str, Any] | None,
    revoked: Mapping[str, Any],
    run_info: Mapping[str, Mapping[str, Any]],
    loads: pl.DataFrame,
    *,
    current: bool,
) -> dict[str, Any]:
    """Which records took the reward back (see the module docstring for the attribution)."""
    if not current:
        return {"because": [], "note": "re-issued later or earned again as of this day: the "
                "records that caused this revocation no longer keep the reward away"}
    issued_run = run_info.get(issued["run_id"], {}) if issued else {}
    revoking_run = run_info.get(revoked["run_id"], {})
    issued_as_of = issued_run.get("as_of")
    between = loads
    if issued_run.get("started_at") is not None:
        between = between.filter(pl.col("loaded_at") > issued_run["started_at"])
    if revoking_run.get("started_at") is not None:
        between = between.filter(pl.col("loaded_at") < revoking_run["started_at"])
    because: list[dict[str, Any]] = []
    for t, k in _broken(traced, cid, reward):
        p = t.progress.filter((pl.col("customer_id") == cid) & (pl.col("period_index") == k))
        if p.is_empty():
            continue
        value, target_value = p["value"][0], p["target_value"][0]
        returns = t.counted.filter(
            (pl.col("_cust") == cid) & (pl.col("_win") == k) & (pl.col("_kind") == "RETURN")
        ).with_columns(ctx.local_date(pl.col("_ts")).alias("_date"))
        late = (
            pl.col("_date") > pl.lit(issued_as_of) if issued_as_of else pl.lit(False)
        ).alias("_late")
        ranked = returns.with_columns(late).sort(
            ["_late", "_ts", "_k1", "_k2"], descending=True
        )
        restored = value
        picked = []
        for row in ranked.iter_rows(named=True):
            if target_value is not None and restored >= target_value:
                break
            restored -= row["_contrib"]
            picked.append(row)
        kinds = LOAD_KINDS.get(t.target.entity.value, ())
        sources = between.filter(pl.col("kind").is_in(list(kinds))).to_dicts()
        for row in picked:
            rec = _records(ctx, pl.DataFrame([row]).select(
                "_k1", "_k2", "_kind", "_parent", "_ts", "_contrib", "_running", "_reached"))[0]
            because.append(_jsonable({
                **rec,
                "target": t.target.name,
                "window": _window_key({"ref_code": p["ref_code"][0], "period_index": k}),
                "value": value,
                "target_value": target_value,
                "dated_after_issuing_as_of": row["_late"],
                "loads_between_runs": [
                    {"load_id": s["load_id"], "kind": s["kind"], "path": s["path"],
                     "loaded_at": s["loaded_at"]} for s in sources
                ],
            }))
    note = None
    if not because:
        note = ("no counted return explains it: a record was corrected or removed, or the "
                "definition or as-of day differs from the issuing run")
    return {"because": because, "note": note}


def _broken(
    traced: GroupTrace, cid: int | str, reward: Mapping[str, Any]
) -> list[tuple[TargetTrace, int]]:
    """(target, window) pairs the reward needed that are not achieved now."""
    kind = reward["kind"]
    if kind == ledger.STREAK_LEVEL:
        windows = sorted(
            set(
                traced.score.achievements.filter(
                    (pl.col("customer_id") == cid) & ~pl.col("achieved")
                )["period_index"].to_list()
            )
        )
        targets = traced.targets
    else:
        windows = [reward["period_index"]]
        targets = (
            [t for t in traced.targets if t.target.name == reward["name"]]
            if kind == "TARGET_ACHIEVED"
            else traced.targets
        )
    pairs = []
    for t in targets:
        for k in windows:
            p = t.progress.filter((pl.col("customer_id") == cid) & (pl.col("period_index") == k))
            if p.height and not p["achieved"][0]:
                pairs.append((t, k))
    return pairs


# -------------------------------------------------------------------------------- render


def render(report: Mapping[str, Any]) -> list[str]:
    """The explanation as lines a programme manager reads top to bottom."""
    g = report["group"]
    state = "" if g["active"] else ", deactivated"
    lines = [
        f"Customer {report['customer_id']} in {g['name']!r} ({g['tracking_type']}, "
        f"{g['evaluation_type']}{state})",
        f"as of {report['as_of']} ({report['as_of_from']}); times in {report['time_zone']}; "
        f"returns.mode {report['returns_mode']}",
    ]
    many = len(report["windows"][0]["targets"]) > 1 if report["windows"] else False
    for w in report["windows"]:
        got = "ACHIEVED" if w["achieved"] else "not achieved"
        if many:
            got += f" ({w['targets_achieved']} of {w['targets_total']} targets)"
        lines += ["", f"Window {_window_label(w)} {_span(w)} {w['status']}: {got}"]
        for t in w["targets"]:
            verdict = "achieved" if t["achieved"] else "not achieved"
            lines.append(f"  target {t['name']!r} ({t['entity']} {t['type']}): value "
                         f"{t['value']} of {t['target_value']}, {verdict}")
            if t["opening_balance"] not in (None, "0"):
                lines.append(f"    opening balance {t['opening_balance']}")
            if t["counted"]:
                lines.append("    counted:")
                lines += [f"      {_counted(r)}" for r in t["counted"]]
            else:
                lines.append("    counted: none")
            if t["excluded"]:
                lines.append("    not counted:")
                lines += [f"      {_excluded(r)}" for r in t["excluded"]]
    if report["not_in_any_window"]:
        lines += ["", "Records in no window of this customer:"]
        lines += [f"  {r['target']}: {_excluded(r)}" for r in report["not_in_any_window"]]
    s = report["streak"]
    if s:
        nxt = (f"next level {s['next_level_name']!r} at {s['next_level_count']}"
               if s.get("next_level_name") else "every level achieved")
        lines += ["", f"Streak: current {s['current_count']}, longest {s['longest_count']}, "
                      f"{s['levels_achieved']} level(s) achieved, {nxt}"]
    lines += ["", "Rewards:" if report["rewards"] else "Rewards: none"]
    for r in report["rewards"]:
        lines += _reward_lines(r)
    return lines


def _reward_lines(r: Mapping[str, Any]) -> list[str]:
    where = "" if r["kind"] == ledger.STREAK_LEVEL else f" in window {_window_label(r)}"
    status = r["status"] or "not in the ledger yet"
    lines = [f"  {r['kind']} {r['name']!r}{where}: {status}"]
    for h in r["history"]:
        verb = "issued" if h["action"] == ledger.ISSUED else "revoked"
        lines.append(f"    {verb} by run {h['run_id']} (as of {h['run_as_of']}) at {h['at']}")
        for b in h.get("because", []):
            line = "" if not b["line"] else f" line {b['line']}"
            parent = f" of bill {b['parent']}" if b["parent"] else ""
            lines.append(
                f"      because of return {b['record']}{line}{parent} at {b['at']} "
                f"({b['contribution']}) in window {b['window']}: {b['target']} is now "
                f"{b['value']} of {b['target_value']}"
            )
            if b["dated_after_issuing_as_of"]:
                lines.append("        dated after the issuing run's as-of day")
            for s in b["loads_between_runs"]:
                lines.append(f"        {s['kind']} loaded between the two runs: load "
                             f"{s['load_id']} {s['path']} at {s['loaded_at']}")
        if h.get("note"):
            lines.append(f"      {h['note']}")
    if r["status"] == ledger.ISSUED and not r["earned_as_of"]:
        lines.append("    not earned as of this day: the next run would revoke it")
    elif r["status"] is None:
        lines.append("    earned as of this day: the next run would issue it")
    elif r["earned_as_of"] and r["kind"] == ledger.STREAK_LEVEL:
        lines.append(f"    reached now in window {r['earned_now_in']}")
    return lines


def _counted(r: Mapping[str, Any]) -> str:
    mark = "  <- target reached" if r["reached"] else ""
    sign = "" if r["contribution"].startswith("-") else "+"
    return (f"{r['at']}  {_label(r)}  {sign}{r['contribution']}  running "
            f"{r['running']}{mark}")


def _excluded(r: Mapping[str, Any]) -> str:
    return f"{r['at']}  {_label(r)}  ({'; '.join(r['why'])})"


def _label(r: Mapping[str, Any]) -> str:
    line = f" line {r['line']}" if r["line"] else ""
    if r["kind"] == "RETURN":
        of = f" of bill {r['parent']}" if r["parent"] else ""
        return f"return {r['record']}{line}{of}"
    return f"{r['record']}{line}"


def _window_label(w: Mapping[str, Any]) -> str:
    ref = w.get("ref_code")
    return f"{ref} (#{w['period_index']})" if ref else f"#{w['period_index']}"


def _span(w: Mapping[str, Any]) -> str:
    start = (w["window_start"] or "")[:10]
    end = (w["window_end"] or "open")[:10]
    return f"{start}..{end}"


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in row.items()}


def _value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v.normalize(), "f")
    if isinstance(v, datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return _jsonable(v)
    return v

