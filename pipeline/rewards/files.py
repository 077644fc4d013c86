"""A run's files (SPEC §9): `awards`, `revocations`, `capping_adjustments`, `leaderboard_top` and
`manifest.json`, written to a hidden folder that `runs.py` renames into place after the commit.

Whoever pays out reads `<out>/<run_id>/`; a folder is there whole or not at all, and its manifest
carries a SHA-256 of every file so a consumer can check what it got.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import InputError

FILE_NAMES = ("awards", "revocations", "capping_adjustments", "leaderboard_top")
MANIFEST = "manifest.json"
LEADERBOARD_TOP_N = 100


def leaderboard_top(leaderboard: pl.DataFrame, n: int = LEADERBOARD_TOP_N) -> pl.DataFrame:
    """The first `n` ranks of every leaderboard window, ordered for reading."""
    if leaderboard.is_empty():
        return leaderboard
    return leaderboard.filter(pl.col("rank") <= n).sort(
        "group_id", "target_id", "period_index", "rank"
    )


def write_frame(frame: pl.DataFrame | pl.LazyFrame, path: Path, fmt: str) -> None:
    """Write one file in `fmt` and flush it to disk (an empty frame still gets its header).

    A LazyFrame is streamed to the file in batches (the same bytes as writing it collected), so
    a run with millions of award lines never holds them all.
    """
    if isinstance(frame, pl.LazyFrame):
        sinks = {"csv": frame.sink_csv, "parquet": frame.sink_parquet,
                 "jsonl": frame.sink_ndjson}
        if fmt not in sinks:
            raise InputError(f"unknown output format {fmt!r}; use csv, parquet or jsonl")
        sinks[fmt](path)
        with path.open("rb+") as fh:
            os.fsync(fh.fileno())
        return
    with path.open("wb") as fh:
        if fmt == "csv":
            frame.write_csv(fh)
        elif fmt == "parquet":
            frame.write_parquet(fh)
        elif fmt == "jsonl":
            frame.write_ndjson(fh)
        else:
            raise InputError(f"unknown output format {fmt!r}; use csv, parquet or jsonl")
        fh.flush()
        os.fsync(fh.fileno())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_run_folder(
    folder: Path,
    frames: Mapping[str, pl.DataFrame | pl.LazyFrame],
    fmt: str,
    info: Mapping[str, Any],
    rows: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Write every run file and then the manifest (last, so a manifest means a whole folder).

    Args:
        folder: the temporary folder; created, and emptied if a dead run left it behind.
        frames: one frame per name of `FILE_NAMES` (a LazyFrame is streamed).
        rows: the row count of each lazy frame, for the manifest.
        fmt: csv, parquet or jsonl.
        info: run id, as-of, range, groups, rows in and out: copied into the manifest.

    Returns:
        The manifest as written.
    """
    write_run_files(folder, frames, fmt)
    counts = {name: frame.height if isinstance(frame, pl.DataFrame) else (rows or {})[name]
              for name, frame in frames.items()}
    return write_manifest(folder, fmt, info, counts)


def write_run_files(
    folder: Path, frames: Mapping[str, pl.DataFrame | pl.LazyFrame], fmt: str
) -> None:
    """The data files of `write_run_folder`, without the manifest (`write_manifest` adds it).

    Why apart: a run writes its files before its transaction and its manifest inside it, once
    the table inserts have counted the rows it reports (counting them beforehand was a second
    pass over every staged row: ~9 s of a 245 s run at 10 M transactions)."""
    if folder.exists():
        for stale in folder.iterdir():
            stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILE_NAMES:
        write_frame(frames[name], folder / f"{name}.{fmt}", fmt)


def write_manifest(
    folder: Path, fmt: str, info: Mapping[str, Any], rows: Mapping[str, int]
) -> dict[str, Any]:
    """The manifest of the files `write_run_files` wrote: `info`, and each file's `rows`, size
    and SHA-256. Written and flushed last: a folder with a manifest is whole."""
    files: dict[str, dict[str, Any]] = {}
    for name in FILE_NAMES:
        path = folder / f"{name}.{fmt}"
        files[path.name] = {"rows": rows[name], "bytes": path.stat().st_size,
                            "sha256": sha256_file(path)}
    manifest = {**info, "format": fmt, "files": files}
    path = folder / MANIFEST
    with path.open("w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(folder)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it is missing or cut short."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verify_folder(folder: Path) -> list[str]:
    """Problems with a run folder: a missing manifest, a missing file, a checksum that differs."""
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder / MANIFEST} is missing or unreadable"]
    problems = []
    for name, meta in manifest.get("files", {}).items():
        path = folder / name
        if not path.exists():
            problems.append(f"{path} is missing")
        elif sha256_file(path) != meta.get("sha256"):
            problems.append(f"{path} does not match its checksum in the manifest")
    return problems


def publish(tmp: Path, final: Path) -> None:
    """Rename the finished temporary folder into place: one atomic step on one file system."""
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _fsync_dir(folder: Path) -> None:
    # A rename or a new file is durable only once its directory entry is flushed.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
