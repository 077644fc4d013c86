"""Rule tree -> one vectorised, boolean `pl.Expr` with SQL's three-valued logic.

The compiler knows no dtypes (the engine's `resolve` hands back bare column expressions), so the
*context* of an attribute decides how it is read, the way a typed SQL literal does:

- next to a number (a literal, arithmetic, `day()`...) it is read as `Decimal(38, 4)`, non-strictly:
  integer and decimal columns compare exactly and never through float, and a text id such as
  `store_id = "50679757"` compares as the number 50679757; text that is not a number equals no
  number (`==` false, `!=` true) and orders as null;
- next to text (a string literal, `contains`, `matches`) it is read as text, so an integer id
  column compares with `"50679757"` too; a record timestamp (`currentTxn.date`...) against an ISO
  date text compares as instants, a naive text being wall-clock time in the group's zone;
- otherwise (attribute against attribute, a bare boolean attribute) it is used as loaded.

Arithmetic is exact `Decimal(38, 4)`: each result is rounded half-to-even to 4 places, `%` takes
the sign of the divisor, and a division or modulo by zero is null. Null propagates through
comparisons and arithmetic; `&&`, `||` and `!` are polars' Kleene operators (`null || true` is
true, `null && false` is false). `in(x, ...)` is null only when x is null.
"""

from __future__ import annotations

import operator
import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import reduce

import polars as pl

from pipeline.errors import InputError
from pipeline.rules.check import (
    ARITHMETIC,
    DATE_FUNCTIONS,
    EQUALITY,
    LOGICAL,
    NUMBER_FUNCTIONS,
    RuleType,
    check_rule,
    result_type,
)
from pipeline.rules.tree import Binary, Call, Literal, Name, Node, Unary

DECIMAL = pl.Decimal(38, 4)
TIMESTAMP_COLUMNS = frozenset({"txn_time", "event_time", "awarded_at"})  # SPEC §3
_ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}:\d{2})?"
)

Resolve = Callable[[str, str], pl.Expr]
DtypeOf = Callable[[str, str], "pl.DataType | None"]
"""(namespace, column) -> the column's expression; raises `MissingAttributeError` when absent."""

_DTYPES: dict[RuleType, pl.DataType] = {
    RuleType.NUMBER: DECIMAL,
    RuleType.STRING: pl.String(),
    RuleType.BOOLEAN: pl.Boolean(),
}
_COMPARE: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITHMETIC: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}


def compile_rule(node: Node, resolve: Resolve, tz: str, dtype: DtypeOf | None = None) -> pl.Expr:
    """Compile a rule to a boolean expression; true rows count, false and null rows do not.

    Args:
        node: a rule tree (checked again here: trees may also be built by hand).
        resolve: maps (namespace, column) to the record's column expression.
        tz: IANA zone in which `day`, `month`, `weekday`, `isHourBetween`... read timestamps.
        dtype: optional (namespace, column) -> the loaded dtype; with it, a numeric column
            compared with a numeric-looking text literal (`amount == "500"`) compares as numbers.

    Raises:
        RuleError: the tree does not type-check.
        MissingAttributeError: from `resolve`, unchanged.
        InputError: `tz` is not a known zone and the rule reads dates.

        >>> rule = parse_rule("currentTxn.value > 500", None)
        >>> pl.DataFrame({"amount": [1, 501]}).select(
        ...     compile_rule(rule, lambda ns, col: pl.col(col), "UTC")).to_series().to_list()
        [False, True]
    """
    check_rule(node)
    return _Compiler(resolve, tz, dtype).expr(node, RuleType.BOOLEAN)


def rule_columns(node: Node) -> set[tuple[str, str]]:
    """Every (namespace, column) the rule reads, so the engine can report missing ones up front."""
    found: set[tuple[str, str]] = set()
    stack = [node]  # iterative: a hand-built tree may be deeper than the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, Name):
            found.add((item.namespace, item.column))
        elif isinstance(item, Unary):
            stack.append(item.operand)
        elif isinstance(item, Binary):
            stack.extend((item.left, item.right))
        elif isinstance(item, Call):
            stack.extend(item.args)
    return found


