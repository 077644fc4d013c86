"""The rule parser: both forms to one tree, errors with positions, and hostile input."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.rules import (
    MAX_DEPTH,
    TRUE,
    Binary,
    Call,
    Literal,
    Name,
    Node,
    RuleError,
    Unary,
    parse_json,
    parse_rule,
    parse_text,
    to_text,
)
from pipeline.rules.tree import BINARY_OPERATORS, FUNCTIONS, NAMESPACES

FIXTURES = Path(__file__).parent / "fixtures" / "rules"

STREAK_SEED_JSON = (
    '{"arity":"binary_operation","value":">","type":"boolean:primitive","operands":[{"arity":'
    '"object_dereference","type":"real:object:primitive","operands":[{"arity":"name","value":'
    '"currentTxn","type":"tx:object:primitive"},{"arity":"name","value":"value","type":'
    '"real:object:primitive"}]},{"arity":"literal","value":"500","type":"number:primitive"}]}'
)
TRUE_SEED_JSON = '{"arity":"literal","value":"true","type":"boolean:primitive"}'


def golden_pairs(name: str) -> list[Any]:
    """(input, expected) pairs from a fixture file: two lines each, blank-line separated."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    blocks = "\n".join(lines).strip().split("\n\n")
    pairs = []
    for block in blocks:
        source, expected = block.strip("\n").split("\n")
        pairs.append(pytest.param(source.strip(), expected, id=source.strip()[:60]))
    return pairs


# --------------------------------------------------------------------------- golden pairs


@pytest.mark.parametrize(("source", "expected"), golden_pairs("parse.txt"))
def test_parse_golden(source: str, expected: str) -> None:
    assert to_text(parse_rule(source, None)) == expected


@pytest.mark.parametrize(("source", "expected"), golden_pairs("ast.txt"))
def test_ast_golden(source: str, expected: str) -> None:
    node = parse_rule(None, source)
    assert to_text(node) == expected
    # ...and the rendered text parses to the very same tree.
    assert parse_rule(expected, None) == node


