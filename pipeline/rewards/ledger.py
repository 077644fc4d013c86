"""The reward ledger (SPEC §9): issue once, revoke explicitly, re-issue what is earned again.

A reward's id is derived from its identity, so the same fact always gets the same id whatever run
finds it; the diff between what a run earned and what the ledger holds is then a pair of anti-joins.
The diff is pure (frames in, frames out) so it is tested without a database; `apply` writes it.

Example::

    earned = with_reward_ids(result.rewards)
    change = diff(earned, read_ledger(con))      # what to issue, what to revoke
    apply(con, change, run_id="r1", at=now)      # inside the run's transaction
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl

from pipeline.scoring.kinds import REWARD_COLUMNS as EARNED_COLUMNS

ISSUED = "ISSUED"
REVOKED = "REVOKED"
STREAK_LEVEL = "STREAK_LEVEL_ACHIEVED"

# The columns of an award or revocation line (SPEC §9), in file order.
REWARD_COLUMNS = ("reward_id", *EARNED_COLUMNS)
LEDGER_COLUMNS = (*REWARD_COLUMNS, "status", "issued_run_id", "revoked_run_id")

# The order of lines in a file: readable, and the same from run to run.
SORT_COLUMNS = ("group_name", "kind", "name", "customer_id", "period_index", "reward_id")

# Types of the reward columns; customer_id follows the loaded ids (BIGINT unless text was loaded).
REWARD_SCHEMA: dict[str, pl.DataType] = {
    "reward_id": pl.String(),
    "kind": pl.String(),
    "group_id": pl.Int64(),
    "group_name": pl.String(),
    "name": pl.String(),
    "customer_id": pl.Int64(),
    "period_index": pl.Int32(),
    "ref_code": pl.String(),
    "window_start": pl.Datetime("us"),
    "window_end": pl.Datetime("us"),
    "value": pl.Decimal(38, 4),
    "target_value": pl.Decimal(38, 4),
    "achieved_at": pl.Datetime("us", "UTC"),
}

_SEP = "\x1f"  # unit separator: cannot occur in names typed by people


def reward_id(kind: str, group_name: str, name: str, customer_id: object, window_key: str) -> str:
    """The id of a reward identity: 32 hex digits of a SHA-256.

    The group name is trimmed and lower-cased because SPEC §13 matches group names that way; a
    streak level's window key is empty (see `window_key`).

    >>> reward_id("TARGET_ACHIEVED", "Spend 100", "spend", 42, "NOV") == reward_id(
    ...     "TARGET_ACHIEVED", " spend 100", "spend", "42", "NOV")
    True
    """
    text = _SEP.join((kind, group_name.strip().lower(), name.strip(), str(customer_id), window_key))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def window_key(kind: str, ref_code: str | None, period_index: int | None) -> str:
    """refCode, else the period or cycle number as text; empty for a streak level.

    A level is awarded once per customer and group (SPEC §8), so the window in which it was
    reached is not part of its identity: a late return that moves the reaching window must not
    revoke one level and issue "another".
    """
    if kind == STREAK_LEVEL:
        return ""
    if ref_code is not None:
        return ref_code
    return "" if period_index is None else str(period_index)


def reward_ids(earned: pl.DataFrame) -> pl.Series:
    """`reward_id` of every row of `earned`, vectorised: the identity text is built with polars
    and hashed by DuckDB's `sha256` (no Python loop over rewards); equal to `reward_id` row by row.
    """
    window = (
        pl.when(pl.col("kind") == STREAK_LEVEL)
        .then(pl.lit(""))
        .when(pl.col("ref_code").is_not_null())
        .then(pl.col("ref_code"))
        .otherwise(pl.col("period_index").cast(pl.String).fill_null(""))
    )
    identity = earned.select(
        pl.concat_str(
            [
                pl.col("kind"),
                pl.col("group_name").str.strip_chars().str.to_lowercase(),
                pl.col("name").str.strip_chars(),
                pl.col("customer_id").cast(pl.String),
                window,
            ],
            separator=_SEP,
        ).alias("identity"),
    )
    con = _hasher()
    con.register("identity", identity)
    try:
        hashed = con.sql("SELECT left(sha256(identity), 32) AS reward_id FROM identity")
        return hashed.pl()["reward_id"]
    finally:
        con.unregister("identity")


_THREAD = threading.local()


def _hasher() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB for `reward_ids`, opened once.

    Why: opening one costs 25-60 ms, and a run hashes the rewards of every part it stages
    (~20 parts a shard of the 10 M bench). One per thread, because a connection answers one
    query at a time. A projection keeps the rows in order (`preserve_insertion_order`, on by
    default and set here), so no row number and sort are needed to align the ids."""
    con = getattr(_THREAD, "con", None)
    if con is None:
        con = duckdb.connect()
        con.execute("SET preserve_insertion_order = true")
        _THREAD.con = con
    return con


