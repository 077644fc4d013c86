"""Static type check of a rule tree, so a bad rule fails at `groups create` (300004), not mid-run.

Types are known for literals, operators and functions; a record attribute's type is known only
once data is loaded, so a `Name` is `UNKNOWN` and fits anywhere (the compiler casts it to the type
its context asks for). A rule must end in a condition: `currentTxn.value + 1`, `"abc"` or `5` are
rejected, while a bare attribute (`currentTxn.isVip`) is accepted as a boolean column.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum

import polars as pl

from pipeline.rules.parse import MAX_DEPTH, RuleError, to_text
from pipeline.rules.tree import (
    BINARY_OPERATORS,
    FUNCTIONS,
    NAMESPACES,
    Binary,
    Call,
    Literal,
    Name,
    Node,
    Unary,
)


class RuleType(Enum):
    """The static type of a rule (sub)expression."""

    BOOLEAN = "a condition"
    """true / false: comparisons, `!`, `&&`, `||` and the predicate functions."""
    NUMBER = "a number"
    """Exact decimals: number literals, arithmetic, `day`, `month`, `year`, `weekday`."""
    STRING = "text"
    """String literals."""
    NULL = "null"
    """The literal `null`: fits any type and makes comparisons null."""
    UNKNOWN = "an attribute"
    """A record attribute, typed only by the loaded data."""


ARITHMETIC = frozenset({"*", "/", "%", "+", "-"})
ORDERING = frozenset({"<", "<=", ">", ">="})
EQUALITY = frozenset({"==", "!="})
LOGICAL = frozenset({"&&", "||"})
NUMBER_FUNCTIONS = frozenset({"day", "month", "year", "weekday"})
DATE_FUNCTIONS = NUMBER_FUNCTIONS | {"isWeekend", "isWeekday", "isHourBetween"}

MAX_FRACTION_DIGITS = 4  # literals are compared as Decimal(38, 4): SPEC §3
MAX_INTEGER_DIGITS = 34

_ANY = frozenset(RuleType)
_BOOL_OK = frozenset({RuleType.BOOLEAN, RuleType.UNKNOWN, RuleType.NULL})
_NUMBER_OK = frozenset({RuleType.NUMBER, RuleType.UNKNOWN, RuleType.NULL})
_STRING_OK = frozenset({RuleType.STRING, RuleType.UNKNOWN, RuleType.NULL})
_TIME_OK = frozenset({RuleType.UNKNOWN, RuleType.NULL})  # timestamps come only from attributes


def result_type(node: Node) -> RuleType:
    """The type a node produces, from the node alone (its children do not change it)."""
    if isinstance(node, Literal):
        value = node.value
        if value is None:
            return RuleType.NULL
        if isinstance(value, bool):
            return RuleType.BOOLEAN
        return RuleType.NUMBER if isinstance(value, Decimal) else RuleType.STRING
    if isinstance(node, Name):
        return RuleType.UNKNOWN
    if isinstance(node, Unary):
        return RuleType.BOOLEAN if node.op == "!" else RuleType.NUMBER
    if isinstance(node, Binary):
        return RuleType.NUMBER if node.op in ARITHMETIC else RuleType.BOOLEAN
    return RuleType.NUMBER if node.name in NUMBER_FUNCTIONS else RuleType.BOOLEAN


def check_rule(node: Node) -> None:
    """Raise `RuleError` unless `node` is a well-typed condition.

    Raises:
        RuleError: a type mismatch, a wrong arity, an unknown function or namespace, a number
            literal finer than 4 decimal places, an invalid regular expression, or nesting
            deeper than `MAX_DEPTH`.
    """
    _check(node, 1)
    kind = result_type(node)
    if kind not in (RuleType.BOOLEAN, RuleType.UNKNOWN):
        raise RuleError(
            f"the rule must be a condition (true or false), but {_snippet(node)} is {kind.value}"
        )


def _check(node: Node, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise RuleError(f"rule nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, Literal):
        if isinstance(node.value, Decimal):
            _check_number(node.value)
    elif isinstance(node, Name):
        if node.namespace not in NAMESPACES:
            raise RuleError(f"unknown namespace {node.namespace!r}")
        if not node.column:
            raise RuleError(f"empty attribute name in namespace {node.namespace!r}")
    elif isinstance(node, Unary):
        _check(node.operand, depth + 1)
        if node.op == "!":
            _expect(node.operand, _BOOL_OK, "operator '!' needs a condition", node)
        elif node.op == "-":
            _expect(node.operand, _NUMBER_OK, "operator '-' needs a number", node)
        else:
            raise RuleError(f"unknown unary operator {node.op!r}")
    elif isinstance(node, Binary):
        _check(node.left, depth + 1)
        _check(node.right, depth + 1)
        _check_binary(node)
    elif isinstance(node, Call):
        for arg in node.args:
            _check(arg, depth + 1)
        _check_call(node)
    else:
        raise RuleError(f"not a rule node: {node!r}")


def _check_binary(node: Binary) -> None:
    op, what = node.op, f"operator {node.op!r}"
    if op not in BINARY_OPERATORS:
        raise RuleError(f"unknown binary operator {op!r}")
    if op in ARITHMETIC:
        for side in (node.left, node.right):
            _expect(side, _NUMBER_OK, f"{what} needs numbers", node)
    elif op in LOGICAL:
        for side in (node.left, node.right):
            _expect(side, _BOOL_OK, f"{what} needs conditions", node)
    else:
        if op in ORDERING:
            for side in (node.left, node.right):
                _expect(side, _ANY - {RuleType.BOOLEAN}, f"{what} cannot order conditions", node)
        _comparable([node.left, node.right], node)


def _check_call(node: Call) -> None:
    name, args = node.name, node.args
    if name not in FUNCTIONS:
        raise RuleError(f"unknown function {name!r} (known: {', '.join(FUNCTIONS)})")
    low, high = FUNCTIONS[name]
    if len(args) < low or (high is not None and len(args) > high):
        raise RuleError(f"{name}() got {len(args)} arguments in {_snippet(node)}")
    if name in ("contains", "matches"):
        for arg in args:
            _expect(arg, _STRING_OK, f"{name}() needs text", node)
        pattern = args[1]
        if name == "matches" and isinstance(pattern, Literal) and isinstance(pattern.value, str):
            _check_regex(pattern.value)
    elif name in DATE_FUNCTIONS:
        _expect(args[0], _TIME_OK, f"{name}() needs a date attribute such as currentTxn.date", node)
        for hour in args[1:]:  # isHourBetween(ts, from_hour, to_hour)
            _expect(hour, _NUMBER_OK, f"{name}() needs hours as numbers", node)
            if isinstance(hour, Literal) and isinstance(hour.value, Decimal):
                value = hour.value
                if value != value.to_integral_value() or not 0 <= value <= 24:
                    raise RuleError(f"{name}() hours must be whole numbers 0-24, got {value}")
    elif name == "in":
        _comparable(list(args), node)


def _comparable(nodes: list[Node], parent: Node) -> None:
    """Values compared with each other must agree on a type where their types are known."""
    known = {result_type(n) for n in nodes} - {RuleType.UNKNOWN, RuleType.NULL}
    if len(known) > 1:
        kinds = " with ".join(sorted(k.value for k in known))
        raise RuleError(f"cannot compare {kinds} in {_snippet(parent)}")


def _expect(node: Node, allowed: frozenset[RuleType], what: str, parent: Node) -> None:
    kind = result_type(node)
    if kind not in allowed:
        raise RuleError(f"{what}, but {_snippet(node)} is {kind.value} (in {_snippet(parent)})")


def _check_number(value: Decimal) -> None:
    _, digits, exponent = value.as_tuple()
    exponent = int(exponent)
    kept = list(digits)
    while exponent < 0 and len(kept) > 1 and kept[-1] == 0:  # 1.50000 has 1 decimal place
        kept.pop()
        exponent += 1
    if -exponent > MAX_FRACTION_DIGITS:
        raise RuleError(
            f"number {value} has more than {MAX_FRACTION_DIGITS} decimal places; "
            "values are exact to 4 places"
        )
    if value != 0 and value.adjusted() + 1 > MAX_INTEGER_DIGITS:
        raise RuleError(f"number {value} is too large (at most {MAX_INTEGER_DIGITS} digits)")


def _check_regex(pattern: str) -> None:
    """Compile the pattern with the engine that will run it (polars' Rust regex), which differs
    from Python's `re` (no look-around, no back-references)."""
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip().startswith("error:")]
        first = lines[0].removeprefix("error:").strip() if lines else "invalid syntax"
        raise RuleError(
            f"matches() has an invalid regular expression {pattern!r}: {first}"
        ) from None


def _snippet(node: Node) -> str:
    try:
        text = to_text(node)
    except (ValueError, RuleError):
        text = repr(node)
    return f"`{text}`" if len(text) <= 80 else f"`{text[:77]}...`"