@pytest.mark.parametrize(("source", "expected"), golden_pairs("errors.txt"))
def test_text_errors_golden(source: str, expected: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(source, None)
    assert str(info.value) == expected


@pytest.mark.parametrize(("source", "expected"), golden_pairs("ast_errors.txt"))
def test_ast_errors_golden(source: str, expected: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(None, source)
    assert str(info.value) == expected


# --------------------------------------------------------------------------- the two forms


def test_streak_seed_text_and_ast_give_one_tree() -> None:
    expected = Binary(">", Name("currentTxn", "amount"), Literal(Decimal(500)))
    assert parse_rule("currentTxn.value>500", None) == expected
    assert parse_rule(None, STREAK_SEED_JSON) == expected
    assert parse_rule(None, json.loads(STREAK_SEED_JSON)) == expected  # already decoded


@pytest.mark.parametrize(
    ("expression", "expression_json"),
    [
        pytest.param(True, TRUE_SEED_JSON, id="seed: JSON true and literal AST"),
        pytest.param("true", TRUE_SEED_JSON, id="seed: text true and literal AST"),
        pytest.param(True, None, id="JSON boolean true"),
        pytest.param(False, None, id="JSON boolean false = no expression"),
        pytest.param("true", None, id="text true"),
        pytest.param("", None, id="empty text"),
        pytest.param("  \n\t ", None, id="blank text"),
        pytest.param(None, None, id="nothing"),
        pytest.param(None, "", id="empty expressionJson falls back to expression"),
    ],
)
def test_every_record_forms_are_true(expression: Any, expression_json: Any) -> None:
    assert parse_rule(expression, expression_json) == TRUE


def test_expression_json_wins_over_expression() -> None:
    # The text would not even parse; with an AST present it is not read.
    assert parse_rule("currentTxn.value >", STREAK_SEED_JSON) == parse_rule(
        "currentTxn.value > 500", None
    )


def test_text_false_is_a_rule_that_never_holds() -> None:
    assert parse_rule("false", None) == Literal(False)


def test_expression_of_another_type_is_an_error() -> None:
    with pytest.raises(RuleError, match="expression must be text, got int"):
        parse_rule(5, None)  # type: ignore[arg-type]


def test_rule_error_is_an_input_error_with_a_position() -> None:
    with pytest.raises(RuleError) as info:
        parse_rule("currentTxn.value > 1 && foo()", None)
    assert isinstance(info.value, InputError)
    assert info.value.exit_code == 1
    assert info.value.position == 25
    with pytest.raises(RuleError) as info:
        parse_rule(
            None,
            {
                "arity": "binary_operation",
                "value": "&&",
                "operands": [{"arity": "literal", "value": True}, {"arity": "name", "value": "x"}],
            },
        )
    assert info.value.position == "operands[1]"


def test_multi_line_rule_reports_line_and_column() -> None:
    with pytest.raises(RuleError, match=r"unknown namespace 'txn' at line 2, column 4"):
        parse_rule("currentTxn.value > 1\n&& txn.x", None)


def test_method_call_is_the_function_with_its_receiver_first() -> None:
    assert parse_text('currentTxn.storeId.contains("5")') == parse_text(
        'contains(currentTxn.storeId, "5")'
    )


def test_unknown_escape_is_kept_for_regexes() -> None:
    assert parse_text(r'currentTxn.x == "\d\q"') == Binary(
        "==", Name("currentTxn", "x"), Literal("\\d\\q")
    )


def test_ast_literal_types_decide_over_looks() -> None:
    def literal(value: Any, type_: str | None = None) -> dict[str, Any]:
        return {"arity": "literal", "value": value, **({"type": type_} if type_ else {})}

    assert parse_json(literal("500", "string:primitive")) == Literal("500")
    assert parse_json(literal("500", "number:primitive")) == Literal(Decimal(500))
    assert parse_json(literal("500")) == Literal(Decimal(500))
    assert parse_json(literal(7)) == Literal(Decimal(7))
    assert parse_json(literal("-2.5")) == Literal(Decimal("-2.5"))
    assert parse_json(literal("TRUE", "boolean:primitive")) == Literal(True)
    assert parse_json(literal("null")) == Literal(None)
    assert parse_json(literal("gold")) == Literal("gold")


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("(" * 10_000 + "true" + ")" * 10_000, id="10,000 parentheses"),
        pytest.param("!" * 10_000 + "true", id="10,000 negations"),
        pytest.param("-" * 10_000 + "1 > 0", id="10,000 minus signs"),
        pytest.param(" || ".join(["true"] * 10_000), id="10,000 long flat chain"),
        pytest.param("isNull(" * 10_000 + "null" + ")" * 10_000, id="10,000 nested calls"),
        pytest.param("currentTxn.x" + ".day()" * 10_000 + " > 1", id="10,000 method calls"),
    ],
)
def test_deep_text_is_a_rule_error_not_a_crash(source: str) -> None:
    with pytest.raises(RuleError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_rule(source, None)


def deep_unary(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"arity": "literal", "value": "true"}
    for _ in range(depth):
        node = {"arity": "unary_operation", "value": "!", "operands": [node]}
    return node


def deep_dereference(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"arity": "name", "value": "currentTxn"}
    for _ in range(depth):
        node = {"arity": "object_dereference", "operands": [node, {"arity": "name", "value": "a"}]}
    return node


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            '{"arity":"unary_operation","value":"!","operands":[' * 10_000
            + '{"arity":"literal","value":"true"}'
            + "]}" * 10_000,
            id="JSON text 10,000 deep",
        ),
        pytest.param("[" * 10_000 + "]" * 10_000, id="JSON arrays 10,000 deep"),
        pytest.param(deep_unary(10_000), id="decoded dict 10,000 deep"),
        pytest.param(deep_dereference(10_000), id="dereference chain 10,000 deep"),
    ],
)
def test_deep_json_is_a_rule_error_not_a_crash(source: Any) -> None:
    with pytest.raises(RuleError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_rule(None, source)


def test_nesting_just_under_the_cap_parses() -> None:
    depth = MAX_DEPTH - 1
    assert parse_rule("(" * depth + "true" + ")" * depth, None) == TRUE
    assert parse_rule(None, deep_unary(MAX_DEPTH - 1)) is not None


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('ls')",
        "currentTxn.value; drop table x",
        "currentTxn.value > 1)",
        "((currentTxn.value > 1)",
        "lambda: 1",
        "currentTxn.value > 1 and true",
        "`ls`",
    ],
)
def test_injection_attempts_are_rule_errors(source: str) -> None:
    with pytest.raises(RuleError):
        parse_rule(source, None)


