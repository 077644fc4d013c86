"""The rule compiler: golden frames, three-valued logic, zones, and a per-row reference."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, MissingAttributeError
from pipeline.rules import (
    Binary,
    Call,
    Literal,
    Name,
    Node,
    RuleError,
    Unary,
    compile_rule,
    parse_rule,
    rule_columns,
)
from pipeline.rules.check import RuleType, result_type

FIXTURES = Path(__file__).parent / "fixtures" / "rules"
DECIMAL = pl.Decimal(38, 4)
DTYPES: dict[str, pl.DataType] = {
    "decimal": DECIMAL,
    "int": pl.Int64(),
    "str": pl.String(),
    "bool": pl.Boolean(),
    "ts": pl.Datetime("us", "UTC"),
}
BOOLS = {"true": True, "false": False, "null": None}


def frame_resolver(frame: pl.DataFrame) -> Callable[[str, str], pl.Expr]:
    """Like the engine's: `namespace.column` when the frame has it, else `column`."""

    def resolve(namespace: str, column: str) -> pl.Expr:
        for name in (f"{namespace}.{column}", column):
            if name in frame.columns:
                return pl.col(name)
        raise MissingAttributeError(f"rule attribute {namespace}.{column}: no such column")

    return resolve


def evaluate(rule: str | Node, frame: pl.DataFrame, tz: str = "UTC") -> list[bool | None]:
    node = parse_rule(rule, None) if isinstance(rule, str) else rule
    expr = compile_rule(node, frame_resolver(frame), tz)
    # with_columns broadcasts a constant rule (`true`) to every row, as the engine's frames do.
    return frame.with_columns(_rule=expr).get_column("_rule").to_list()


# --------------------------------------------------------------------------- golden frames


def _cell(value: str, kind: str) -> Any:
    if value == "null":
        return None
    if value.startswith('"'):
        return json.loads(value)
    if kind == "decimal":
        return Decimal(value)
    if kind == "int":
        return int(value)
    if kind == "bool":
        return BOOLS[value]
    if kind == "ts":
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def golden_cases(name: str) -> list[Any]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    lines = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    header, *pairs = re.split(r"\n\s*\n", lines.strip())
    tz, columns = "UTC", {}
    for line in header.splitlines():
        head, *cells = (c.strip() for c in line.split("|"))
        key, _, kind = (h.strip() for h in head.partition(":"))
        if key == "tz":
            tz = kind
        else:
            columns[key] = pl.Series(key, [_cell(c, kind) for c in cells], dtype=DTYPES[kind])
    frame = pl.DataFrame(list(columns.values()))
    cases = []
    for pair in pairs:
        rule, expected = pair.strip().splitlines()
        values = [BOOLS[v.strip()] for v in expected.split(",")]
        cases.append(pytest.param(rule.strip(), frame, tz, values, id=f"{name}: {rule.strip()}"))
    return cases


@pytest.mark.parametrize(
    ("rule", "frame", "tz", "expected"),
    golden_cases("compile_transactions.txt") + golden_cases("compile_dates.txt"),
)
def test_compile_golden(rule: str, frame: pl.DataFrame, tz: str, expected: list[Any]) -> None:
    assert evaluate(rule, frame, tz) == expected


# --------------------------------------------------------------------------- three-valued logic

KLEENE = [True, False, None]
TRUTH = pl.DataFrame(
    {
        "a": pl.Series([a for a in KLEENE for _ in KLEENE], dtype=pl.Boolean),
        "b": pl.Series([b for _ in KLEENE for b in KLEENE], dtype=pl.Boolean),
    }
)


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


@pytest.mark.parametrize(
    ("rule", "truth"),
    [
        pytest.param("currentTxn.a && currentTxn.b", _and, id="and"),
        pytest.param("currentTxn.a || currentTxn.b", _or, id="or"),
        pytest.param("!currentTxn.a", lambda a, b: None if a is None else not a, id="not"),
        pytest.param(
            "currentTxn.a == currentTxn.b", lambda a, b: None if None in (a, b) else a == b, id="eq"
        ),
    ],
)
def test_three_valued_truth_tables(rule: str, truth: Callable[..., bool | None]) -> None:
    expected = [truth(a, b) for a, b in zip(TRUTH["a"], TRUTH["b"], strict=True)]
    assert evaluate(rule, TRUTH) == expected


def test_null_or_true_is_true_and_null_and_false_is_false() -> None:
    frame = pl.DataFrame({"amount": pl.Series([None], dtype=DECIMAL)})
    assert evaluate("currentTxn.value > 1 || true", frame) == [True]
    assert evaluate("currentTxn.value > 1 && false", frame) == [False]
    assert evaluate("currentTxn.value > 1 && true", frame) == [None]


