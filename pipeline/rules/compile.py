"""Rule tree -> one vectorised, boolean `pl.Expr` with SQL's three-valued logic.

The compiler knows no dtypes (the engine's `resolve` hands back bare column expressions), so the
*context* of an attribute decides how it is read, the way a typed SQL literal does:

- next to a number (a literal, arithmetic, `day()`...) it is read as `Decimal(38, 4)`, non-strictly:
  integer and decimal columns compare exactly and never through float, and a text id such as
  `store_id = "50679757"` compares as the number 50679757 (text that is not a number is null);
- next to text (a string literal, `contains`, `matches`) it is read as text, so an integer id
  column compares with `"50679757"` too;
- otherwise (attribute against attribute, a bare boolean attribute) it is used as loaded.

Arithmetic is exact `Decimal(38, 4)`: each result is rounded half-to-even to 4 places, `%` takes
the sign of the divisor, and a division or modulo by zero is null. Null propagates through
comparisons and arithmetic; `&&`, `||` and `!` are polars' Kleene operators (`null || true` is
true, `null && false` is false).
"""

from __future__ import annotations

import operator
import zoneinfo
from collections.abc import Callable
from decimal import Decimal
from functools import reduce

import polars as pl

from pipeline.errors import InputError
from pipeline.rules.check import (
    ARITHMETIC,
    DATE_FUNCTIONS,
    LOGICAL,
    RuleType,
    check_rule,
    result_type,
)
from pipeline.rules.tree import Binary, Call, Literal, Name, Node, Unary

DECIMAL = pl.Decimal(38, 4)

Resolve = Callable[[str, str], pl.Expr]
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


def compile_rule(node: Node, resolve: Resolve, tz: str) -> pl.Expr:
    """Compile a rule to a boolean expression; true rows count, false and null rows do not.

    Args:
        node: a rule tree (checked again here: trees may also be built by hand).
        resolve: maps (namespace, column) to the record's column expression.
        tz: IANA zone in which `day`, `month`, `weekday`, `isHourBetween`... read timestamps.

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
    return _Compiler(resolve, tz).expr(node, RuleType.BOOLEAN)


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
    def __init__(self, resolve: Resolve, tz: str) -> None:
        self.resolve = resolve
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
        domain = _domain([node.left, node.right])
        left, right = self.expr(node.left, domain), self.expr(node.right, domain)
        if RuleType.NULL in (result_type(node.left), result_type(node.right)):
            return pl.lit(None, dtype=pl.Boolean)  # a comparison with null is null
        return _COMPARE[node.op](left, right)

    def call(self, node: Call) -> pl.Expr:
        name, args = node.name, node.args
        if name in ("contains", "matches"):
            text, pattern = (self.expr(a, RuleType.STRING) for a in args)
            if any(result_type(a) is RuleType.NULL for a in args):
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
        if result_type(args[0]) is RuleType.NULL:
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
        """`in(x, a, b, ...)` is `x == a || x == b || ...`, SQL's IN: null when x is null, or when
        nothing matches and a candidate is null."""
        target, candidates = node.args[0], node.args[1:]
        domain = _domain(list(node.args))
        value = self.expr(target, domain)
        parts: list[pl.Expr] = []
        # One `is_in` for the literal candidates of an attribute (a long store list stays one
        # vectorised lookup); a constant target does not broadcast through `is_in` in polars.
        batch = bool(rule_columns(target))
        constants = [c.value for c in candidates if isinstance(c, Literal) and c.value is not None]
        if batch and constants:
            values = pl.Series(constants, dtype=_DTYPES.get(domain or RuleType.BOOLEAN))
            parts.append(value.is_in(values.implode()))
        for candidate in candidates:
            if isinstance(candidate, Literal) and (batch or candidate.value is None):
                continue
            parts.append(value == self.expr(candidate, domain))
        if result_type(target) is RuleType.NULL or any(
            isinstance(c, Literal) and c.value is None for c in candidates
        ):
            parts.append(pl.lit(None, dtype=pl.Boolean))
        return reduce(operator.or_, parts)

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


def _domain(nodes: list[Node]) -> RuleType | None:
    """The type that values compared with each other are read as: a known type wins."""
    kinds = {result_type(n) for n in nodes}
    for kind in (RuleType.NUMBER, RuleType.STRING, RuleType.BOOLEAN):
        if kind in kinds:
            return kind
    return None