def test_negative_literal_keeps_every_digit() -> None:
    # Regression: negating through the default 28-digit context rounded long literals.
    digits = "145171438245.87754192559848659"
    assert parse_text(f"-{digits}") == Literal(Decimal(f"-{digits}"))
    assert parse_json(
        {
            "arity": "unary_operation",
            "value": "-",
            "operands": [{"arity": "literal", "value": digits, "type": "number:primitive"}],
        }
    ) == Literal(Decimal(f"-{digits}"))


def test_dunder_attributes_are_only_column_names() -> None:
    # Names are looked up as columns of a frame, never as Python attributes.
    assert parse_text("currentTxn.__class__.__bases__ > 1") == Binary(
        ">", Name("currentTxn", "__class__.__bases__"), Literal(Decimal(1))
    )


# --------------------------------------------------------------------------- round trips

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
COLUMNS = st.one_of(
    IDENT,
    st.sampled_from(["value", "code", "extendedFields", "amount", "date", "in", "true"]),
    st.lists(IDENT, min_size=2, max_size=3).map(".".join),  # dotted, via extendedFields
)
LITERALS = st.one_of(
    st.booleans(),
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
).map(Literal)
NAMES = st.builds(Name, st.sampled_from(NAMESPACES), COLUMNS)


def _calls(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    def build(name: str) -> st.SearchStrategy[Node]:
        low, high = FUNCTIONS[name]
        args = st.lists(children, min_size=low, max_size=high if high is not None else low + 3)
        return args.map(lambda a: Call(name, tuple(a)))

    return st.sampled_from(sorted(FUNCTIONS)).flatmap(build)


TREES: st.SearchStrategy[Node] = st.recursive(
    st.one_of(LITERALS, NAMES),
    lambda children: st.one_of(
        st.builds(Unary, st.sampled_from(["!", "-"]), children),
        st.builds(Binary, st.sampled_from(BINARY_OPERATORS), children, children),
        _calls(children),
    ),
    max_leaves=25,
)


@given(TREES)
def test_tree_to_text_to_tree_round_trips(tree: Node) -> None:
    assert parse_text(to_text(tree)) == tree


def to_ast(node: Node) -> dict[str, Any]:
    """Write a tree in the platform's AST form, the way its UI does (values as text, typed)."""
    if isinstance(node, Literal):
        value = node.value
        if value is None:
            return {"arity": "literal", "value": None}
        if isinstance(value, bool):
            return {"arity": "literal", "value": str(value).lower(), "type": "boolean:primitive"}
        if isinstance(value, Decimal):
            return {"arity": "literal", "value": format(value, "f"), "type": "number:primitive"}
        return {"arity": "literal", "value": value, "type": "string:primitive"}
    if isinstance(node, Name):
        parts = [node.namespace, "extendedFields", *node.column.split(".")]
        obj: dict[str, Any] = {"arity": "name", "value": parts[0]}
        for part in parts[1:]:
            obj = {
                "arity": "object_dereference",
                "operands": [obj, {"arity": "name", "value": part}],
            }
        return obj
    if isinstance(node, Unary):
        return {"arity": "unary_operation", "value": node.op, "operands": [to_ast(node.operand)]}
    if isinstance(node, Binary):
        operands = [to_ast(node.left), to_ast(node.right)]
        return {"arity": "binary_operation", "value": node.op, "operands": operands}
    return {
        "arity": "function_call",
        "value": node.name,
        "operands": [to_ast(a) for a in node.args],
    }


def _negates_a_number(node: Node) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Unary):
            operand = item.operand
            if (
                item.op == "-"
                and isinstance(operand, Literal)
                and isinstance(operand.value, Decimal)
            ):
                return True
            stack.append(item.operand)
        elif isinstance(item, Binary):
            stack += [item.left, item.right]
        elif isinstance(item, Call):
            stack += item.args
    return False


@given(TREES)
def test_text_and_ast_forms_give_equal_trees(tree: Node) -> None:
    # The AST form has no parentheses, so `-(5)` and `-5` are one AST, read as the literal -5.
    assume(not _negates_a_number(tree))
    assert parse_json(json.dumps(to_ast(tree))) == parse_text(to_text(tree)) == tree
