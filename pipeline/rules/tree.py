"""The one typed tree that both rule forms (text `expression`, AST `expressionJson`) parse to.

The scoring engine compiles it to polars expressions (`pipeline.rules.compile`); the test
reference interprets it row by row. Names are already resolved to column names: the aliases of
SPEC §4 (`currentTxn.value` -> `amount`, ...) are applied by the parser, so consumers only map
(namespace, column) to wherever that record's column lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

NAMESPACES = ("currentTxn", "currentLineItem", "currentEvent", "currentStore")

# SPEC §4: attribute aliases per namespace; any other attribute is the column of that name.
ALIASES: dict[str, dict[str, str]] = {
    "currentTxn": {
        "value": "amount",
        "grossAmount": "gross_amount",
        "discount": "discount",
        "totalQty": "qty",
        "number": "txn_id",
        "date": "txn_time",
        "storeId": "store_id",
    },
    "currentLineItem": {"code": "item_code"},
    "currentEvent": {"name": "event_name", "date": "event_time"},
    "currentStore": {"id": "store_id", "zone": "zone_id", "concept": "concept_id"},
}

# name -> (min args, max args or None for variadic)
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "contains": (2, 2),
    "matches": (2, 2),
    "isNull": (1, 1),
    "isNotNull": (1, 1),
    "day": (1, 1),
    "month": (1, 1),
    "year": (1, 1),
    "weekday": (1, 1),
    "isWeekend": (1, 1),
    "isWeekday": (1, 1),
    "isHourBetween": (3, 3),
    "in": (2, None),
}

BINARY_OPERATORS = ("*", "/", "%", "+", "-", "<", "<=", ">", ">=", "==", "!=", "&&", "||")
UNARY_OPERATORS = ("!", "-")


@dataclass(frozen=True)
class Literal:
    """`true`, `false`, `null`, a number (exact `Decimal`) or a string."""

    value: bool | Decimal | str | None


@dataclass(frozen=True)
class Name:
    """A record attribute, already resolved to its column: `currentTxn.value` ->
    Name("currentTxn", "amount"); `currentTxn.extendedFields.X` -> Name("currentTxn", "X")."""

    namespace: str
    column: str


@dataclass(frozen=True)
class Unary:
    op: str  # "!" | "-"
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str  # one of BINARY_OPERATORS
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    """A function call; the method form `x.f(b)` parses to Call("f", (x, b))."""

    name: str
    args: tuple[Node, ...]


Node = Literal | Name | Unary | Binary | Call

TRUE = Literal(True)