def identified(earned: pl.DataFrame) -> pl.DataFrame:
    """`earned` with its `reward_id`, as REWARD_COLUMNS, in no particular order and not
    deduplicated: the run's staged form (`diff_sql` dedupes, `ordered` sorts for the files)."""
    if earned.is_empty():
        return empty_rewards()
    return earned.with_columns(reward_id=reward_ids(earned)).select(REWARD_COLUMNS)


def with_reward_ids(earned: pl.DataFrame) -> pl.DataFrame:
    """`earned` (ScoreResult.rewards) with a `reward_id` column, one row per id, in file order."""
    out = identified(earned)
    if out.is_empty():
        return out
    # The engine yields each fact once; if it ever did not, keep the earliest achievement.
    if out["reward_id"].n_unique() < out.height:
        out = out.sort("achieved_at", nulls_last=True).unique(
            "reward_id", keep="first", maintain_order=True
        )
    return out.sort(SORT_COLUMNS, nulls_last=True)


def empty_rewards(customer_dtype: pl.DataType | None = None) -> pl.DataFrame:
    """No rewards, with every column typed: an empty file still has its header."""
    schema = dict(REWARD_SCHEMA)
    if customer_dtype is not None:
        schema["customer_id"] = customer_dtype
    return pl.DataFrame(schema=schema)


@dataclass(frozen=True)
class LedgerDiff:
    """What a run changes in the ledger: lines for the `awards` and `revocations` files."""

    awards: pl.DataFrame  # REWARD_COLUMNS: earned and not standing
    revocations: pl.DataFrame  # REWARD_COLUMNS: standing and no longer earned