# --------------------------------------------------------------------------- zones, numbers


@pytest.mark.parametrize(
    ("tz", "day", "month", "weekday"),
    [
        pytest.param("UTC", 31, 1, 3, id="UTC: still Wednesday 31 January"),
        pytest.param("Asia/Kolkata", 1, 2, 4, id="Kolkata: already Thursday 1 February"),
        pytest.param("America/New_York", 31, 1, 3, id="New York: 31 January, 15:00"),
    ],
)
def test_day_boundary_depends_on_the_zone(tz: str, day: int, month: int, weekday: int) -> None:
    instant = datetime(2024, 1, 31, 20, 0, tzinfo=UTC)
    frame = pl.DataFrame({"txn_time": pl.Series([instant], dtype=pl.Datetime("us", "UTC"))})
    assert evaluate(f"day(currentTxn.date) == {day}", frame, tz) == [True]
    assert evaluate(f"month(currentTxn.date) == {month}", frame, tz) == [True]
    assert evaluate(f"weekday(currentTxn.date) == {weekday}", frame, tz) == [True]


def test_decimals_compare_without_float() -> None:
    # 0.1 + 0.2 == 0.3 is false in floats; a 100.00 target must land exactly.
    frame = pl.DataFrame({"amount": pl.Series([Decimal("0.1")], dtype=DECIMAL)})
    assert evaluate("currentTxn.value + 0.2 == 0.3", frame) == [True]
    ints = pl.DataFrame({"qty": pl.Series([3], dtype=pl.Int64)})
    assert evaluate("currentTxn.totalQty / 10 == 0.3", ints) == [True]
    assert evaluate("currentTxn.totalQty > 2.9999", ints) == [True]


def test_float_column_is_read_as_decimal() -> None:
    frame = pl.DataFrame({"amount": [100.0, 99.99]})
    assert evaluate("currentTxn.value >= 100", frame) == [True, False]


def test_missing_attribute_propagates_from_resolve() -> None:
    frame = pl.DataFrame({"amount": [1]})
    with pytest.raises(MissingAttributeError, match=r"currentTxn\.tier"):
        evaluate('currentTxn.value > 0 && currentTxn.tier == "gold"', frame)


def test_unknown_zone_is_an_input_error() -> None:
    frame = pl.DataFrame({"txn_time": [datetime(2024, 1, 1, tzinfo=UTC)]})
    with pytest.raises(InputError, match="unknown time zone 'Mars/Olympus'"):
        evaluate("day(currentTxn.date) == 1", frame, "Mars/Olympus")


def test_compile_checks_hand_built_trees() -> None:
    with pytest.raises(RuleError, match="must be a condition"):
        compile_rule(Literal(Decimal(5)), frame_resolver(pl.DataFrame()), "UTC")


def test_rule_columns_lists_every_attribute_once() -> None:
    rule = parse_rule(
        'currentTxn.value > 1 && (contains(currentStore.zone, "n") || currentTxn.value < 9)'
        " && isWeekend(currentTxn.date)",
        None,
    )
    assert rule_columns(rule) == {
        ("currentTxn", "amount"),
        ("currentStore", "zone_id"),
        ("currentTxn", "txn_time"),
    }
    assert rule_columns(parse_rule(True, None)) == set()


# --------------------------------------------------------------------------- per-row reference

QUANTUM = Decimal("0.0001")
LIMIT = Decimal(10) ** 34
TZS = ["UTC", "Asia/Kolkata", "America/New_York", "Australia/Adelaide"]
REGEXES = ["^a", "b$", "a.c", "[0-9]+", "ab|c", "^$", r"5\.", "c*", "^[0-9]{2}$"]


class Overflow(Exception):
    """The reference left Decimal(38, 4), where polars raises (documented, not compared)."""


def _q(value: Decimal) -> Decimal:
    value = value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
    if abs(value) >= LIMIT:
        raise Overflow
    return value


def _number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(value) if re.fullmatch(r"[0-9]+", value) else None  # generated text only


def _domain(nodes: list[Node]) -> RuleType | None:
    kinds = {result_type(n) for n in nodes}
    return next(
        (k for k in (RuleType.NUMBER, RuleType.STRING, RuleType.BOOLEAN) if k in kinds), None
    )


_CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le}
_CMP |= {">": operator.gt, ">=": operator.ge}


