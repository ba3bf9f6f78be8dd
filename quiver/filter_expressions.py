"""Filters written the way people write them, for the CLI: `lang == "en" and year >= 2020 and tag in ["a", "b"]`.

Parsed by lark (an Earley/LALR parser library) into `quiver.filters`; a mistake is reported with the column
it is at and what was expected there. The language:

    comparison   field == value, field != value, field < number (<=, >, >=)
    membership   field in [value, ...], field not in [...]
    strings      tags contains "x" (a string-list field holds "x"), exists(field)
    logic        and, or, not, parentheses; `and` binds tighter than `or`
    values       "double-quoted strings", numbers, true, false
    fields       names, dotted names allowed (a.b), or any name in backticks: `my field`
"""
from __future__ import annotations

import json

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from quiver.filters import And, Contains, Eq, Exists, Filter, In, Not, Or, Range, Scalar

_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr ("or"i and_expr)*      -> any_of
?and_expr: not_expr ("and"i not_expr)*    -> all_of
?not_expr: "not"i not_expr                -> negation
         | atom
?atom: "(" or_expr ")"
     | field COMPARE value                -> comparison
     | field "in"i list                   -> member
     | field "not"i "in"i list            -> not_member
     | field "contains"i STRING           -> contains
     | "exists"i "(" field ")"            -> exists
list: "[" [value ("," value)*] "]"
?value: STRING -> string
      | NUMBER -> number
      | "true"i -> true
      | "false"i -> false
field: NAME | QUOTED_NAME
COMPARE: "==" | "!=" | "<=" | ">=" | "<" | ">"
NAME: /(?!(?i:and|or|not|in|contains|exists|true|false)\b)[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/
QUOTED_NAME: /`[^`]+`/
STRING: /"(\\.|[^"\\])*"/
NUMBER: /-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?/
%ignore /\s+/
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


class FilterSyntaxError(ValueError):
    """A filter expression that does not parse; the message points at the column."""


@v_args(inline=True)
class _ToFilter(Transformer):  # type: ignore[type-arg]
    def field(self, token: Token) -> str:
        text = str(token)
        return text[1:-1] if text.startswith("`") else text

    def string(self, token: Token) -> str:
        return str(json.loads(str(token)))

    def number(self, token: Token) -> int | float:
        text = str(token)
        return float(text) if any(c in text for c in ".eE") else int(text)

    def true(self) -> bool:
        return True

    def false(self) -> bool:
        return False

    def list(self, *values: Scalar) -> tuple[Scalar, ...]:
        return tuple(values)

    def any_of(self, *clauses: Filter) -> Filter:
        return clauses[0] if len(clauses) == 1 else Or(tuple(clauses))

    def all_of(self, *clauses: Filter) -> Filter:
        return clauses[0] if len(clauses) == 1 else And(tuple(clauses))

    def negation(self, clause: Filter) -> Filter:
        return Not(clause)

    def comparison(self, field: str, op: Token, value: Scalar) -> Filter:
        if op in ("==", "!="):
            eq = Eq(field, value)
            return eq if op == "==" else Not(eq)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FilterSyntaxError(f"{field} {op} {json.dumps(value)}: {op} compares numbers; use == for strings and booleans")
        bound = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[str(op)]
        return Range(field, **{bound: float(value)})

    def member(self, field: str, values: tuple[Scalar, ...]) -> Filter:
        if not values:
            raise FilterSyntaxError(f"{field} in []: the list is empty, so nothing would match")
        return In(field, values)

    def not_member(self, field: str, values: tuple[Scalar, ...]) -> Filter:
        return Not(self.member(field, values))

    def contains(self, field: str, token: Token) -> Filter:
        return Contains(field, self.string(token))

    def exists(self, field: str) -> Filter:
        return Exists(field)


def parse_filter_expression(text: str) -> Filter:
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise FilterSyntaxError(_explain(text, error)) from None
    try:
        return _ToFilter().transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, FilterSyntaxError):
            raise error.orig_exc from None
        raise


def _explain(text: str, error: UnexpectedInput) -> str:
    column = getattr(error, "column", None)
    at_end = isinstance(error, UnexpectedEOF) or (isinstance(error, UnexpectedToken) and error.token.type == "$END")
    if at_end or column is None or column < 1:
        column, what = len(text) + 1, "the filter ends too soon"
    elif isinstance(error, UnexpectedCharacters):
        what = f"unexpected {text[column - 1]!r}"
    elif isinstance(error, UnexpectedToken):
        what = f"unexpected {error.token!s}" if error.token.type != "$END" else "the filter ends too soon"
    else:
        what = "cannot parse here"
    expected = sorted(getattr(error, "expected", None) or getattr(error, "allowed", None) or [])
    hint = f"; expected one of: {', '.join(_readable(e) for e in expected[:8])}" if expected else ""
    return f"bad filter at column {column}: {what}{hint}\n  {text}\n  {' ' * (column - 1)}^"


_READABLE = {"COMPARE": "a comparison (== != < <= > >=)", "NAME": "a field name", "QUOTED_NAME": "a `quoted field`",
             "STRING": "a \"string\"", "NUMBER": "a number", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]",
             "COMMA": ",", "IN": "in", "NOT": "not", "AND": "and", "OR": "or", "TRUE": "true", "FALSE": "false",
             "CONTAINS": "contains", "EXISTS": "exists"}


def _readable(terminal: str) -> str:
    return _READABLE.get(terminal, terminal.lower())