def diff(earned: pl.DataFrame, ledger: pl.DataFrame) -> LedgerDiff:
    """Compare earned rewards with the ledger rows of the same scope: `diff_sql` on frames.

    Args:
        earned: `with_reward_ids` output, only the groups and windows the run scored.
        ledger: ledger rows (LEDGER_COLUMNS) of exactly that scope.

    Earned and not ISSUED (new, or REVOKED before) -> award; ISSUED and not earned -> revocation;
    ISSUED and earned -> nothing: a standing reward is never issued twice nor rewritten.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("earned_frame", earned.select(REWARD_COLUMNS))
        con.register("ledger_frame", ledger.select(LEDGER_COLUMNS))
        awards, revocations = diff_sql(con, "earned_frame", "ledger_frame")
        # Each side keeps its own types (DuckDB would widen decimals and timestamps).
        return LedgerDiff(
            awards=con.sql(ordered(awards)).pl().cast(dict(earned.select(REWARD_COLUMNS).schema)),
            revocations=con.sql(ordered(revocations)).pl().cast(
                dict(ledger.select(REWARD_COLUMNS).schema)
            ),
        )
    finally:
        con.close()


def read_ledger(con: duckdb.DuckDBPyConnection, group_ids: list[int] | None = None) -> pl.DataFrame:
    """Ledger rows, of the given groups only when `group_ids` is not None."""
    cols = ", ".join(LEDGER_COLUMNS)
    if group_ids is None:
        return con.sql(f"SELECT {cols} FROM rewards").pl()
    return con.sql(
        f"SELECT {cols} FROM rewards WHERE list_contains($ids, group_id)",
        params={"ids": [int(g) for g in group_ids]},
    ).pl()


def diff_sql(con: duckdb.DuckDBPyConnection, earned: str, standing: str) -> tuple[str, str]:
    """The ledger diff in DuckDB (runs too big for memory use it directly; `diff` on frames):
    the temp tables ``_awards`` and ``_revocations`` (REWARD_COLUMNS), which the caller reads
    for the files and passes to `apply_tables`.

    Args:
        earned: an SQL relation of earned rewards (REWARD_COLUMNS) of exactly the run's scope;
            a reward id twice keeps its earliest achievement, as `with_reward_ids` does.
        standing: an SQL relation of the ledger rows (LEDGER_COLUMNS) of that scope.
    """
    cols = ", ".join(REWARD_COLUMNS)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _earned AS SELECT {cols} FROM {earned} "
        "QUALIFY row_number() OVER (PARTITION BY reward_id ORDER BY achieved_at NULLS LAST) = 1"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _standing AS SELECT {cols} FROM {standing} "
        f"WHERE status = '{ISSUED}'"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _awards AS SELECT {cols} FROM _earned "
        "WHERE reward_id NOT IN (SELECT reward_id FROM _standing)"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _revocations AS SELECT {cols} FROM _standing "
        "WHERE reward_id NOT IN (SELECT reward_id FROM _earned)"
    )
    con.execute("DROP TABLE _earned")
    con.execute("DROP TABLE _standing")
    return "_awards", "_revocations"


def ordered(table: str) -> str:
    """A query over award or revocation lines in file order."""
    return f"SELECT {', '.join(REWARD_COLUMNS)} FROM {table} ORDER BY {', '.join(SORT_COLUMNS)}"


def apply(con: duckdb.DuckDBPyConnection, change: LedgerDiff, *, run_id: str, at: datetime) -> None:
    """Write `change` to the ledger and its audit log; the caller owns the transaction."""
    con.register("_change_awards", change.awards)
    con.register("_change_revocations", change.revocations)
    try:
        apply_tables(con, "_change_awards", "_change_revocations", run_id=run_id, at=at)
    finally:
        con.unregister("_change_awards")
        con.unregister("_change_revocations")


def apply_tables(
    con: duckdb.DuckDBPyConnection, awards: str, revocations: str, *, run_id: str, at: datetime
) -> None:
    """Write the award and revocation lines in tables (or views) `awards` and `revocations` to
    the ledger and its audit log; the caller owns the transaction.

    An award of a REVOKED reward replaces that row (status ISSUED, the new run, the values it was
    earned with this time, `revoked_run_id` cleared); `reward_events` keeps the history.
    """
    con.execute(
        "INSERT INTO rewards BY NAME "
        "SELECT *, 'ISSUED' AS status, $run AS issued_run_id, "
        f"NULL::VARCHAR AS revoked_run_id FROM {awards} "
        "ON CONFLICT (reward_id) DO UPDATE SET "
        "kind = excluded.kind, group_id = excluded.group_id, "
        "group_name = excluded.group_name, name = excluded.name, "
        "customer_id = excluded.customer_id, period_index = excluded.period_index, "
        "ref_code = excluded.ref_code, window_start = excluded.window_start, "
        "window_end = excluded.window_end, value = excluded.value, "
        "target_value = excluded.target_value, achieved_at = excluded.achieved_at, "
        "status = 'ISSUED', issued_run_id = excluded.issued_run_id, "
        "revoked_run_id = NULL",
        {"run": run_id},
    )
    _log(con, awards, ISSUED, run_id, at)
    con.execute(
        f"UPDATE rewards SET status = 'REVOKED', revoked_run_id = $run "
        f"WHERE reward_id IN (SELECT reward_id FROM {revocations})",
        {"run": run_id},
    )
    _log(con, revocations, REVOKED, run_id, at)


def _log(
    con: duckdb.DuckDBPyConnection, frame: str, action: str, run_id: str, at: datetime
) -> None:
    con.execute(
        f"INSERT INTO reward_events (run_id, reward_id, action, event_at) "
        f"SELECT $run, reward_id, $action, $at FROM {frame}",
        {"run": run_id, "action": action, "at": at},
    )
