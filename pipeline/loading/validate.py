"""Run a pandera schema over a file's frame and split it into loadable rows and rejects.

pandera is run with ``lazy=True`` so that every failing row of every check is collected at once;
its failure cases (column, check, value, row index) become one `rejects` row per refused input row
whose reason lists every problem of that row. A failure that is not about a row (a required column
missing) refuses the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context

from pipeline.errors import InputError
from pipeline.loading.readers import ROW
from pipeline.loading.schemas import MISSING

INTERNAL = "__"  # typed twins and joined helper columns, which checks read
REJECT_COLUMNS = {ROW: pl.UInt32, "reason": pl.String, "record": pl.String}


@dataclass
class Checked:
    """The outcome of validating one file's frame."""

    good: pl.DataFrame
    rejects: pl.DataFrame  # __row, reason, record
    reasons: dict[str, int] = field(default_factory=dict)  # "<column>: <reason>" -> rows

    def merge(self, later: Checked) -> Checked:
        """This result after a later pass over some of its good rows: their rejects leave."""
        reasons = dict(self.reasons)
        for k, n in later.reasons.items():
            reasons[k] = reasons.get(k, 0) + n
        good = self.good
        if later.rejects.height:
            good = good.join(later.rejects.select(ROW), on=ROW, how="anti")
        rejects = pl.concat([self.rejects, later.rejects]).sort(ROW)
        return Checked(good, rejects, reasons)


def no_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def check(
    frame: pl.DataFrame, schema: pa.DataFrameSchema, path: Path, record_columns: list[str]
) -> Checked:
    """Validate `frame` against `schema`; rows with any failure go to the rejects.

    Args:
        record_columns: the file's own columns, written as the raw record of a reject.
    Raises:
        InputError: a required column is missing, or another failure not tied to a row.
    """
    # pandera hands back (a copy of) what it validates: give it only the columns it checks.
    wanted = [c for c in frame.columns if c in schema.columns or c.startswith(INTERNAL)]
    try:
        with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            schema.validate(frame.select(wanted), lazy=True)
    except pa.errors.SchemaErrors as exc:
        failures = exc.failure_cases
    else:
        return Checked(frame, no_rejects())

    whole_file = failures.filter(pl.col("index").is_null())
    if whole_file.height:
        absent = whole_file.filter(pl.col("check") == "column_in_dataframe")
        missing = absent["failure_case"].to_list()
        if missing:
            found = ", ".join(c for c in record_columns) or "none"
            raise InputError(
                f"{path}: required column(s) {', '.join(missing)} missing (found: {found}); "
                "nothing of this command was loaded: fix the export's header and load again"
            )
        first = whole_file.row(0, named=True)
        raise InputError(
            f"{path}: {first['column'] or 'file'} failed {first['check']} "
            f"({first['failure_case']}); nothing of this command was loaded"
        )

    # Checks of the whole frame (duplicate keys) name the schema, not a column.
    failures = failures.with_columns(
        pl.when(pl.col("schema_context") == "DataFrameSchema")
        .then(pl.lit(None, pl.String))
        .otherwise(pl.col("column"))
        .alias("column")
    )
    problems = failures.select(
        pl.col("index").cast(pl.UInt32).alias("index"),
        pl.int_range(pl.len()).alias("order"),  # pandera's order: columns, then their checks
        _reason_key().alias("key"),
        _reason_text().alias("text"),
    )
    reasons = dict(problems.group_by("key").len().sort("key").iter_rows())
    per_row = (
        problems.sort("index", "order")
        .group_by("index", maintain_order=True)
        .agg(pl.col("text").unique(maintain_order=True).str.join("; ").alias("reason"))
    )
    bad = frame.with_row_index("index").join(per_row, on="index", how="inner")
    rejects = bad.select(
        pl.col(ROW).cast(pl.UInt32),
        pl.col("reason"),
        pl.struct(record_columns).struct.json_encode().alias("record"),
    ).sort(ROW)
    good = frame.with_row_index("index").join(per_row, on="index", how="anti").drop("index")
    return Checked(good, rejects, {k: int(v) for k, v in reasons.items()})


def _check_name() -> pl.Expr:
    return (
        pl.when(pl.col("check") == "not_nullable")
        .then(pl.lit(MISSING))
        .otherwise(pl.col("check"))
    )


def _reason_key() -> pl.Expr:
    """What is counted: the column and the reason, without the value."""
    return (
        pl.when(pl.col("column").is_not_null())
        .then(pl.concat_str([pl.col("column"), pl.lit(": "), _check_name()]))
        .otherwise(_check_name())
    )


def _reason_text() -> pl.Expr:
    """What a refused row says: the column, the value as written, the reason."""
    value = pl.concat_str([pl.lit(" '"), pl.col("failure_case"), pl.lit("'")])
    return (
        pl.when(pl.col("column").is_not_null() & pl.col("failure_case").is_not_null())
        .then(pl.concat_str([pl.col("column"), value, pl.lit(": "), _check_name()]))
        .otherwise(_reason_key())
    )
