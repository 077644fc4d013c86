"""Both rule forms -> one `tree.Node`: the text `expression` and the AST `expressionJson`.

The text form is read by a small hand-written Pratt parser: the grammar is a dozen operators and
one call syntax, so a parser generator would add a dependency for no gain, and writing it by hand
gives exact error columns. Nothing is ever evaluated with `eval`.

Nesting is capped at `MAX_DEPTH` levels (parentheses, unary operators, calls and the height of the
resulting tree), so that hostile input such as ten thousand `(` ends in a `RuleError`, never a
`RecursionError`, and every later recursive pass (check, compile, render) stays shallow.

    >>> parse_rule("currentTxn.value > 500", None)  # doctest: +NORMALIZE_WHITESPACE
    Binary(op='>', left=Name(namespace='currentTxn', column='amount'),
           right=Literal(value=Decimal('500')))
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from pipeline.errors import InputError
from pipeline.rules.tree import (
    ALIASES,
    BINARY_OPERATORS,
    FUNCTIONS,
    NAMESPACES,
    TRUE,
    UNARY_OPERATORS,
    Binary,
    Call,
    Literal,
    Name,
    Node,
    Unary,
)

MAX_DEPTH = 200
"""Deepest nesting accepted, in either form; far beyond any real rule."""

EXTENDED_FIELDS = "extendedFields"


class RuleError(InputError):
    """A rule that does not parse or type-check.

    `position` is the 1-based column in the text form, or the node path (``operands[0]``) in the
    AST form, or None when the problem is the rule as a whole. The message already says where;
    the caller adds the field path (``targets[0].expression``).
    """

    def __init__(self, message: str, position: int | str | None = None) -> None:
        super().__init__(message)
        self.position = position


def parse_rule(expression: str | bool | None, expression_json: str | dict | None) -> Node:
    """Parse and type-check a target's rule; `expressionJson` wins when both are given.

    `true` (JSON boolean or text), `false` as a JSON boolean (the platform's "has no expression"
    flag), an empty or blank text and None all mean "every record": `TRUE`.

    Raises:
        RuleError: the rule does not parse, names an unknown namespace or function, has the wrong
            number of arguments, or is not a condition.
    """
    # check imports this module (RuleError, to_text), so it is imported here, not at the top.
    from pipeline.rules.check import check_rule

    if _given(expression_json):
        node = parse_json(expression_json)  # type: ignore[arg-type]
    elif isinstance(expression, bool) or expression is None:
        node = TRUE
    elif isinstance(expression, str):
        node = parse_text(expression)
    else:
        raise RuleError(f"expression must be text, got {type(expression).__name__}")
    check_rule(node)
    return node


def _given(expression_json: object) -> bool:
    if expression_json is None:
        return False
    return not (isinstance(expression_json, str) and not expression_json.strip())


# --------------------------------------------------------------------------- text form: tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # "number" | "string" | "ident" | "op" | "end"
    text: str
    pos: int  # 0-based offset into the rule text
    value: Any = None


_TWO_CHAR_OPS = ("<=", ">=", "==", "!=", "&&", "||")
_ONE_CHAR_OPS = "<>!-+*/%(),."
_HINTS = {"=": "use '==' to compare", "&": "use '&&'", "|": "use '||'"}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _where(text: str, pos: int) -> str:
    """'column 12', or 'line 2, column 3' for a rule written over several lines."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"column {column}" if line == 1 else f"line {line}, column {column}"


def _tokens(text: str) -> Iterator[_Token]:
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if ch in " \t\r\n":
            pos += 1
        elif ch.isdigit():
            m = _NUMBER.match(text, pos)
            assert m is not None  # a digit always matches
            yield _Token("number", m.group(), pos, Decimal(m.group()))
            pos = m.end()
        elif ch in "\"'":
            value, end = _string(text, pos)
            yield _Token("string", text[pos:end], pos, value)
            pos = end
        elif m := _IDENT.match(text, pos):
            yield _Token("ident", m.group(), pos)
            pos = m.end()
        elif text.startswith(_TWO_CHAR_OPS, pos):
            yield _Token("op", text[pos : pos + 2], pos)
            pos += 2
        elif ch in _ONE_CHAR_OPS:
            yield _Token("op", ch, pos)
            pos += 1
        else:
            hint = f" ({_HINTS[ch]})" if ch in _HINTS else ""
            raise RuleError(f"unexpected character {ch!r} at {_where(text, pos)}{hint}", pos + 1)
    yield _Token("end", "", n)


