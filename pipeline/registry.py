"""Registered target groups in DuckDB: register, list, show, deactivate, and load for scoring.

The only module of the definitions area that touches the database. A group is written in one
transaction (group, periods, targets with their `_ReturnBill` legs, streak levels, default
values), so a failure never leaves half a group. Ids come from the `definition_ids` sequence
and are read back, never recomputed, so `groups show` gives the same ids every time.

`load_groups` re-reads each stored body with the same parser that validated it, then puts the
stored ids and periods on it: the engine sees exactly what was registered, even if the org's
time zone changed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from pipeline.config import Config
from pipeline.definitions import model
from pipeline.definitions.envelope import envelope, to_json
from pipeline.definitions.parse import (
    NAME_TAKEN,
    ParsedGroup,
    Problem,
    TargetDef,
    effective_values,
    parse_group,
)
from pipeline.definitions.periods import today_in, window_status
from pipeline.errors import DefinitionError, InputError


@dataclass(frozen=True)
class Outcome:
    """What became of one body: its envelope, and whether it was (or would be) registered."""

    source: str  # "groups.json" or "groups.json[2]" for an element of a list
    parsed: ParsedGroup
    envelope: dict[str, Any]
    registered: bool

    @property
    def ok(self) -> bool:
        return self.parsed.ok


def register_bodies(
    con: duckdb.DuckDBPyConnection,
    bodies: Iterable[tuple[str, Any]],
    *,
    config: Config,
    as_of: date | None = None,
) -> list[Outcome]:
    """Validate and register each `(source, body)`; bad ones are reported, good ones kept.

    Args:
        as_of: the date period statuses are computed for (default: today in the group's zone).
    """
    return _process(con, bodies, config=config, as_of=as_of, write=True)


def validate_bodies(
    con: duckdb.DuckDBPyConnection,
    bodies: Iterable[tuple[str, Any]],
    *,
    config: Config,
    as_of: date | None = None,
) -> list[Outcome]:
    """Like `register_bodies` without writing: names clash with registered groups and with
    earlier valid bodies of the same batch, exactly as `register_bodies` would find."""
    return _process(con, bodies, config=config, as_of=as_of, write=False)


def _process(
    con: duckdb.DuckDBPyConnection,
    bodies: Iterable[tuple[str, Any]],
    *,
    config: Config,
    as_of: date | None,
    write: bool,
) -> list[Outcome]:
    outcomes = []
    batch: set[str] = set()
    for source, body in bodies:
        parsed = parse_group(body, config=config)
        key = _name_key(parsed.name)
        if key and (key in batch or _find_by_name(con, key) is not None):
            parsed = parsed.with_errors([Problem(
                NAME_TAKEN, "name",
                f"a group named {parsed.name!r} is already registered; choose another name "
                "(names are compared trimmed and case-insensitively)",
            )])
        registered = False
        if parsed.ok:
            batch.add(key)
            if write:
                parsed = _insert(con, parsed, as_of or _today(parsed))
                registered = True
        day = as_of or _today(parsed)
        outcomes.append(Outcome(source, parsed, envelope(parsed, as_of=day), registered))
    return outcomes


def _today(parsed: ParsedGroup) -> date:
    return today_in(ZoneInfo(parsed.zone))


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The first row or None; fetchall, because duckdb 2.0 keeps a half-read result open."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def _name_key(name: str | None) -> str:
    return name.strip().lower() if name else ""


def _next_id(con: duckdb.DuckDBPyConnection) -> int:
    return int(_one(con, "SELECT nextval('definition_ids')")[0])


def _insert(con: duckdb.DuckDBPyConnection, parsed: ParsedGroup, as_of: date) -> ParsedGroup:
    """Write one valid group in one transaction and return it with its ids."""
    group = parsed.group
    assert group is not None
    con.execute("BEGIN TRANSACTION")
    try:
        with_ids = _assign_ids(con, parsed)
        _write_rows(con, with_ids, as_of)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return with_ids


def _assign_ids(con: duckdb.DuckDBPyConnection, parsed: ParsedGroup) -> ParsedGroup:
    group = parsed.group
    assert group is not None
    gid = _next_id(con)
    periods = tuple(replace(p, period_id=_next_id(con)) for p in group.periods)
    group = replace(group, group_id=gid, periods=periods)
    defs = []
    for d in parsed.target_defs:
        tid = _next_id(con)
        n_values = len(effective_values(group, d.target))
        value_ids = tuple(_next_id(con) for _ in range(n_values))
        leg_id, leg_value_ids = None, ()
        if d.has_return_leg:
            leg_id = _next_id(con)
            leg_value_ids = tuple(_next_id(con) for _ in range(n_values))
        target = replace(d.target, target_id=tid, return_target_id=leg_id)
        defs.append(replace(d, target=target, value_ids=value_ids, leg_value_ids=leg_value_ids))
    levels = tuple(replace(level, streak_id=_next_id(con)) for level in group.streak_levels)
    group = replace(
        group,
        targets=tuple(d.target for d in defs if d.active),
        streak_levels=levels,
    )
    return replace(parsed, group=group, target_defs=tuple(defs))


def _write_rows(con: duckdb.DuckDBPyConnection, parsed: ParsedGroup, as_of: date) -> None:
    g = parsed.group
    assert g is not None
    con.execute(
        "INSERT INTO target_groups (group_id, name, tracking_type, evaluation_type, "
        "frequency_type, frequency, recurring_cycles, total_periods, time_zone, active, "
        "user_created, leaderboard_enabled, combination_type, combination_count, "
        "streak_continuous, definition, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            g.group_id, g.name, g.tracking_type.value, g.evaluation_type.value,
            g.frequency_type.value if g.frequency_type else None, g.frequency,
            g.recurring_cycles, g.total_periods, g.time_zone, g.active, g.user_created,
            g.leaderboard_enabled, g.combination_type, g.combination_count,
            g.streak_continuous, to_json(parsed.body, indent=None),
        ],
    )
    for p in g.periods:
        con.execute(
            "INSERT INTO target_periods (group_id, period_id, period_index, ref_code, "
            "start_date, end_date, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [g.group_id, p.period_id, p.index, p.ref_code, p.start, p.end,
             window_status(p.start, p.end, as_of).value],
        )
    for d in parsed.target_defs:
        t = d.target
        legs = [(t.target_id, t.name, t.event_name, None, d.value_ids)]
        if d.has_return_leg:
            legs.append((t.return_target_id, d.leg_name, "ReturnBill", t.target_id,
                         d.leg_value_ids))
        for tid, name, event, parent, value_ids in legs:
            con.execute(
                "INSERT INTO targets (group_id, target_id, name, target_entity, target_type, "
                "event_name, expression, enrolment_method, parent_target_id, active) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [g.group_id, tid, name, t.entity.value, t.type.value, event, t.expression,
                 t.enrolment_method.value, parent, d.active],
            )
            for k, (vid, value) in enumerate(zip(value_ids, effective_values(g, t),
                                                 strict=True), start=1):
                period_id = g.periods[k - 1].period_id if k <= len(g.periods) else None
                con.execute(
                    "INSERT INTO target_default_values (group_id, target_id, value_index, "
                    "value_id, period_id, default_value) VALUES (?, ?, ?, ?, ?, ?)",
                    [g.group_id, tid, k, vid, period_id, value],
                )
    for level in g.streak_levels:
        con.execute(
            "INSERT INTO streak_levels (group_id, streak_id, name, target_count_of_sequence) "
            "VALUES (?, ?, ?, ?)",
            [g.group_id, level.streak_id, level.name, level.count],
        )


# ---------------------------------------------------------------------------------------------
# Reading back


def _find_by_name(con: duckdb.DuckDBPyConnection, key: str) -> int | None:
    row = _one(
        con,
        "SELECT group_id FROM target_groups WHERE lower(trim(name)) = ? ORDER BY group_id LIMIT 1",
        [key],
    )
    return int(row[0]) if row else None


def find_group(con: duckdb.DuckDBPyConnection, ref: str) -> int:
    """The id of the group named `ref` (trimmed, case-insensitive), or whose id is `ref`.

    Raises:
        InputError: no such group.
    """
    gid = _find_by_name(con, _name_key(ref))
    if gid is None and ref.strip().isdigit():
        row = _one(
            con, "SELECT group_id FROM target_groups WHERE group_id = ?", [int(ref.strip())]
        )
        gid = int(row[0]) if row else None
    if gid is None:
        raise InputError(
            f"no registered group named {ref.strip()!r}; see `milestones groups list` for the "
            "names and ids"
        )
    return gid


def list_groups(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One summary row per registered group, in registration order."""
    rel = con.sql(
        "SELECT g.group_id, g.name, g.tracking_type, g.evaluation_type, g.active, "
        "(SELECT count(*) FROM target_periods p WHERE p.group_id = g.group_id) AS periods, "
        "(SELECT count(*) FROM targets t WHERE t.group_id = g.group_id "
        " AND t.parent_target_id IS NULL AND t.active) AS targets, "
        # As text: fetching a TIMESTAMPTZ into Python needs pytz, which is not a dependency.
        "strftime(timezone('UTC', g.created_at), '%Y-%m-%dT%H:%M:%SZ') AS created_at "
        "FROM target_groups g ORDER BY g.group_id"
    )
    columns = rel.columns
    return [dict(zip(columns, row, strict=True)) for row in rel.fetchall()]


def show_group(
    con: duckdb.DuckDBPyConnection, ref: str, *, config: Config, as_of: date | None = None
) -> dict[str, Any]:
    """The envelope of a registered group (by name or id), statuses as of `as_of` or today."""
    parsed = _rehydrate(con, find_group(con, ref), config)
    return envelope(parsed, as_of=as_of or _today(parsed))


def deactivate_group(con: duckdb.DuckDBPyConnection, ref: str) -> tuple[int, str, bool]:
    """Mark a group inactive so runs skip it; returns (group_id, name, whether it was active).

    The group, its ids and its outputs stay: deactivating is not deleting, and the name stays
    taken (310069) so that rewards keep pointing at one programme.
    """
    gid = find_group(con, ref)
    row = _one(con, "SELECT name, active FROM target_groups WHERE group_id = ?", [gid])
    assert row is not None
    if row[1]:
        con.execute("UPDATE target_groups SET active = false WHERE group_id = ?", [gid])
    return gid, str(row[0]), bool(row[1])


def load_groups(
    con: duckdb.DuckDBPyConnection,
    names: list[str] | None = None,
    *,
    include_inactive: bool = False,
    config: Config,
) -> list[model.Group]:
    """The registered groups as typed definitions with their real ids, for the engine.

    Args:
        names: only these groups (trimmed, case-insensitive); None for all.
        include_inactive: also deactivated groups (a named one is an error otherwise).

    Raises:
        InputError: a name that is not registered, or names a deactivated group.
    """
    if names is None:
        sql = "SELECT group_id FROM target_groups"
        if not include_inactive:
            sql += " WHERE active"
        ids = [int(r[0]) for r in con.execute(sql + " ORDER BY group_id").fetchall()]
    else:
        ids = []
        for name in names:
            gid = _find_by_name(con, _name_key(name))
            if gid is None:
                raise InputError(f"no registered group named {name.strip()!r}; see "
                                 "`milestones groups list`")
            row = _one(con, "SELECT active FROM target_groups WHERE group_id = ?", [gid])
            if not include_inactive and not (row and row[0]):
                raise InputError(f"group {name.strip()!r} is deactivated; register it again "
                                 "under a new name to score it")
            if gid not in ids:
                ids.append(gid)
    groups = []
    for gid in ids:
        group = _rehydrate(con, gid, config).group
        assert group is not None
        groups.append(group)
    return groups


def _rehydrate(con: duckdb.DuckDBPyConnection, gid: int, config: Config) -> ParsedGroup:
    """A stored group: its body re-read by the parser, with the stored ids, periods and state."""
    row = _one(
        con, "SELECT name, active, definition FROM target_groups WHERE group_id = ?", [gid]
    )
    if row is None:
        raise InputError(f"no registered group with id {gid}")
    name, active, definition = row
    body = json.loads(definition, parse_float=Decimal)
    parsed = parse_group(body, config=config, org_checks=False)
    group = parsed.group
    if group is None:
        raise DefinitionError(
            f"registered group {name!r} (id {gid}) no longer validates: "
            + "; ".join(p.as_dict()["message"] for p in parsed.errors),
            [p.as_dict() for p in parsed.errors],
        )
    periods = tuple(
        model.Period(index=int(i), start=s, end=e, ref_code=ref, period_id=int(pid),
                     description=_period_description(group, int(i)))
        for pid, i, ref, s, e in con.execute(
            "SELECT period_id, period_index, ref_code, start_date, end_date FROM target_periods "
            "WHERE group_id = ? ORDER BY period_index", [gid]
        ).fetchall()
    )
    stored = con.execute(
        "SELECT target_id, parent_target_id FROM targets WHERE group_id = ? ORDER BY target_id",
        [gid],
    ).fetchall()
    user_ids = [int(t) for t, parent in stored if parent is None]
    leg_of = {int(parent): int(t) for t, parent in stored if parent is not None}
    values: dict[int, list[int]] = {}
    for tid, vid in con.execute(
        "SELECT target_id, value_id FROM target_default_values WHERE group_id = ? "
        "ORDER BY target_id, value_index", [gid]
    ).fetchall():
        values.setdefault(int(tid), []).append(int(vid))
    if len(user_ids) != len(parsed.target_defs):
        raise DefinitionError(f"registered group {name!r} (id {gid}) has {len(user_ids)} stored "
                              f"targets but its definition has {len(parsed.target_defs)}")
    defs: list[TargetDef] = []
    for d, tid in zip(parsed.target_defs, user_ids, strict=True):
        leg = leg_of.get(tid)
        target = replace(d.target, target_id=tid, return_target_id=leg)
        defs.append(replace(d, target=target, value_ids=tuple(values.get(tid, [])),
                            leg_value_ids=tuple(values.get(leg, [])) if leg else ()))
    level_ids = {
        str(n).lower(): int(sid)
        for sid, n in con.execute(
            "SELECT streak_id, name FROM streak_levels WHERE group_id = ?", [gid]
        ).fetchall()
    }
    levels = tuple(
        replace(level, streak_id=level_ids.get(level.name.lower(), 0))
        for level in group.streak_levels
    )
    group = replace(
        group,
        group_id=gid,
        active=bool(active),
        periods=periods if group.evaluation_type is model.EvaluationType.FIXED else (),
        targets=tuple(d.target for d in defs if d.active),
        streak_levels=levels,
    )
    return replace(parsed, group=group, target_defs=tuple(defs))


def _period_description(group: model.Group, index: int) -> str | None:
    for p in group.periods:
        if p.index == index:
            return p.description
    return None
