"""The six export kinds of SPEC §3: their tables, keys and columns, declared once.

The pandera schemas, the type conversions and the upsert all read these declarations, so a column
added here is validated, typed and loaded without touching the other modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ColumnType(Enum):
    """How a raw text value becomes a typed value."""

    ID = "id"
    """An identifier kept as written (`txn_id`, `store_id`, ...), whatever the file's type."""
    TEXT = "text"
    """Free text (`event_name`, `group_name`, ...)."""
    CUSTOMER = "customer"
    """`customer_id`: BIGINT or VARCHAR, whichever the workspace's ids were first loaded as."""
    DECIMAL = "decimal"
    """Money, quantities, points: exact, at most 4 fractional digits, never rounded."""
    INTEGER = "integer"
    """A whole number (`line_no`)."""
    TIMESTAMP = "timestamp"
    """An instant; text without an offset is local time in `org.timezone`."""
    ENUM = "enum"
    """One of a closed set of words, matched case-insensitively and stored upper-case."""


@dataclass(frozen=True)
class ColumnSpec:
    """One column of an export kind."""

    name: str
    type: ColumnType
    required: bool = False
    choices: tuple[str, ...] = ()      # ENUM values
    default: str | None = None         # an SQL-free default: a literal, or "=column" to copy one
    non_negative: bool = False         # negative values rejected, except on returns (SPEC §13)


@dataclass(frozen=True)
class Kind:
    """An export kind: its command-line name, table, key and columns."""

    name: str
    table: str
    key: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> ColumnSpec | None:
        return next((c for c in self.columns if c.name == name), None)


ID, TEXT, CUST, DEC, INT, TS, ENUM = (
    ColumnType.ID,
    ColumnType.TEXT,
    ColumnType.CUSTOMER,
    ColumnType.DECIMAL,
    ColumnType.INTEGER,
    ColumnType.TIMESTAMP,
    ColumnType.ENUM,
)

TXN_TYPES = ("REGULAR", "RETURN")
POINTS_TYPES = ("REGULAR", "PROMOTIONAL")

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "transactions",
            "transactions",
            ("txn_id",),
            (
                ColumnSpec("txn_id", ID, required=True),
                ColumnSpec("customer_id", CUST, required=True),
                ColumnSpec("txn_time", TS, required=True),
                ColumnSpec("amount", DEC, required=True),
                ColumnSpec("type", ENUM, choices=TXN_TYPES, default="REGULAR"),
                ColumnSpec("parent_txn_id", ID),
                ColumnSpec("store_id", ID),
                ColumnSpec("gross_amount", DEC, default="=amount"),
                ColumnSpec("discount", DEC, default="0"),
                ColumnSpec("qty", DEC, non_negative=True),
            ),
        ),
        Kind(
            "line-items",
            "line_items",
            ("txn_id", "line_no"),
            (
                ColumnSpec("txn_id", ID, required=True),
                ColumnSpec("line_no", INT, required=True),
                ColumnSpec("qty", DEC, required=True, non_negative=True),
                ColumnSpec("amount", DEC, required=True),
                ColumnSpec("item_code", ID),
                ColumnSpec("rate", DEC),
                ColumnSpec("value", DEC, default="=amount"),
                ColumnSpec("discount", DEC),
            ),
        ),
        Kind(
            "events",
            "events",
            ("event_id",),
            (
                ColumnSpec("event_id", ID, required=True),
                ColumnSpec("customer_id", CUST, required=True),
                ColumnSpec("event_name", TEXT, required=True),
                ColumnSpec("event_time", TS, required=True),
                ColumnSpec("store_id", ID),
            ),
        ),
        Kind(
            "points",
            "points",
            ("points_id",),
            (
                ColumnSpec("points_id", ID, required=True),
                ColumnSpec("customer_id", CUST, required=True),
                ColumnSpec("awarded_at", TS, required=True),
                ColumnSpec("points", DEC, required=True),
                ColumnSpec("points_type", ENUM, required=True, choices=POINTS_TYPES),
                ColumnSpec("store_id", ID),
                ColumnSpec("txn_id", ID),
                ColumnSpec("promotion_id", ID),
            ),
        ),
        Kind(
            "stores",
            "stores",
            ("store_id",),
            (
                ColumnSpec("store_id", ID, required=True),
                ColumnSpec("zone_id", ID),
                ColumnSpec("concept_id", ID),
                ColumnSpec("name", TEXT),
            ),
        ),
        Kind(
            "enrolments",
            "enrolments",
            ("group_name", "customer_id", "target_name", "period_ref"),
            (
                ColumnSpec("group_name", TEXT, required=True),
                ColumnSpec("customer_id", CUST, required=True),
                ColumnSpec("target_name", TEXT),
                ColumnSpec("period_ref", TEXT),
                ColumnSpec("enrolled_at", TS),
                ColumnSpec("unenrolled_at", TS),
                ColumnSpec("target_value", DEC),
                ColumnSpec("initial_balance", DEC),
            ),
        ),
    )
}


def get_kind(name: str) -> Kind:
    """The kind called `name`: ``line-items`` as on the command line, ``line_items`` too."""
    kind = KINDS.get(name.strip().lower().replace("_", "-"))
    if kind is None:
        from pipeline.errors import UsageError

        raise UsageError(f"unknown export kind {name!r}; use one of {', '.join(KINDS)}")
    return kind