def _string(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string; JSON escapes plus \\' ; an unknown escape such as \\d is kept as
    written, so regular expressions need no doubled backslashes."""
    quote, out, pos = text[start], [], start + 1
    while pos < len(text):
        ch = text[pos]
        if ch == quote:
            return "".join(out), pos + 1
        if ch != "\\":
            out.append(ch)
            pos += 1
            continue
        esc = text[pos + 1 : pos + 2]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            pos += 2
        elif esc == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[pos + 2 : pos + 6]):
            out.append(chr(int(text[pos + 2 : pos + 6], 16)))
            pos += 6
        else:
            out.append("\\" + esc)
            pos += 1 + len(esc)
    raise RuleError(f"unterminated string starting at {_where(text, start)}", start + 1)


# --------------------------------------------------------------------------- text form: Pratt

# Binding powers, loosest first; every binary operator is left-associative.
_INFIX_BP = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 4,
    "<=": 4,
    ">": 4,
    ">=": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "%": 6,
}
_UNARY_BP = 7
_METHOD_BP = 8  # `x.f(b)` binds tightest: `-x.f()` is -(f(x))
_LITERAL_WORDS: dict[str, bool | None] = {"true": True, "false": False, "null": None}


class _TextParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = list(_tokens(text))
        self.i = 0

    # -- token helpers
    def peek(self, k: int = 0) -> _Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> _Token:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def is_op(self, text: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == "op" and tok.text == text

    def error(self, message: str, tok: _Token, hint: str = "") -> RuleError:
        hint = f" ({hint})" if hint else ""
        return RuleError(f"{message} at {_where(self.text, tok.pos)}{hint}", tok.pos + 1)

    def expect(self, op: str) -> _Token:
        if not self.is_op(op):
            raise self.error(f"expected {op!r}{self.found()}", self.peek())
        return self.advance()

    def found(self) -> str:
        tok = self.peek()
        return ", found end of rule" if tok.kind == "end" else f", found {tok.text!r}"

    def deep(self, depth: int, tok: _Token) -> int:
        if depth > MAX_DEPTH:
            raise self.error(f"rule nested deeper than {MAX_DEPTH} levels", tok)
        return depth

    # -- grammar
    def rule(self) -> Node:
        if self.peek().kind == "end":
            return TRUE
        node, _ = self.expr(0, 1)
        if self.peek().kind != "end":
            raise self.error(f"unexpected {self.peek().text!r}", self.peek())
        return node

    def expr(self, min_bp: int, nest: int) -> tuple[Node, int]:
        """Returns the node and its height (for the depth cap)."""
        self.deep(nest, self.peek())
        left, height = self.prefix(nest)
        while True:
            tok = self.peek()
            if tok.kind != "op":
                break
            if tok.text == "." and min_bp < _METHOD_BP:
                left, height = self.method(left, height, nest)
            elif tok.text in _INFIX_BP and _INFIX_BP[tok.text] > min_bp:
                self.advance()
                right, rh = self.expr(_INFIX_BP[tok.text], nest + 1)
                left = Binary(tok.text, left, right)
                height = self.deep(1 + max(height, rh), tok)
            else:
                break
        return left, height

    def prefix(self, nest: int) -> tuple[Node, int]:
        tok = self.advance()
        if tok.kind in ("number", "string"):
            return Literal(tok.value), 1
        if tok.kind == "ident":
            return self.identifier(tok, nest)
        if tok.kind == "op" and tok.text == "(":
            node, height = self.expr(0, nest + 1)
            self.expect(")")
            return node, height
        if tok.kind == "op" and tok.text in UNARY_OPERATORS:
            bare_number = self.peek().kind == "number"
            start = self.i
            operand, height = self.expr(_UNARY_BP, nest + 1)
            if tok.text == "-" and bare_number and self.i == start + 1:
                # `-5` is the literal -5, as in the AST form; `-(5)` stays a negation.
                assert isinstance(operand, Literal) and isinstance(operand.value, Decimal)
                return Literal(operand.value.copy_negate()), 1
            return Unary(tok.text, operand), self.deep(height + 1, tok)
        if tok.kind == "end":
            raise self.error("unexpected end of rule (expected a value)", tok)
        raise self.error(f"unexpected {tok.text!r}", tok)

    def identifier(self, tok: _Token, nest: int) -> tuple[Node, int]:
        if self.is_op("("):
            self.advance()
            args, height = self.arguments(nest)
            fail = partial(self.error, tok=tok)
            return _call(tok.text, tuple(a for a, _ in args), fail), height
        if tok.text in _LITERAL_WORDS:
            return Literal(_LITERAL_WORDS[tok.text]), 1
        parts = [tok.text]
        # An attribute followed by `(` is a method: `currentTxn.storeId.contains("5")`.
        while self.is_op(".") and self.peek(1).kind == "ident" and not self.is_op("(", 2):
            self.advance()
            parts.append(self.advance().text)
        return _name(parts, partial(self.error, tok=tok)), 1

    def method(self, receiver: Node, height: int, nest: int) -> tuple[Node, int]:
        dot = self.advance()
        name = self.advance()
        if name.kind != "ident":
            raise self.error("expected a method name after '.'", name)
        if not self.is_op("("):
            raise self.error(f"expected '(' after method name {name.text!r}", self.peek())
        self.advance()
        args, arg_height = self.arguments(nest)
        node = _call(name.text, (receiver, *(a for a, _ in args)), partial(self.error, tok=name))
        return node, self.deep(1 + max(height, arg_height), dot)

    def arguments(self, nest: int) -> tuple[list[tuple[Node, int]], int]:
        """Arguments after `(`, through the closing `)`; returns them and the call's height."""
        args: list[tuple[Node, int]] = []
        if not self.is_op(")"):
            while True:
                args.append(self.expr(0, nest + 1))
                if self.is_op(","):
                    self.advance()
                    continue
                if not self.is_op(")"):
                    raise self.error(f"expected ',' or ')'{self.found()}", self.peek())
                break
        close = self.advance()
        return args, self.deep(1 + max((h for _, h in args), default=0), close)


def parse_text(text: str) -> Node:
    """Parse the text form (no type check). Empty or blank text is `TRUE`."""
    return _TextParser(text).rule()


# --------------------------------------------------------------------------- shared resolution

_Fail = Callable[..., RuleError]  # (message, hint=...) -> the error, located by the caller


def _name(parts: list[str], fail: _Fail) -> Name:
    """`namespace.attr[.attr...]` -> Name, applying SPEC §4's aliases.

    `ns.extendedFields.X` is the column X in every namespace (the platform writes transaction extra
    fields that way). Several attributes without `extendedFields` join with '.' into one column
    name (`currentEvent.cart.total` -> column `cart.total`), the way flattened JSON lines name them.
    """
    namespace, attrs = parts[0], parts[1:]
    if namespace not in NAMESPACES:
        if not attrs:
            hint = "write namespace.attribute, e.g. currentTxn.value"
            raise fail(f"unknown name {namespace!r}", hint=hint)
        raise fail(f"unknown namespace {namespace!r}", hint=f"use {_one_of(NAMESPACES)}")
    if not attrs:
        raise fail(f"expected an attribute after {namespace!r}, e.g. {namespace}.<attribute>")
    if attrs[0] == EXTENDED_FIELDS:
        if len(attrs) == 1:
            raise fail(f"expected a field name after '{namespace}.{EXTENDED_FIELDS}'")
        return Name(namespace, ".".join(attrs[1:]))
    if len(attrs) == 1:
        return Name(namespace, ALIASES[namespace].get(attrs[0], attrs[0]))
    return Name(namespace, ".".join(attrs))


def _call(name: str, args: tuple[Node, ...], fail: _Fail) -> Call:
    if name not in FUNCTIONS:
        raise fail(f"unknown function {name!r}", hint=f"known: {', '.join(FUNCTIONS)}")
    low, high = FUNCTIONS[name]
    if len(args) < low or (high is not None and len(args) > high):
        want = f"{low}" if low == high else f"at least {low}" if high is None else f"{low}-{high}"
        plural = "" if want == "1" else "s"
        raise fail(f"{name}() takes {want} argument{plural}, got {len(args)}")
    return Call(name, args)


def _one_of(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


# --------------------------------------------------------------------------- AST form


def parse_json(expression_json: str | dict) -> Node:
    """Parse the AST form (no type check): a JSON string, as in the seeds, or a decoded dict."""
    if isinstance(expression_json, str):
        try:
            # parse_float keeps literals like 500.5 exact from the start.
            obj = json.loads(expression_json, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise RuleError(
                f"expressionJson is not valid JSON: {exc.msg} at column {exc.colno}", exc.colno
            ) from None
        except RecursionError:
            raise _too_deep() from None
    else:
        obj = expression_json
    return _AstReader().node(obj, "", 1)


class _AstReader:
    def error(self, message: str, path: str, hint: str = "") -> RuleError:
        hint = f" ({hint})" if hint else ""
        where = f"{_node_path(path)} of expressionJson"
        return RuleError(f"{message} at {where}{hint}", path.lstrip(".") or "root")

    def node(self, obj: Any, path: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise _too_deep()
        if not isinstance(obj, dict) or not isinstance(obj.get("arity"), str):
            raise self.error("expected an object with an 'arity' field", path)
        arity = obj["arity"]
        if arity == "literal":
            return Literal(self.literal(obj.get("value"), obj.get("type"), path))
        if arity in ("name", "object_dereference"):
            return _name(self.name_parts(obj, path, depth), partial(self.error, path=path))
        if arity == "binary_operation":
            left, right = self.operands(obj, path, depth, 2)
            op = obj.get("value")
            if op not in BINARY_OPERATORS:
                raise self.error(f"unknown binary operator {op!r}", path)
            return Binary(op, left, right)
        if arity == "unary_operation":
            (operand,) = self.operands(obj, path, depth, 1)
            op = obj.get("value")
            if op not in UNARY_OPERATORS:
                raise self.error(f"unknown unary operator {op!r}", path)
            if op == "-" and isinstance(operand, Literal) and isinstance(operand.value, Decimal):
                return Literal(operand.value.copy_negate())  # the same tree as the text `-5`
            return Unary(op, operand)
        if arity == "function_call":
            name = obj.get("value")
            args = self.operands(obj, path, depth, None)
            return _call(str(name), tuple(args), partial(self.error, path=path))
        raise self.error(f"unknown arity {arity!r}", path)

    def operands(self, obj: dict, path: str, depth: int, count: int | None) -> list[Node]:
        ops = obj.get("operands", [])
        if not isinstance(ops, list) or (count is not None and len(ops) != count):
            raise self.error(f"{obj['arity']} needs {count} operand(s) in 'operands'", path)
        return [self.node(o, f"{path}.operands[{i}]", depth + 1) for i, o in enumerate(ops)]

    def name_parts(self, obj: dict, path: str, depth: int) -> list[str]:
        """Flatten `object_dereference(object_dereference(a, b), c)` into [a, b, c] without
        recursion, so a hostile chain cannot exhaust the stack."""
        tail: list[str] = []
        while obj.get("arity") == "object_dereference":
            depth += 1
            ops = obj.get("operands")
            if depth > MAX_DEPTH:
                raise _too_deep()
            if not isinstance(ops, list) or len(ops) != 2:
                raise self.error("object_dereference needs 2 operands", path)
            right = ops[1]
            if not isinstance(right, dict) or right.get("arity") != "name":
                raise self.error("expected a name node on the right of object_dereference", path)
            tail.append(self.word(right, f"{path}.operands[1]"))
            obj, path = ops[0], f"{path}.operands[0]"
            if not isinstance(obj, dict):
                raise self.error("expected an object with an 'arity' field", path)
        if obj.get("arity") != "name":
            raise self.error("expected a name node", path)
        return [self.word(obj, path), *reversed(tail)]

    def word(self, obj: dict, path: str) -> str:
        value = obj.get("value")
        if not isinstance(value, str) or not value:
            raise self.error("a name node needs a text 'value'", path)
        return value

    def literal(self, value: Any, type_: Any, path: str) -> bool | Decimal | str | None:
        """The platform writes every literal value as text ("500", "true") and tags its type
        (`number:primitive`); the tag decides, so the string "500" stays a string. Untagged values
        are read by their look."""
        kind = type_.split(":", 1)[0].lower() if isinstance(type_, str) else ""
        if value is None or kind == "null":
            return None
        if kind in ("boolean", "bool") or (not kind and isinstance(value, bool)):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise self.error(f"boolean literal {value!r} is not true or false", path)
        if kind in ("number", "real", "integer", "int", "long", "double", "decimal"):
            return self.number(value, path)
        if kind == "string":
            return str(value)
        if isinstance(value, int | float | Decimal):
            return self.number(value, path)
        if isinstance(value, str):
            if value in ("true", "false"):
                return value == "true"
            if value == "null":
                return None
            if re.fullmatch(r"-?\d+(?:\.\d+)?", value):
                return Decimal(value)
            return value
        raise self.error(f"unsupported literal value {value!r}", path)

    def number(self, value: Any, path: str) -> Decimal:
        if isinstance(value, bool):
            raise self.error(f"number literal {value!r} is a boolean", path)
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise self.error(f"number literal {value!r} is not a number", path) from None
        if not number.is_finite():
            raise self.error(f"number literal {value!r} is not finite", path)
        return number


def _too_deep() -> RuleError:
    # No node path: at this depth it would be thousands of characters long.
    return RuleError(f"expressionJson nested deeper than {MAX_DEPTH} levels")


def _node_path(path: str) -> str:
    return f"node {path.lstrip('.')}" if path else "the root node"


# --------------------------------------------------------------------------- rendering


def to_text(node: Node) -> str:
    """Render a tree as rule text that parses back to an equal tree (fully parenthesised).

    >>> to_text(parse_text("currentTxn.value > 500 && !isNull(currentTxn.storeId)"))
    '((currentTxn.amount > 500) && !(isNull(currentTxn.store_id)))'
    """
    return _render(node, 1)


def _render(node: Node, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise RuleError(f"rule nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, Literal):
        return _render_literal(node.value)
    if isinstance(node, Name):
        return _render_name(node)
    if isinstance(node, Unary):
        return f"{node.op}({_render(node.operand, depth + 1)})"
    if isinstance(node, Binary):
        return f"({_render(node.left, depth + 1)} {node.op} {_render(node.right, depth + 1)})"
    if isinstance(node, Call):
        return f"{node.name}({', '.join(_render(a, depth + 1) for a in node.args)})"
    raise TypeError(f"not a rule node: {node!r}")


def _render_literal(value: bool | Decimal | str | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")  # never exponent notation, which the grammar lacks
    return json.dumps(value, ensure_ascii=False)


def _render_name(node: Name) -> str:
    column = node.column
    parts = column.split(".")
    if not all(_IDENT.fullmatch(p) for p in parts):
        raise ValueError(f"column {column!r} cannot be written in rule text")
    plain = (
        len(parts) == 1
        and column != EXTENDED_FIELDS
        and ALIASES.get(node.namespace, {}).get(column, column) == column
    )
    # A column that an alias would rename (a transaction column literally called `value`) or a
    # dotted one is written through extendedFields, which is never aliased.
    return f"{node.namespace}.{column}" if plain else f"{node.namespace}.{EXTENDED_FIELDS}.{column}"