class _Compiler:
    def __init__(self, resolve: Resolve, tz: str, dtype: DtypeOf | None = None) -> None:
        self.resolve = resolve
        self.dtype = dtype
        self.tz = tz
        self.tz_checked = False

    def expr(self, node: Node, want: RuleType | None) -> pl.Expr:
        """Compile `node`, reading attributes and nulls as `want` (None: as loaded)."""
        if isinstance(node, Literal):
            return self.literal(node.value, want)
        if isinstance(node, Name):
            column = self.resolve(node.namespace, node.column)
            if want is RuleType.NUMBER:
                return column.cast(DECIMAL, strict=False)
            if want is RuleType.STRING:
                return column.cast(pl.String)
            return column
        if result_type(node) is RuleType.NUMBER and _always_null(node):
            for namespace, column in rule_columns(node):
                self.resolve(namespace, column)  # a missing attribute is still reported
            # Folded here: polars' optimiser mis-broadcasts arithmetic on null literals.
            return pl.lit(None, dtype=DECIMAL)
        if isinstance(node, Unary):
            if node.op == "!":
                return ~self.expr(node.operand, RuleType.BOOLEAN)
            return -self.expr(node.operand, RuleType.NUMBER)
        if isinstance(node, Binary):
            return self.binary(node)
        return self.call(node)

    def literal(self, value: bool | Decimal | str | None, want: RuleType | None) -> pl.Expr:
        if value is None:
            return pl.lit(None, dtype=_DTYPES[want] if want in _DTYPES else pl.Null())
        if isinstance(value, bool):
            return pl.lit(value, dtype=pl.Boolean)
        if isinstance(value, Decimal):
            return pl.lit(value, dtype=DECIMAL)
        return pl.lit(value, dtype=pl.String)

    def binary(self, node: Binary) -> pl.Expr:
        if node.op in LOGICAL:
            left = self.expr(node.left, RuleType.BOOLEAN)
            right = self.expr(node.right, RuleType.BOOLEAN)
            return left & right if node.op == "&&" else left | right
        if node.op in ARITHMETIC:
            left = self.expr(node.left, RuleType.NUMBER)
            right = self.expr(node.right, RuleType.NUMBER)
            if node.op in ("/", "%"):
                # Both branches of a `when` are evaluated, so zero divisors are nulled first.
                right = pl.when(right != 0).then(right)
            return _ARITHMETIC[node.op](left, right)
        return self.compare(node.op, node.left, node.right)

    def compare(self, op: str, left_node: Node, right_node: Node) -> pl.Expr:
        if self.dtype is not None:
            for name, lit in ((left_node, right_node), (right_node, left_node)):
                if (
                    self.is_numeric_column(name)
                    and isinstance(lit, Literal)
                    and isinstance(lit.value, str)
                ):
                    number = _as_decimal(lit.value)
                    if number is None:  # text that is no number equals no number
                        column = self.resolve(name.namespace, name.column)  # type: ignore[union-attr]
                        verdict = pl.lit(op == "!=") if op in EQUALITY else pl.lit(None)
                        return pl.when(column.is_null()).then(None).otherwise(verdict)
                    swapped = Literal(number)
                    if lit is right_node:
                        right_node = swapped
                    else:
                        left_node = swapped
        stamps = self.instants(left_node, right_node)
        if stamps is not None:
            return _COMPARE[op](*stamps)
        domain = _domain([left_node, right_node])
        left, right = self.expr(left_node, domain), self.expr(right_node, domain)
        if _always_null(left_node) or _always_null(right_node):
            return pl.lit(None, dtype=pl.Boolean)  # a comparison with null is null
        result = _COMPARE[op](left, right)
        if domain is RuleType.NUMBER and op in EQUALITY:
            # Text that is not a number equals no number: `storeId != 5` holds for "S-9".
            for node, own, other in ((left_node, left, right), (right_node, right, left)):
                if isinstance(node, Name):
                    raw = self.resolve(node.namespace, node.column)
                    odd = raw.is_not_null() & own.is_null() & other.is_not_null()
                    result = pl.when(odd).then(pl.lit(op == "!=")).otherwise(result)
        return result

    def is_numeric_column(self, node: Node) -> bool:
        if self.dtype is None or not isinstance(node, Name):
            return False
        found = self.dtype(node.namespace, node.column)
        return found is not None and found.is_numeric()

    def instants(self, left: Node, right: Node) -> tuple[pl.Expr, pl.Expr] | None:
        """A record timestamp against an ISO date text ("2024-02-01", naive = the group's zone)
        compares as instants, not as text."""
        for stamp, text, flip in ((left, right, False), (right, left, True)):
            if _is_timestamp(stamp) and (moment := self.instant(text)) is not None:
                assert isinstance(stamp, Name)
                column = self.resolve(stamp.namespace, stamp.column)
                value = pl.lit(moment, dtype=pl.Datetime("us", "UTC"))
                return (value, column) if flip else (column, value)
        return None

    def instant(self, node: Node) -> datetime | None:
        if not (isinstance(node, Literal) and isinstance(node.value, str)):
            return None
        if not _ISO_DATE.fullmatch(node.value):
            return None
        try:
            moment = datetime.fromisoformat(node.value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zoneinfo.ZoneInfo(self.zone()))
        return moment.astimezone(UTC)

    def call(self, node: Call) -> pl.Expr:
        name, args = node.name, node.args
        if name in ("contains", "matches"):
            text, pattern = (self.expr(a, RuleType.STRING) for a in args)
            if any(_always_null(a) for a in args):
                # Also sidesteps polars failing to broadcast `null.str.contains(col)`.
                return pl.lit(None, dtype=pl.Boolean)
            if isinstance(args[1], Literal) and isinstance(args[1].value, str):
                pattern = args[1].value  # a plain pattern lets polars compile the regex once
            return text.str.contains(pattern, literal=name == "contains")
        if name == "isNull":
            return self.expr(args[0], None).is_null()
        if name == "isNotNull":
            return self.expr(args[0], None).is_not_null()
        if name in DATE_FUNCTIONS:
            return self.date_call(node)
        return self.in_list(node)

    def date_call(self, node: Call) -> pl.Expr:
        name, args = node.name, node.args
        kind = RuleType.NUMBER if name in ("day", "month", "year", "weekday") else RuleType.BOOLEAN
        hours = [self.expr(a, RuleType.NUMBER) for a in args[1:]]
        if _always_null(args[0]):
            return pl.lit(None, dtype=_DTYPES[kind])
        local = self.expr(args[0], None).dt.convert_time_zone(self.zone())
        if name in ("day", "month", "year", "weekday"):
            part = getattr(local.dt, name)()  # weekday(): 1 = Monday ... 7 = Sunday
            return part.cast(DECIMAL)
        if name == "isWeekend":
            return local.dt.weekday() >= 6
        if name == "isWeekday":
            return local.dt.weekday() <= 5
        hour = local.dt.hour().cast(DECIMAL)
        low, high = hours
        inside = (hour >= low) & (hour < high)
        wrapped = (hour >= low) | (hour < high)  # isHourBetween(ts, 22, 6): over midnight
        return (
            pl.when(low.is_null() | high.is_null())
            .then(pl.lit(None, dtype=pl.Boolean))
            .when(low <= high)
            .then(inside)
            .otherwise(wrapped)
        )

    def in_list(self, node: Call) -> pl.Expr:
        """`in(x, a, b, ...)`: whether x equals a candidate. Null only when x is null; null
        candidates are skipped, so `in(x, "a", null)` is false for "b", not null."""
        target, candidates = node.args[0], node.args[1:]
        domain = _domain(list(node.args))
        live = [c for c in candidates if not _always_null(c)]
        if _always_null(target):
            for candidate in live:
                self.expr(candidate, domain)  # still resolve every attribute
            return pl.lit(None, dtype=pl.Boolean)
        # One `is_in` for the literal candidates of an attribute keeps a long store list one
        # vectorised lookup; a constant target does not broadcast through `is_in` in polars.
        batch = bool(rule_columns(target)) and not _is_timestamp(target)
        parts: list[pl.Expr] = []
        constants = [c.value for c in live if isinstance(c, Literal)] if batch else []
        if constants:
            values = pl.Series(constants, dtype=_DTYPES.get(domain or RuleType.BOOLEAN))
            parts.append(self.expr(target, domain).is_in(values.implode()).fill_null(False))
        for candidate in live:
            if not (constants and isinstance(candidate, Literal)):
                parts.append(self.compare("==", target, candidate).fill_null(False))
        hit = reduce(operator.or_, parts) if parts else pl.lit(False)
        present = self.expr(target, None).is_not_null()  # as loaded: "S-9" is present
        return pl.when(present).then(hit).otherwise(pl.lit(None, dtype=pl.Boolean))

    def zone(self) -> str:
        if not self.tz_checked:
            try:
                zoneinfo.ZoneInfo(self.tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise InputError(
                    f"unknown time zone {self.tz!r}: use an IANA name such as 'Asia/Kolkata'"
                ) from None
            self.tz_checked = True
        return self.tz


def _as_decimal(text: str) -> Decimal | None:
    """A plain number written as text (`"500"`, `"-1.25"`), else None."""
    if not re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*", text):
        return None
    return Decimal(text.strip())


def _always_null(node: Node) -> bool:
    """Null whatever the record: `null`, and numbers computed from it (`-null`, `1 + null`,
    `day(null)`). Depth is bounded by `check_rule`."""
    if isinstance(node, Literal):
        return node.value is None
    if isinstance(node, Unary):
        return node.op == "-" and _always_null(node.operand)
    if isinstance(node, Binary):
        return node.op in ARITHMETIC and (_always_null(node.left) or _always_null(node.right))
    if isinstance(node, Call):
        return node.name in NUMBER_FUNCTIONS and _always_null(node.args[0])
    return False


def _is_timestamp(node: Node) -> bool:
    return isinstance(node, Name) and node.column in TIMESTAMP_COLUMNS


def _domain(nodes: list[Node]) -> RuleType | None:
    """The type that values compared with each other are read as: a known type wins."""
    kinds = {result_type(n) for n in nodes}
    for kind in (RuleType.NUMBER, RuleType.STRING, RuleType.BOOLEAN):
        if kind in kinds:
            return kind
    return None
