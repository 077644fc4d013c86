"""The reward ledger (ids, diff, apply) and the run files (formats, manifest, checks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from pipeline.rewards import files, ledger


def earned(*rows: tuple[str, str, int, str | None, int]) -> pl.DataFrame:
    """(kind, name, customer, ref_code, period_index) rewards of group 1 "Spend"."""
    frame = (
        pl.DataFrame(
            [
                {
                    "kind": kind,
                    "group_id": 1,
                    "group_name": "Spend",
                    "name": name,
                    "customer_id": customer,
                    "period_index": index,
                    "ref_code": ref,
                    "window_start": datetime(2026, 11, 1),
                    "window_end": datetime(2026, 11, 30),
                    "value": Decimal("120"),
                    "target_value": Decimal("100"),
                    "achieved_at": datetime(2026, 11, 3, tzinfo=UTC),
                }
                for kind, name, customer, ref, index in rows
            ],
            schema=ledger.REWARD_SCHEMA,
            strict=False,
        )
        if rows
        else ledger.empty_rewards()
    )
    return ledger.with_reward_ids(frame.drop("reward_id", strict=False))


def as_ledger(frame: pl.DataFrame, status: str) -> pl.DataFrame:
    return frame.with_columns(
        status=pl.lit(status), issued_run_id=pl.lit("r0"), revoked_run_id=pl.lit(None, pl.String)
    )


A = ("TARGET_ACHIEVED", "spend", 7, "NOV", 1)
B = ("TARGET_ACHIEVED", "spend", 8, "NOV", 1)
C = ("TARGET_ACHIEVED", "spend", 9, "NOV", 1)


# --------------------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        pytest.param(
            ("Spend", 42, "NOV"),
            (" spend ", "42", "NOV"),
            True,
            id="group name trimmed and case-folded; int and text customer",
        ),
        pytest.param(("Spend", 42, "NOV"), ("Spend", 43, "NOV"), False, id="other customer"),
        pytest.param(("Spend", 42, "NOV"), ("Spend", 42, "DEC"), False, id="other window"),
        pytest.param(
            ("Spend", 4, "2NOV"),
            ("Spend", 42, "NOV"),
            False,
            id="fields cannot run into each other",
        ),
    ],
)
def test_reward_id_follows_identity(
    left: tuple[Any, ...], right: tuple[Any, ...], same: bool
) -> None:
    a = ledger.reward_id("TARGET_ACHIEVED", left[0], "spend", left[1], left[2])
    b = ledger.reward_id("TARGET_ACHIEVED", right[0], "spend", right[1], right[2])
    assert (a == b) is same
    assert len(a) == 32


@pytest.mark.parametrize(
    ("kind", "ref", "index", "key"),
    [
        pytest.param("TARGET_ACHIEVED", "NOV", 3, "NOV", id="refCode wins"),
        pytest.param("TARGET_ACHIEVED", None, 3, "3", id="cycle number as text"),
        pytest.param("STREAK_LEVEL_ACHIEVED", "NOV", 3, "", id="a level has no window"),
    ],
)
def test_window_key(kind: str, ref: str | None, index: int, key: str) -> None:
    assert ledger.window_key(kind, ref, index) == key


def test_streak_level_keeps_its_id_when_reached_in_another_window() -> None:
    first = earned(("STREAK_LEVEL_ACHIEVED", "Gold", 7, "OCT", 2))
    later = earned(("STREAK_LEVEL_ACHIEVED", "Gold", 7, "NOV", 3))
    assert first["reward_id"].to_list() == later["reward_id"].to_list()


def test_duplicate_earned_rows_collapse_to_one() -> None:
    assert earned(A, A).height == 1


# -------------------------------------------------------------------------------------- diff


@pytest.mark.parametrize(
    ("now", "standing", "revoked", "awards", "revocations"),
    [
        pytest.param([A, B], [], [], [7, 8], [], id="new rewards are issued"),
        pytest.param([A, B], [A, B], [], [], [], id="standing rewards are not issued twice"),
        pytest.param([A], [A, B], [], [], [8], id="no longer earned is revoked"),
        pytest.param([A, B], [A], [B], [8], [], id="revoked and earned again is re-issued"),
        pytest.param([A], [A], [B], [], [], id="revoked and still not earned: nothing"),
        pytest.param([], [], [], [], [], id="nothing at all"),
        pytest.param([C], [A], [], [9], [7], id="both at once"),
    ],
)
def test_diff(
    now: list[tuple[Any, ...]],
    standing: list[tuple[Any, ...]],
    revoked: list[tuple[Any, ...]],
    awards: list[int],
    revocations: list[int],
) -> None:
    book = pl.concat(
        [as_ledger(earned(*standing), "ISSUED"), as_ledger(earned(*revoked), "REVOKED")]
    )
    change = ledger.diff(earned(*now), book)
    assert change.awards["customer_id"].to_list() == awards
    assert change.revocations["customer_id"].to_list() == revocations
    assert change.awards.columns == list(ledger.REWARD_COLUMNS)


def test_diff_does_not_depend_on_row_order() -> None:
    rows = [A, B, C]
    one = ledger.diff(earned(*rows), as_ledger(earned(), "ISSUED"))
    other = ledger.diff(earned(*reversed(rows)), as_ledger(earned(), "ISSUED"))
    assert one.awards.equals(other.awards)


# ------------------------------------------------------------------------------------- apply


def test_apply_issues_revokes_and_reissues_with_history(
    fresh_db: duckdb.DuckDBPyConnection,
) -> None:
    at = datetime(2026, 11, 23, tzinfo=UTC)
    ledger.apply(
        fresh_db, ledger.diff(earned(A, B), ledger.read_ledger(fresh_db)), run_id="r1", at=at
    )
    ledger.apply(fresh_db, ledger.diff(earned(A), ledger.read_ledger(fresh_db)), run_id="r2", at=at)
    ledger.apply(
        fresh_db, ledger.diff(earned(A, B), ledger.read_ledger(fresh_db, [1])), run_id="r3", at=at
    )

    rows = fresh_db.sql(
        "SELECT customer_id, status, issued_run_id, revoked_run_id FROM rewards ORDER BY 1"
    ).fetchall()
    assert rows == [(7, "ISSUED", "r1", None), (8, "ISSUED", "r3", None)]
    events = fresh_db.sql(
        "SELECT r.customer_id, e.run_id, e.action FROM reward_events e "
        "JOIN rewards r USING (reward_id) ORDER BY 1, 2"
    ).fetchall()
    assert events == [
        (7, "r1", "ISSUED"),
        (8, "r1", "ISSUED"),
        (8, "r2", "REVOKED"),
        (8, "r3", "ISSUED"),
    ]


def test_read_ledger_filters_by_group(fresh_db: duckdb.DuckDBPyConnection) -> None:
    ledger.apply(
        fresh_db,
        ledger.diff(earned(A), ledger.read_ledger(fresh_db)),
        run_id="r1",
        at=datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert ledger.read_ledger(fresh_db, [1]).height == 1
    assert ledger.read_ledger(fresh_db, [2]).height == 0
    assert ledger.read_ledger(fresh_db, []).height == 0


# ------------------------------------------------------------------------------------- files


def frames(awards: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {
        "awards": awards,
        "revocations": ledger.empty_rewards(),
        "capping_adjustments": pl.DataFrame({"group_id": [1], "points": [Decimal("5")]}),
        "leaderboard_top": pl.DataFrame(schema={"group_id": pl.Int64, "rank": pl.Int32}),
    }


@pytest.mark.parametrize(
    ("fmt", "reader"),
    [
        pytest.param("csv", pl.read_csv, id="csv"),
        pytest.param("parquet", pl.read_parquet, id="parquet"),
        pytest.param("jsonl", pl.read_ndjson, id="jsonl"),
    ],
)
def test_run_folder_in_every_format_with_checksums(tmp_path: Path, fmt: str, reader: Any) -> None:
    folder = tmp_path / ".r1.tmp"
    manifest = files.write_run_folder(folder, frames(earned(A, B)), fmt, {"run_id": "r1"})

    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.{fmt}" for n in files.FILE_NAMES] + ["manifest.json"]
    )
    assert reader(folder / f"awards.{fmt}")["customer_id"].to_list() == [7, 8]
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["files"][f"awards.{fmt}"]["rows"] == 2
    assert files.verify_folder(folder) == []


def test_empty_csv_file_keeps_its_header(tmp_path: Path) -> None:
    files.write_run_folder(tmp_path / "f", frames(ledger.empty_rewards()), "csv", {})
    assert (tmp_path / "f" / "awards.csv").read_text() == ",".join(ledger.REWARD_COLUMNS) + "\n"


def test_verify_folder_names_a_changed_file(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    files.write_run_folder(folder, frames(earned(A)), "csv", {})
    (folder / "awards.csv").write_text("tampered\n")
    assert files.verify_folder(folder) == [
        f"{folder / 'awards.csv'} does not match its checksum in the manifest"
    ]
    (folder / "manifest.json").unlink()
    assert files.verify_folder(folder) == [f"{folder / 'manifest.json'} is missing or unreadable"]


def test_rewriting_a_folder_drops_what_a_dead_run_left(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "awards.parquet").write_bytes(b"half")
    files.write_run_folder(folder, frames(earned(A)), "csv", {})
    assert not (folder / "awards.parquet").exists()


def test_publish_renames_into_place(tmp_path: Path) -> None:
    files.write_run_folder(tmp_path / ".r1.tmp", frames(earned(A)), "csv", {})
    files.publish(tmp_path / ".r1.tmp", tmp_path / "r1")
    assert not (tmp_path / ".r1.tmp").exists()
    assert files.verify_folder(tmp_path / "r1") == []


def test_leaderboard_top_keeps_first_hundred_ranks_per_window() -> None:
    board = pl.DataFrame(
        {
            "group_id": [1] * 150 + [2] * 3,
            "target_id": [1] * 153,
            "period_index": [1] * 153,
            "rank": [*range(150, 0, -1), 1, 2, 3],
        }
    )
    top = files.leaderboard_top(board)
    assert top.group_by("group_id").len().sort("group_id").rows() == [(1, 100), (2, 3)]
    assert top["rank"].head(3).to_list() == [1, 2, 3]


def test_vectorised_reward_ids_equal_the_per_reward_function() -> None:
    earned = pl.DataFrame(
        {
            "kind": ["TARGET_ACHIEVED", "STREAK_LEVEL_ACHIEVED", "UNIFIED_ACHIEVED"],
            "group_name": [" Spend 100", "Streak", "Ünified"],
            "name": ["spend", "Gold", "Ünified"],
            "customer_id": [42, 7, 9],
            "ref_code": ["NOV", "P2", None],
            "period_index": [3, 2, 5],
        }
    )
    expected = [
        ledger.reward_id("TARGET_ACHIEVED", " Spend 100", "spend", 42, "NOV"),
        ledger.reward_id("STREAK_LEVEL_ACHIEVED", "Streak", "Gold", 7, ""),
        ledger.reward_id("UNIFIED_ACHIEVED", "Ünified", "Ünified", 9, "5"),
    ]
    assert ledger.reward_ids(earned).to_list() == expected


def test_reward_ids_stay_aligned_with_their_rows_over_many_batches() -> None:
    # DuckDB hashes in vectors of 2,048 rows on several threads; the ids must come back in row
    # order (no row number, no sort: see `reward_ids`), so each row is checked one by one.
    n = 50_000
    earned = pl.DataFrame({
        "kind": ["TARGET_ACHIEVED"] * n,
        "group_name": ["Spend"] * n,
        "name": ["spend"] * n,
        "customer_id": list(range(n, 0, -1)),
        "ref_code": [None] * n,
        "period_index": [i % 12 for i in range(n)],
    }, schema_overrides={"ref_code": pl.String})
    got = ledger.reward_ids(earned).to_list()
    assert got == [ledger.reward_id("TARGET_ACHIEVED", "Spend", "spend", n - i, str(i % 12))
                   for i in range(n)]


def test_reward_ids_hash_on_one_connection_per_thread_and_threads_do_not_mix() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def ids_of(first: int) -> tuple[list[str], list[str]]:
        n = 3_000
        frame = pl.DataFrame({
            "kind": ["TARGET_ACHIEVED"] * n, "group_name": ["Spend"] * n, "name": ["spend"] * n,
            "customer_id": list(range(first, first + n)), "ref_code": ["W"] * n,
            "period_index": [1] * n,
        })
        got = [x for _ in range(5) for x in ledger.reward_ids(frame).to_list()]
        want = [ledger.reward_id("TARGET_ACHIEVED", "Spend", "spend", c, "W")
                for c in range(first, first + n)] * 5
        return got, want

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(ids_of, [0, 10_000, 20_000, 30_000]))
    for got, want in results:
        assert got == want
    assert ledger._hasher() is ledger._hasher()  # opened once in a thread


def test_staged_rewards_keep_every_row_with_its_id() -> None:
    once = earned(("TARGET_ACHIEVED", "spend", 1, None, 1)).drop("reward_id")
    staged = ledger.identified(pl.concat([once, once]))
    assert staged.columns == list(ledger.REWARD_COLUMNS)
    assert staged.height == 2 and staged["reward_id"].n_unique() == 1  # diff_sql dedupes
    assert ledger.identified(once.head(0)).is_empty()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("rows", [(A, B), ()], ids=["two awards", "none"])
def test_streamed_files_are_the_bytes_of_collected_ones(tmp_path: Path, fmt: str,
                                                        rows: tuple) -> None:
    collected = frames(earned(*rows))
    streamed = {name: frame.lazy() for name, frame in collected.items()}
    counts = {name: frame.height for name, frame in collected.items()}
    one = files.write_run_folder(tmp_path / "a", collected, fmt, {})
    other = files.write_run_folder(tmp_path / "b", streamed, fmt, {}, counts)
    assert other == one  # the same rows and the same SHA-256 for every file
