"""The rule language (SPEC §4): text and AST forms parse to one tree, which is type-checked and
compiled to a vectorised polars expression.

    >>> rule = parse_rule("currentTxn.value > 500", None)
    >>> expr = compile_rule(rule, lambda namespace, column: pl.col(column), "UTC")
"""

from __future__ import annotations

from pipeline.rules.check import RuleType, check_rule
from pipeline.rules.compile import compile_rule, rule_columns
from pipeline.rules.parse import MAX_DEPTH, RuleError, parse_json, parse_rule, parse_text, to_text
from pipeline.rules.tree import TRUE, Binary, Call, Literal, Name, Node, Unary

__all__ = [
    "MAX_DEPTH",
    "TRUE",
    "Binary",
    "Call",
    "Literal",
    "Name",
    "Node",
    "RuleError",
    "RuleType",
    "Unary",
    "check_rule",
    "compile_rule",
    "parse_json",
    "parse_rule",
    "parse_text",
    "rule_columns",
    "to_text",
]
