"""`milestones simulate FILE...`: backtest group bodies that are not registered (SPEC §14).

The bodies are validated with the same parser as `groups create` and scored by the same engine
as `run`, on the loaded exports, as of a day or over a range; nothing is written: the caller
opens the database read-only. Per window and streak level the report gives how many customers
would achieve, the distribution of value / target value (deciles, so that a manager can pick the
target a chosen share reaches) and the rewards a first run would issue, side by side for each
target scale.

A target scale multiplies every target value a customer can be held to: the targets'
`defaultValues` and the `target_value` of `enrolments` rows (a capping group's cap too); not
opening balances, not streak level lengths. Scaled values are rounded half-to-even to 4 decimals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline import runs
from pipeline.config import Config
from pipeline.definitions.model import EvaluationType, Group
from pipeline.definitions.parse import parse_group, read_bodies
from pipeline.errors import DefinitionError, GroupsFailedError, UsageError
from pipeline.rewards.ledger import STREAK_LEVEL
from pipeline.scoring import engine
from pipeline.scoring.context import DEC

FOUR = Decimal("0.0001")
DECILES = tuple(range(10, 100, 10))


def parse_scales(text: str | None) -> list[Decimal]:
    """``"0.8,1.0,1.2"`` -> the scales, in the order given; default ``[1]``.

    Raises:
        UsageError: a scale that is not a positive number with at most 4 decimals.
    """
    if text is None or not text.strip():
        return [Decimal(1)]
    out: list[Decimal] = []
    for part in text.split(","):
        try:
            value = Decimal(part.strip())
        except InvalidOperation:
            value = Decimal(-1)
        if not value.is_finite() or value <= 0 or value != value.quantize(FOUR):
            raise UsageError(
                f"--target-scale: {part.strip()!r} is not a positive number with at most 4 "
                "decimals; give a list such as 0.8,1.0,1.2"
            )
        if value not in out:
            out.append(value)
    return out


def load_bodies(paths: Sequence[Path], config: Config) -> tuple[list[Group], list[str]]:
    """Validate every body of every file; all problems at once (like `groups validate`).

    Groups get negative ids (never a registered group's) and targets and levels 1, 2, ...

    Returns:
        the groups, and the warnings as ``source: message`` lines.

    Raises:
        DefinitionError: any body with errors; the message names file, field path and code.
    """
    groups: list[Group] = []
    warnings: list[str] = []
    problems: list[dict[str, str]] = []
    for path in paths:
        for source, body in read_bodies(path):
            parsed = parse_group(body, config=config)
            warnings += [f"{source}: {w.as_dict()['message']}" for w in parsed.warnings]
            if not parsed.ok or parsed.group is None:
                problems += [
                    {"code": str(p.code), "message": f"{source}: {p.as_dict()['message']}"}
                    for p in parsed.errors
                ]
                continue
            groups.append(_with_ids(parsed.group, -(len(groups) + 1)))
    if problems:
        detail = "; ".join(f"{p['message']} ({p['code']})" for p in problems)
        raise DefinitionError(
            f"{len(problems)} problem(s) in the group files, nothing simulated: {detail}. "
            "Fix them (`milestones groups validate FILE` lists them) and try again",
            problems,
        )
    return groups, warnings


def _with_ids(group: Group, group_id: int) -> Group:
    return replace(
        group,
        group_id=group_id,
        targets=tuple(replace(t, target_id=i) for i, t in enumerate(group.targets, 1)),
        streak_levels=tuple(replace(s, streak_id=i) for i, s in enumerate(group.streak_levels, 1)),
    )


def scale_value(value: Decimal, scale: Decimal) -> Decimal:
    """`value` x `scale`, rounded half-to-even to 4 decimals (as `scale_sources` does)."""
    return (value * scale).quantize(FOUR, rounding=ROUND_HALF_EVEN)


def scale_group(group: Group, scale: Decimal) -> Group:
    """The group with every target's `defaultValues` scaled."""
    return replace(
        group,
        targets=tuple(
            replace(t, default_values=tuple(scale_value(v, scale) for v in t.default_values))
            for t in group.targets
        ),
    )


def scale_sources(sources: Mapping[str, pl.LazyFrame], scale: Decimal) -> dict[str, pl.LazyFrame]:
    """The sources with `enrolments.target_value` scaled (half-to-even, 4 decimals)."""
    out = dict(sources)
    enrol = sources.get("enrolments")
    if enrol is not None and "target_value" in enrol.collect_schema().names():
        exact = pl.col("target_value").cast(pl.Decimal(38, 8)) * pl.lit(scale)
        out["enrolments"] = enrol.with_columns(
            exact.round(4, mode="half_to_even").cast(DEC).alias("target_value")
        )
    return out


@dataclass(frozen=True)
class Scored:
    """One scale's outcome: the scoped tables and earned rewards, and the failed groups."""

    progress: pl.DataFrame
    achievements: pl.DataFrame
    rewards: pl.DataFrame
    failures: dict[str, str]


def score_scale(
    sources: Mapping[str, pl.LazyFrame],
    groups: list[Group],
    scale: Decimal,
    as_of: date,
    from_date: date | None,
    config: Config,
) -> Scored:
    """Score the scaled groups and keep what a run with the same dates would keep."""
    result = engine.score(
        scale_sources(sources, scale), [scale_group(g, scale) for g in groups], as_of, config
    )
    ok = [g for g in groups if g.name not in result.failures]
    scope = runs.Scope.build(ok, from_date, as_of)
    progress = result.tables.get("target_progress", pl.DataFrame())
    achievements = result.tables.get("period_achievements", pl.DataFrame())
    keys = scope.customer_windows([progress, achievements, result.rewards])
    return Scored(
        progress=scope.select(progress, keys),
        achievements=scope.select(achievements, keys),
        rewards=scope.select(result.rewards, keys),
        failures=dict(result.failures),
    )


def simulate(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[Path],
    *,
    config: Config,
    as_of: date | None = None,
    from_date: date | None = None,
    to_date: date | None = None,
    scales: Sequence[Decimal] = (Decimal(1),),
) -> dict[str, Any]:
    """Backtest the group bodies in `paths` on the loaded exports; JSON-ready report.

    Args:
        con: the workspace, opened read-only (nothing here writes).
        as_of: score as of this day (default: yesterday in org.timezone, as `run`).
        from_date, to_date: score as of `to_date`, reporting windows overlapping the range.
        scales: target scales, reported side by side.

    Raises:
        UsageError: --as-of with --from/--to, or only one of them.
        DefinitionError: invalid bodies.
    """
    runs.RunRequest(as_of=as_of, from_date=from_date, to_date=to_date).validate()
    day = to_date or as_of or runs.default_as_of(config)
    groups, warnings = load_bodies(paths, config)
    sources = runs.read_sources(con)
    scored = {s: score_scale(sources, groups, s, day, from_date, config) for s in scales}
    return {
        "as_of": day.isoformat(),
        "from_date": from_date.isoformat() if from_date else None,
        "to_date": to_date.isoformat() if to_date else None,
        "scales": [str(s) for s in scales],
        "warnings": warnings,
        "groups": [_group_report(g, scored) for g in groups],
    }


def raise_for_failures(report: Mapping[str, Any]) -> None:
    """`GroupsFailedError` (exit 3, as `run`) naming each group that could not be scored."""
    failed = {
        g["name"]: next(iter(g["failures"].values())) for g in report["groups"] if g["failures"]
    }
    if failed:
        detail = "; ".join(f"{name}: {msg}" for name, msg in sorted(failed.items()))
        raise GroupsFailedError(
            f"{len(failed)} group(s) could not be scored and have no figures above: {detail}"
        )


# ------------------------------------------------------------------------------- summaries


def _group_report(group: Group, scored: Mapping[Decimal, Scored]) -> dict[str, Any]:
    per_customer = group.evaluation_type is not EvaluationType.FIXED
    windows: dict[int, dict[str, Any]] = {}
    for scale, s in scored.items():
        label = str(scale)
        mine = _of(s.progress, group)
        present = []
        for (k,), rows in mine.group_by("period_index") if mine.height else []:
            w = windows.setdefault(k, _window_head(group, int(k), rows, per_customer))
            present.append(w)
            for t in group.targets:
                trows = rows.filter(pl.col("target_id") == t.target_id)
                w["targets"].setdefault(t.name, {"name": t.name, "by_scale": {}})
                w["targets"][t.name]["by_scale"][label] = _target_stats(trows)
        ach = _of(s.achievements, group)
        rew = _of(s.rewards, group)
        # A window that no customer has at this scale (a later cycle) has no column here.
        for w in present:
            k = w["period_index"]
            a = ach.filter(pl.col("period_index") == k) if ach.height else ach
            r = rew.filter((pl.col("period_index") == k) & (pl.col("kind") != STREAK_LEVEL)) \
                if rew.height else rew
            w["achieved"][label] = int(a["achieved"].sum()) if a.height else 0
            w["rewards"][label] = _kinds(r)
    levels = []
    for level in group.streak_levels:
        by_scale = {}
        for scale, s in scored.items():
            rew = _of(s.rewards, group)
            got = rew.filter((pl.col("kind") == STREAK_LEVEL) & (pl.col("name") == level.name)) \
                if rew.height else rew
            by_scale[str(scale)] = got.height
        levels.append({"name": level.name, "count": level.count, "achieving": by_scale})
    totals = {str(scale): _kinds(_of(s.rewards, group)) for scale, s in scored.items()}
    failures = {str(scale): s.failures[group.name] for scale, s in scored.items()
                if group.name in s.failures}
    ordered = [
        {**w, "targets": list(w["targets"].values())} for _, w in sorted(windows.items())
    ]
    return {
        "name": group.name,
        "tracking_type": group.tracking_type.value,
        "evaluation_type": group.evaluation_type.value,
        "windows": ordered,
        "levels": levels,
        "rewards": totals,
        "failures": failures,
    }


def _of(frame: pl.DataFrame, group: Group) -> pl.DataFrame:
    return frame.filter(pl.col("group_id") == group.group_id) if frame.height else frame


def _window_head(group: Group, k: int, rows: pl.DataFrame, per_customer: bool) -> dict[str, Any]:
    first = rows.row(0, named=True)
    return {
        "period_index": k,
        "ref_code": first["ref_code"],
        # Per-customer windows (cycles) have no common dates or status.
        "window_start": None if per_customer else _value(first["window_start"])[:10],
        "window_end": None if per_customer else _value(first["window_end"])[:10],
        "status": None if per_customer else first["status"],
        "targets": {},
        "achieved": {},
        "rewards": {},
    }


def _target_stats(rows: pl.DataFrame) -> dict[str, Any]:
    """Customers, achievers, the target value(s) and deciles of value / target value."""
    n = rows.height
    achieving = int(rows["achieved"].sum()) if n else 0
    values = rows["target_value"].drop_nulls()
    low, high = (values.min(), values.max()) if values.len() else (None, None)
    ratios = (
        rows.filter(pl.col("target_value") > 0)
        .select((pl.col("value").cast(DEC) / pl.col("target_value").cast(DEC)).alias("r"))
        .get_column("r")
        .sort()
    )
    m = ratios.len()
    # Nearest rank: the q-th percentile is the ceil(q·m/100)-th smallest ratio.
    deciles = (
        {f"p{q}": _num(ratios[max((q * m + 99) // 100 - 1, 0)]) for q in DECILES} if m else {}
    )
    return {
        "customers": n,
        "achieving": achieving,
        "share": _num((Decimal(achieving) / Decimal(n)).quantize(FOUR)) if n else None,
        "target_value": _num(low) if low == high else None,
        "target_value_range": None if low == high else [_num(low), _num(high)],
        "without_target": n - m,
        "value_over_target": deciles,
    }


def _kinds(rewards: pl.DataFrame) -> dict[str, int]:
    if rewards.is_empty():
        return {}
    counts = rewards.group_by("kind").len().sort("kind")
    return {k: int(v) for k, v in counts.iter_rows()}


def _num(v: Decimal | None) -> str | None:
    if v is None:
        return None
    return format(Decimal(v).normalize(), "f")


def _value(v: Any) -> str:
    return "" if v is None else str(v)


# --------------------------------------------------------------------------------- render


def render(report: Mapping[str, Any]) -> list[str]:
    """Side-by-side columns per scale, per group, window, target and level."""
    scales = report["scales"]
    span = (
        f"windows overlapping {report['from_date']}..{report['to_date']}"
        if report["from_date"]
        else "every window started by then"
    )
    lines = [
        f"Simulation as of {report['as_of']} ({span}); {len(report['groups'])} group(s), "
        f"target scale {' / '.join('x' + s for s in scales)}",
        "Read only: the ledger, the output tables and the run files are untouched.",
    ]
    lines += [f"warning: {w}" for w in report["warnings"]]
    head = _row("", ["x" + s for s in scales])
    for g in report["groups"]:
        lines += ["", f"{g['name']!r} ({g['tracking_type']}, {g['evaluation_type']})"]
        for scale, msg in g["failures"].items():
            lines.append(f"  FAILED at x{scale}: {msg}")
        if not g["windows"]:
            lines.append("  no window has started for any customer")
        for w in g["windows"]:
            where = (f" {w['window_start']}..{w['window_end']} {w['status']}"
                     if w["window_start"] else " (per-customer cycle)")
            ref = f"{w['ref_code']} " if w["ref_code"] else ""
            lines += ["", f"  window {ref}#{w['period_index']}{where}", head]
            for t in w["targets"]:
                lines += _target_rows(t, scales)
            if len(w["targets"]) > 1:
                lines.append(_row("window achieved", [w["achieved"].get(s, 0) for s in scales]))
            kinds = sorted({k for s in scales for k in w["rewards"].get(s, {})})
            for kind in kinds:
                lines.append(_row(f"rewards {kind}",
                                  [w["rewards"].get(s, {}).get(kind, 0) for s in scales]))
        if g["levels"]:
            lines += ["", "  streak levels", head]
            for lv in g["levels"]:
                lines.append(_row(f"{lv['name']} ({lv['count']})",
                                  [lv["achieving"].get(s, 0) for s in scales]))
        kinds = sorted({k for s in scales for k in g["rewards"].get(s, {})})
        lines += ["", "  rewards a first run would issue", head]
        if not kinds:
            lines.append(_row("none", ["0" for _ in scales]))
        for kind in kinds:
            lines.append(_row(kind, [g["rewards"].get(s, {}).get(kind, 0) for s in scales]))
    return lines


def _target_rows(t: Mapping[str, Any], scales: Sequence[str]) -> list[str]:
    stats = [t["by_scale"].get(s) or {} for s in scales]
    rows = [
        _row(f"{t['name']}: target value", [_target_text(x) for x in stats]),
        _row("customers", [x.get("customers", 0) for x in stats]),
        _row("achieving", [x.get("achieving", 0) for x in stats]),
        _row("share achieving", [_pct(x.get("share")) for x in stats]),
    ]
    for q in DECILES:
        rows.append(_row(f"value/target p{q}",
                         [_pct(x.get("value_over_target", {}).get(f"p{q}")) for x in stats]))
    return rows


def _target_text(stats: Mapping[str, Any]) -> str:
    if stats.get("target_value") is not None:
        return str(stats["target_value"])
    rng = stats.get("target_value_range")
    return f"{rng[0]}-{rng[1]}" if rng else "-"


def _pct(text: str | None) -> str:
    if text is None:
        return "-"
    return f"{(Decimal(text) * 100).quantize(Decimal(1))}%"


def _row(label: str, cells: Sequence[Any]) -> str:
    return f"    {label:<34}" + "".join(f"{c!s:>12}" for c in cells)