def reference(node: Node, row: dict[str, Any], tz: str, want: RuleType | None = None) -> Any:
    """A naive per-row interpreter of SPEC §4 with the compiler's documented readings."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        value = row[node.column]
        return _number(value) if want is RuleType.NUMBER else value
    if isinstance(node, Unary):
        value = reference(node.operand, row, tz, RuleType.NUMBER if node.op == "-" else None)
        return None if value is None else (-value if node.op == "-" else not value)
    if isinstance(node, Binary):
        return _reference_binary(node, row, tz)
    return _reference_call(node, row, tz)


def _reference_binary(node: Binary, row: dict[str, Any], tz: str) -> Any:
    if node.op in ("&&", "||"):
        left, right = reference(node.left, row, tz), reference(node.right, row, tz)
        return _and(left, right) if node.op == "&&" else _or(left, right)
    if node.op in "+-*/%":
        left = reference(node.left, row, tz, RuleType.NUMBER)
        right = reference(node.right, row, tz, RuleType.NUMBER)
        if left is None or right is None or (node.op in "/%" and right == 0):
            return None
        with localcontext() as ctx:
            ctx.prec = 120
            if node.op == "%":  # floored, like polars: the result takes the divisor's sign
                return _q(left - right * (left / right).to_integral_value(rounding=ROUND_FLOOR))
            ops = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
            return _q(ops[node.op](left, right))
    return _reference_compare(node.op, node.left, node.right, row, tz)


def _reference_compare(op: str, a: Node, b: Node, row: dict[str, Any], tz: str) -> Any:
    domain = _domain([a, b])
    left, right = reference(a, row, tz, domain), reference(b, row, tz, domain)
    if domain is RuleType.NUMBER and op in ("==", "!="):
        # Text that is not a number equals no number (raw value present, number absent).
        for node, own, other in ((a, left, right), (b, right, left)):
            named = isinstance(node, Name) and row[node.column] is not None
            if named and own is None and other is not None:
                return op == "!="
    return None if left is None or right is None else _CMP[op](left, right)


def _reference_call(node: Call, row: dict[str, Any], tz: str) -> Any:
    name, args = node.name, node.args
    if name in ("isNull", "isNotNull"):
        return (reference(args[0], row, tz) is None) == (name == "isNull")
    if name == "in":
        if reference(args[0], row, tz) is None:
            return None
        return any(_reference_compare("==", args[0], c, row, tz) is True for c in args[1:])
    text = name in ("contains", "matches")
    wants = [RuleType.STRING] * 2 if text else [None, RuleType.NUMBER, RuleType.NUMBER]
    values = [reference(a, row, tz, want) for a, want in zip(args, wants, strict=False)]
    if None in values:
        return None
    if name == "contains":
        return values[1] in values[0]
    if name == "matches":
        return re.search(values[1], values[0]) is not None
    local = values[0].astimezone(ZoneInfo(tz))
    if name == "isHourBetween":
        low, high = values[1], values[2]
        return low <= local.hour < high if low <= high else (local.hour >= low or local.hour < high)
    parts = {"day": local.day, "month": local.month, "year": local.year}
    parts |= {"weekday": local.isoweekday()}
    if name in parts:
        return Decimal(parts[name])
    return (local.isoweekday() >= 6) == (name == "isWeekend")


def nm(column: str) -> Name:
    return Name("currentTxn", column)


ROWS = st.fixed_dictionaries(
    {
        "amount": st.none() | st.decimals(min_value=-10_000, max_value=10_000, places=4),
        "qty": st.none() | st.integers(-100, 100),
        "code": st.none() | st.sampled_from(["", "0", "05", "7", "12", "ab", "x7"]),
        "label": st.none() | st.text(alphabet="abc5.", max_size=4),
        "flag": st.none() | st.booleans(),
        "ts": st.none()
        | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31)).map(
            lambda d: d.replace(tzinfo=UTC)
        ),
    }
)
SCHEMA = {
    "amount": DECIMAL,
    "qty": pl.Int64(),
    "code": pl.String(),
    "label": pl.String(),
    "flag": pl.Boolean(),
    "ts": pl.Datetime("us", "UTC"),
}

NULL = st.just(Literal(None))
NUMBER_LITERALS = st.decimals(min_value=-100, max_value=100, places=2).map(Literal)
TEXT_LITERALS = st.text(alphabet="abc5.", max_size=3).map(Literal)
NUMERIC_NAMES = st.sampled_from(["amount", "qty", "code"]).map(nm)
TEXT_NAMES = st.sampled_from(["code", "label"]).map(nm)
TIMESTAMPS = st.just(nm("ts")) | NULL
HOURS = st.integers(0, 24).map(lambda h: Literal(Decimal(h)))


def numbers(depth: int) -> st.SearchStrategy[Node]:
    leaves = NUMBER_LITERALS | NUMERIC_NAMES | NULL
    if depth == 0:
        return leaves
    inner = numbers(depth - 1)
    return st.one_of(
        leaves,
        st.builds(Binary, st.sampled_from(["+", "-", "*", "/", "%"]), inner, inner),
        st.builds(Unary, st.just("-"), inner),
        st.builds(
            lambda f, ts: Call(f, (ts,)),
            st.sampled_from(["day", "month", "year", "weekday"]),
            TIMESTAMPS,
        ),
    )


def _comparable(a: Node, b: Node) -> bool:
    # Two bare attributes compare as loaded; text against a number column would be a user error.
    return not (
        isinstance(a, Name) and isinstance(b, Name) and "code" in {a.column, b.column} and a != b
    )


def conditions(depth: int) -> st.SearchStrategy[Node]:
    texts = TEXT_LITERALS | TEXT_NAMES | NULL
    leaves = st.one_of(
        st.sampled_from([Literal(True), Literal(False), Literal(None), nm("flag")]),
        st.builds(
            lambda f, ts: Call(f, (ts,)), st.sampled_from(["isWeekend", "isWeekday"]), TIMESTAMPS
        ),
        st.builds(lambda ts, a, b: Call("isHourBetween", (ts, a, b)), TIMESTAMPS, HOURS, HOURS),
        st.builds(
            lambda f, s, r: Call(f, (s, Literal(r))),
            st.just("matches"),
            texts,
            st.sampled_from(REGEXES),
        ),
        st.builds(lambda s, t: Call("contains", (s, t)), texts, texts),
    )
    if depth == 0:
        return leaves
    inner, nums = conditions(depth - 1), numbers(depth - 1)
    ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
    return st.one_of(
        leaves,
        st.builds(Binary, ops, nums, nums).filter(lambda b: _comparable(b.left, b.right)),
        st.builds(Binary, ops, texts, texts),
        st.builds(Binary, st.sampled_from(["&&", "||"]), inner, inner),
        st.builds(Unary, st.just("!"), inner),
        st.builds(
            lambda f, x: Call(f, (x,)), st.sampled_from(["isNull", "isNotNull"]), nums | texts
        ),
        st.builds(
            lambda x, c: Call("in", (x, *c)), nums, st.lists(nums, min_size=1, max_size=3)
        ).filter(lambda call: all(_comparable(call.args[0], c) for c in call.args[1:])),
        st.builds(lambda x, c: Call("in", (x, *c)), texts, st.lists(texts, min_size=1, max_size=3)),
    )


RULES = conditions(3).filter(lambda n: n != Literal(None))  # a bare `null` rule is rejected


@settings(max_examples=300, deadline=None)
@given(RULES, st.lists(ROWS, max_size=6), st.sampled_from(TZS))
def test_compiled_rules_agree_with_a_per_row_reference(
    rule: Node, rows: list[dict[str, Any]], tz: str
) -> None:
    try:
        expected = [reference(rule, row, tz) for row in rows]
    except Overflow:
        assume(False)  # beyond Decimal(38, 4) polars raises instead; documented, not compared
    frame = pl.DataFrame(rows, schema=SCHEMA)
    assert evaluate(rule, frame, tz) == expected


@given(RULES, st.lists(ROWS, min_size=2, max_size=6), st.randoms())
def test_row_order_does_not_change_a_rows_result(
    rule: Node, rows: list[dict[str, Any]], rnd: Any
) -> None:
    frame = pl.DataFrame(rows, schema=SCHEMA).with_row_index("i")
    try:
        before = dict(zip(frame["i"], evaluate(rule, frame), strict=True))
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=rnd.randint(0, 2**31))
        after = dict(zip(shuffled["i"], evaluate(rule, shuffled), strict=True))
    except pl.exceptions.ComputeError:
        assume(False)  # Decimal(38, 4) overflow, covered by the reference test's assume
    assert before == after


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param('currentTxn.value == "500"', [True, False, None], id="numeric text equals"),
        pytest.param('currentTxn.value != "abc"', [True, True, None], id="non-number text differs"),
        pytest.param('currentTxn.value < "501"', [True, False, None], id="numeric text orders"),
    ],
)
def test_numeric_column_against_numeric_text_compares_as_numbers_when_dtypes_are_known(
    text: str, expected: list[bool | None]
) -> None:
    frame = pl.DataFrame({"amount": [500, 501, None]}).cast(pl.Decimal(18, 4))
    rule = compile_rule(
        parse_rule(text, None),
        lambda ns, col: pl.col(col),
        "UTC",
        lambda ns, col: frame.schema.get(col),
    )
    assert frame.select(rule).to_series().to_list() == expected
