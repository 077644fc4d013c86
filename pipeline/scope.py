"""Which windows a run replaces (SPEC §10), as a polars filter and as DuckDB SQL.

The run itself selects and deletes with SQL over staged files (`sql_bind`, `sql_predicate`), so
nothing has to fit in memory; `simulate` cuts small in-memory frames with `select`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb
import polars as pl

from pipeline.definitions.model import EvaluationType, Group, TrackingType

WINDOW_COLUMNS = "group_id, customer_id, period_index, window_start, window_end"


@dataclass(frozen=True)
class Scope:
    """Which windows a run replaces: those overlapping [start, end] (start None = all before).

    A nightly run is [-inf, D] ("every window that has started by D"); ``--from A --to B`` is
    [A, B]. STREAK groups are always whole, since a run of windows spans the range's edges.
    Groups with fixed periods are cut by period; per-customer windows (CYCLIC, PERIOD_AGNOSTIC)
    by (customer, cycle) from their bounds as computed now or as stored.
    """

    start: date | None
    end: date
    whole: frozenset[int]
    fixed: Mapping[int, frozenset[int]]
    per_customer: frozenset[int]

    @classmethod
    def build(cls, groups: Sequence[Group], start: date | None, end: date) -> Scope:
        whole: set[int] = set()
        fixed: dict[int, frozenset[int]] = {}
        per_customer: set[int] = set()
        for g in groups:
            if g.tracking_type is TrackingType.STREAK:
                whole.add(g.group_id)
            elif g.evaluation_type is EvaluationType.FIXED:
                fixed[g.group_id] = frozenset(
                    p.index
                    for p in g.periods
                    if p.start <= end and (start is None or p.end >= start)
                )
            else:
                per_customer.add(g.group_id)
        return cls(start, end, frozenset(whole), fixed, frozenset(per_customer))

    @property
    def group_ids(self) -> list[int]:
        return sorted(self.whole | set(self.fixed) | self.per_customer)

    def overlaps(self) -> pl.Expr:
        """Rows whose [window_start, window_end] (local timestamps) meet the scope's dates."""
        upper = datetime.combine(self.end + timedelta(days=1), datetime.min.time())
        cond = pl.col("window_start") < upper
        if self.start is not None:
            lower = datetime.combine(self.start, datetime.min.time())
            cond = cond & (pl.col("window_end").is_null() | (pl.col("window_end") >= lower))
        return cond

    def customer_windows(self, frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
        """(group_id, customer_id, period_index) of per-customer windows in scope."""
        keys = ["group_id", "customer_id", "period_index"]
        parts = [
            f.filter(pl.col("group_id").is_in(list(self.per_customer)) & self.overlaps())
            .select(keys)
            for f in frames
            if f.height and "window_start" in f.columns
        ]
        if not parts:
            return pl.DataFrame()
        return pl.concat(_align(parts), how="vertical_relaxed").unique()

    def fixed_frame(self) -> pl.DataFrame:
        rows = [(g, i) for g, idx in self.fixed.items() for i in sorted(idx)]
        return pl.DataFrame(
            rows, schema={"group_id": pl.Int64, "period_index": pl.Int32}, orient="row"
        )

    def select(self, frame: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
        """The rows of `frame` in scope; `keys` from `customer_windows`."""
        if frame.is_empty() or "group_id" not in frame.columns:
            return frame.clear()
        parts = [frame.filter(pl.col("group_id").is_in(list(self.whole)))]
        if "period_index" in frame.columns:
            fx = self.fixed_frame()
            if fx.height:
                parts.append(
                    frame.join(
                        fx.cast({"group_id": frame.schema["group_id"],
                                 "period_index": frame.schema["period_index"]}),
                        on=["group_id", "period_index"],
                        how="semi",
                    )
                )
            if keys.height and "customer_id" in frame.columns:
                parts.append(
                    frame.join(
                        keys.cast({c: frame.schema[c] for c in keys.columns}),
                        on=list(keys.columns),
                        how="semi",
                    )
                )
        return pl.concat(parts, how="vertical")

    # --- the same cut in DuckDB SQL -------------------------------------------------------

    def sql_bind(self, con: duckdb.DuckDBPyConnection, sources: Sequence[str]) -> None:
        """Register the scope for `sql_predicate`: ``_scope_whole``, ``_scope_fixed`` and the
        temp table ``_scope_keys`` of per-customer windows in scope, found in `sources` (SQL
        relations with group_id, customer_id, period_index, window_start, window_end: the new
        rows, the stored rows and the ledger, as `customer_windows` takes frames)."""
        con.register("_scope_whole", pl.DataFrame({"group_id": sorted(self.whole)},
                                                  schema={"group_id": pl.Int64}))
        con.register("_scope_fixed", self.fixed_frame())
        ids = ", ".join(str(g) for g in sorted(self.per_customer)) or "NULL"
        union = " UNION ALL ".join(f"SELECT {WINDOW_COLUMNS} FROM {s}" for s in sources)
        upper = datetime.combine(self.end + timedelta(days=1), datetime.min.time())
        overlap = "window_start < $upper"
        params: dict[str, object] = {"upper": upper}
        if self.start is not None:
            overlap += " AND (window_end IS NULL OR window_end >= $lower)"
            params["lower"] = datetime.combine(self.start, datetime.min.time())
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _scope_keys AS "
            f"SELECT DISTINCT group_id, customer_id, period_index FROM ({union}) "
            f"WHERE group_id IN ({ids}) AND {overlap}",
            params,
        )

    def sql_predicate(self, alias: str, *, customer: bool = True, period: bool = True) -> str:
        """Rows of `alias` in scope (after `sql_bind`); `customer`/`period`: whether the table
        has those columns (a table without period_index is cut by whole groups only)."""
        conditions = [f"{alias}.group_id IN (SELECT group_id FROM _scope_whole)"]
        if period:
            conditions.append(
                f"EXISTS (SELECT 1 FROM _scope_fixed k WHERE k.group_id = {alias}.group_id "
                f"AND k.period_index = {alias}.period_index)"
            )
            if customer and self.per_customer:
                conditions.append(
                    f"EXISTS (SELECT 1 FROM _scope_keys k WHERE k.group_id = {alias}.group_id "
                    f"AND k.customer_id = {alias}.customer_id "
                    f"AND k.period_index = {alias}.period_index)"
                )
        return "(" + " OR ".join(conditions) + ")"

    def sql_rows(
        self,
        relation_of: Callable[[Collection[int]], str | None],
        *,
        customer: bool = True,
        period: bool = True,
    ) -> str | None:
        """The rows `sql_predicate` keeps, as a query over `relation_of(group ids)`: an SQL
        relation of just those groups' rows (None: they have none). None when no group has any.

        Why: the predicate's ``EXISTS`` become mark joins over every row (~8 CPU-s for 150 M
        staged `target_progress` rows). By kind of group instead, over only that kind's rows:
        STREAK groups whole, no test; a fixed-period group by its period numbers, a literal
        list; per-customer groups by a semi join on their windows in scope."""
        branches = []
        whole = relation_of(self.whole) if self.whole else None
        if whole is not None:
            branches.append(f"SELECT * FROM {whole}")
        if period:
            for group_id, periods in sorted(self.fixed.items()):
                rows = relation_of([group_id]) if periods else None
                if rows is not None:
                    listed = ", ".join(str(int(i)) for i in sorted(periods))
                    branches.append(f"SELECT * FROM {rows} n WHERE n.period_index IN ({listed})")
            keyed = relation_of(self.per_customer) if customer and self.per_customer else None
            if keyed is not None:
                branches.append(
                    f"SELECT n.* FROM {keyed} n SEMI JOIN _scope_keys k "
                    "ON k.group_id = n.group_id AND k.customer_id = n.customer_id "
                    "AND k.period_index = n.period_index"
                )
        if not branches:
            return None
        return "(" + " UNION ALL BY NAME ".join(f"({b})" for b in branches) + ")"

    @staticmethod
    def sql_unbind(con: duckdb.DuckDBPyConnection) -> None:
        for name in ("_scope_whole", "_scope_fixed"):
            con.unregister(name)
        con.execute("DROP TABLE IF EXISTS _scope_keys")



def _align(frames: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """Cast key columns to one type so frames from the engine and the database concatenate."""
    first = frames[0].schema
    return [f.cast({c: first[c] for c in f.columns if c in first}) for f in frames]
