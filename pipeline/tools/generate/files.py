"""Whole generations: frames for tests, or a loadable folder whose manifest bench reuses."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import InputError, UsageError
from pipeline.tools.generate.groups import enrolments, programme
from pipeline.tools.generate.options import Options
from pipeline.tools.generate.people import customers, stores
from pipeline.tools.generate.records import CHUNK_ROWS, generate_blocks, plan

Progress = Callable[[str], None]

FORMATS = ("parquet", "csv")
# File stem -> `milestones load` kind, in the order they must be loaded.
KIND_FILES = {
    "stores": "stores",
    "transactions": "transactions",
    "line_items": "line-items",
    "events": "events",
    "points": "points",
    "enrolments": "enrolments",
}
RECORD_TABLES = ("transactions", "line_items", "events", "points")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Generated:
    """A generated folder: its files per kind in load order, group files, row counts."""

    folder: Path
    options: Options
    files: dict[str, list[Path]]  # load kind -> files
    groups: list[Path]
    rows: dict[str, int]  # table -> rows
    seconds: float = 0.0
    config: Path | None = None

    @property
    def records(self) -> int:
        """Transactions, line items, events and points: what scoring reads."""
        return sum(self.rows.get(t, 0) for t in RECORD_TABLES)

    @property
    def as_of(self) -> date:
        """The last generated day: the natural `run --as-of`."""
        return self.options.last_day

    def load_commands(self, db: Path | None = None) -> list[str]:
        """The shell commands that load this folder, in order (with ``--db db`` if given).

        A kind written in several files is loaded one file per command, in a shell loop: one
        `load` command is all or nothing, so it holds every file it is given in memory (the
        50 line-item files of 50 M transactions went past 24 GiB)."""
        milestones = _milestones(db)
        commands = []
        for kind, paths in self.files.items():
            if len(paths) == 1:
                commands.append(f"{milestones} load {kind} {shlex.quote(str(paths[0]))}")
                continue
            files = " ".join(shlex.quote(str(p)) for p in paths)
            commands.append(f'for f in {files}; do {milestones} load {kind} "$f" || break; done')
        return commands


def generate_frames(opts: Options, block_rows: int = CHUNK_ROWS
                    ) -> tuple[dict[str, pl.DataFrame], list[dict[str, Any]]]:
    """Every export as one frame (table name -> frame) and the programme's group bodies: for
    tests and small sizes; `generate` writes block by block instead."""
    store_frame = stores(opts)
    people = customers(opts, store_frame)
    bodies = programme(opts, store_frame)
    parts: dict[str, list[pl.DataFrame]] = {t: [] for t in RECORD_TABLES}
    for _, frames in generate_blocks(opts, block_rows):
        for table, frame in frames.items():
            parts[table].append(frame)
    return {
        "stores": store_frame.drop("_weight"),
        **{t: pl.concat(f, how="vertical_relaxed") for t, f in parts.items()},
        "enrolments": enrolments(opts, people, bodies),
    }, bodies


def slug(name: str) -> str:
    """A group name as a file name: ``Every 5 Visits`` -> ``every_5_visits``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def generate(opts: Options, out: Path, *, fmt: str = "parquet", chunk_rows: int = CHUNK_ROWS,
             progress: Progress | None = None) -> Generated:
    """Write the exports, `groups/*.json`, a `milestones.toml` and a manifest into `out`.

    Files of a previous generation in `out` are replaced; nothing else there is touched.

    Raises:
        UsageError: an unknown format.
        InputError: `out` exists and is not a folder.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another --out")
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    store_frame = stores(opts)
    people = customers(opts, store_frame)
    bodies = programme(opts, store_frame)
    blocks = plan(opts, chunk_rows)
    single = len(blocks) == 1
    files: dict[str, list[Path]] = {kind: [] for kind in KIND_FILES.values()}
    rows = dict.fromkeys(KIND_FILES, 0)

    def write(table: str, frame: pl.DataFrame, part: int | None) -> None:
        name = f"{table}.{fmt}" if part is None else f"{table}-{part:04d}.{fmt}"
        path = out / name
        if fmt == "parquet":
            frame.write_parquet(path, statistics=False)
        else:
            frame.write_csv(path)
        files[KIND_FILES[table]].append(path)
        rows[table] += frame.height

    write("stores", store_frame.drop("_weight"), None)
    say(f"generating {opts.bills:,} transactions for {opts.customers:,} customers over "
        f"{opts.days} days, in {len(blocks)} block(s)")
    for block, frames in generate_blocks(opts, chunk_rows):
        for table, frame in frames.items():
            write(table, frame, None if single else block.index)
        say(f"block {block.index}/{len(blocks)} written ({time.perf_counter() - started:.0f} s)")
    write("enrolments", enrolments(opts, people, bodies), None)
    group_dir = out / "groups"
    group_dir.mkdir(exist_ok=True)
    groups = []
    for k, body in enumerate(bodies, start=1):
        path = group_dir / f"{k:02d}_{slug(body['name'])}.json"
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        groups.append(path)
    config = out / "milestones.toml"
    config.write_text(
        "# Written by `milestones generate`: the programme has a leaderboard group.\n"
        "[org]\ntimezone = \"UTC\"\nleaderboards_enabled = true\n", encoding="utf-8")
    generated = Generated(
        folder=out, options=opts, files=files, groups=groups,
        rows=rows, seconds=time.perf_counter() - started, config=config,
    )
    _write_manifest(generated)
    return generated


def _clear_previous(out: Path) -> None:
    manifest = out / MANIFEST
    if not manifest.exists():
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for names in old.get("files", {}).values():
        for name in names:
            (out / name).unlink(missing_ok=True)
    for name in old.get("groups", []):
        (out / name).unlink(missing_ok=True)


def _write_manifest(g: Generated) -> None:
    options = asdict(g.options)
    options["start"] = g.options.start.isoformat()
    body = {
        "version": 1,
        "options": options,
        "bills": g.options.bills,
        "as_of": g.as_of.isoformat(),
        "rows": g.rows,
        "files": {kind: [p.name for p in paths] for kind, paths in g.files.items()},
        "groups": [str(p.relative_to(g.folder)) for p in g.groups],
        "seconds": round(g.seconds, 3),
    }
    (g.folder / MANIFEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def read_generated(folder: Path) -> Generated | None:
    """The generation in `folder` from its manifest, or None when there is none (or it is
    incomplete), so that `bench` can reuse data generated earlier."""
    try:
        body = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        o = body["options"]
        opts = Options(customers=o["customers"], days=o["days"], seed=o["seed"],
                       transactions=o["transactions"], start=date.fromisoformat(o["start"]))
        files = {kind: [folder / n for n in names] for kind, names in body["files"].items()}
        groups = [folder / n for n in body["groups"]]
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None
    if not all(p.exists() for paths in files.values() for p in paths):
        return None
    config = folder / "milestones.toml"
    return Generated(folder=folder, options=opts, files=files, groups=groups,
                     rows=dict(body["rows"]), seconds=float(body.get("seconds", 0.0)),
                     config=config if config.exists() else None)


def describe(g: Generated) -> list[str]:
    """A generation in a few lines: sizes, where, and how to load it."""
    rows = ", ".join(f"{t} {n:,}" for t, n in g.rows.items())
    lines = [f"generated {g.records:,} records in {g.seconds:.1f} s into {g.folder}: {rows}",
             f"{len(g.groups)} groups in {g.folder / 'groups'}; data up to {g.as_of} "
             f"(run with --as-of {g.as_of})",
             "load with (in this order):"]
    db = g.folder / "milestones.duckdb"
    lines += [f"  {cmd}" for cmd in g.load_commands(db)]
    groups = shlex.quote(str(g.folder / "groups"))
    lines.append(f"  {_milestones(db)} groups create {groups}/*.json")
    lines.append(f"  {_milestones(db)} run --as-of {g.as_of}")
    return lines


def _milestones(db: Path | None) -> str:
    """The command's start, with ``--db`` quoted for the shell when a database is given."""
    return f"milestones --db {shlex.quote(str(db))}" if db else "milestones"
