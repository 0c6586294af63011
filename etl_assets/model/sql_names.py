"""The tables a report's query names, read without a SQL parser (none is a dependency).

A small tokeniser (comments, string literals, dollar quotes and quoted identifiers are
skipped or kept whole, so a ``from`` inside them is not a clause) and a walk over its
tokens: what follows ``FROM`` (and each item of its comma list) or a ``JOIN`` is a table,
unless it is a sub-query, a function (``generate_series(...)``) or a name the query's own
``WITH`` defines. Enough for the reports' SELECTs; a statement it misreads is still checked
by the database when one answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>[EeBbXxUu]?'(?:[^']|'')*')
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$)
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<word>[A-Za-z_][\w$]*)
  | (?P<other>::|.)
    """,
    re.VERBOSE | re.DOTALL,
)
# A FROM inside these calls is the call's own syntax, not a clause: extract(year from t).
_FROM_IN_CALL = {"extract", "substring", "trim", "overlay", "position"}
# Words that end a FROM item's alias and column list (the clause after it begins).
_CLAUSE_END = {
    "where", "group", "order", "having", "limit", "offset", "window", "union", "except",
    "intersect", "on", "using", "join", "inner", "left", "right", "full", "cross", "natural",
    "fetch", "for", "returning", "select", "lateral",
}  # fmt: skip
_SKIPPED_BEFORE_ITEM = {"lateral", "only"}
# Flows and reports write to the default schema: PostgreSQL's unless search_path says otherwise.
DEFAULT_SCHEMAS = (None, "public")


@dataclass(frozen=True)
class _Token:
    kind: str  # word (lower-cased), quoted (an identifier, as spelled), other
    text: str
    offset: int


@dataclass(frozen=True)
class TableName:
    """A table as the query names it: ``schema`` when qualified, ``line`` within the query."""

    schema: str | None
    name: str
    line: int

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def in_default_schema(self) -> bool:
        """Where flows and reports write: a table of that name may be one they fill."""
        return self.schema in DEFAULT_SCHEMAS


def tables_named(query: str) -> list[TableName]:
    """Every table the query reads, in order of appearance, each once; CTE names left out."""
    tokens = _tokens(query)
    ctes = _cte_names(tokens)
    found: dict[tuple[str | None, str], TableName] = {}
    openers: list[str | None] = []  # per open parenthesis: the word before it
    for index, token in enumerate(tokens):
        if token.text == "(":
            previous = tokens[index - 1] if index else None
            openers.append(previous.text if previous is not None and previous.kind == "word" else None)
        elif token.text == ")" and openers:
            openers.pop()
        elif token.kind == "word" and token.text in ("from", "join"):
            if token.text == "from" and (
                (openers and openers[-1] in _FROM_IN_CALL)
                or (index and tokens[index - 1].text == "distinct")  # IS DISTINCT FROM
            ):
                continue
            for table in _items(tokens, index + 1, many=token.text == "from"):
                named = TableName(table[0], table[1], query.count("\n", 0, table[2]) + 1)
                if named.schema is None and named.name in ctes:
                    continue
                found.setdefault((named.schema, named.name), named)
    return list(found.values())


def _tokens(query: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(query):
        kind = match.lastgroup if match.lastgroup != "tag" else "dollar"
        if kind in ("space", "comment"):
            continue
        text = match.group()
        if kind == "word":
            text = text.lower()
        elif kind == "quoted":
            text = text[1:-1].replace('""', '"')
        tokens.append(_Token(kind or "other", text, match.start()))
    return tokens


def _cte_names(tokens: list[_Token]) -> set[str]:
    """The names ``WITH [RECURSIVE] a AS (...), b (x, y) AS (...)`` defines, anywhere."""
    names = set()
    for index, token in enumerate(tokens):
        if token.kind != "word" or token.text != "with":
            continue
        at = index + 1
        if at < len(tokens) and tokens[at].text == "recursive":
            at += 1
        while at < len(tokens) and tokens[at].kind in ("word", "quoted"):
            names.add(tokens[at].text)
            at = _skip_group(tokens, at + 1)  # the column list, if any
            while at < len(tokens) and tokens[at].text != "(":  # AS [NOT] MATERIALIZED
                at += 1
            at = _skip_group(tokens, at)
            if at < len(tokens) and tokens[at].text == ",":
                at += 1
            else:
                break
    return names


def _skip_group(tokens: list[_Token], at: int) -> int:
    """Past the parenthesised group starting at ``at`` (``at`` itself when none starts there)."""
    if at >= len(tokens) or tokens[at].text != "(":
        return at
    depth = 0
    for index in range(at, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[index].text, 0)
        if depth == 0:
            return index + 1
    return len(tokens)


def _items(tokens: list[_Token], at: int, many: bool) -> list[tuple[str | None, str, int]]:
    """The tables of the FROM items (or the one JOIN item) starting at ``at``: schema, name,
    offset. A sub-query's own tables are found by the walk, at their own FROM."""
    found = []
    while at < len(tokens):
        while at < len(tokens) and tokens[at].text in _SKIPPED_BEFORE_ITEM:
            at += 1
        name, at = _dotted(tokens, at)
        if name and not (at < len(tokens) and tokens[at].text == "("):  # not a function
            found.append(name)
        if not many:
            break
        while at < len(tokens):  # the alias and column list, up to the next item or clause
            token = tokens[at]
            if token.text == "(":
                at = _skip_group(tokens, at)
                continue
            if token.text in (")", ";") or (token.kind == "word" and token.text in _CLAUSE_END):
                return found
            at += 1
            if token.text == ",":
                break
        else:
            break
    return found


def _dotted(tokens: list[_Token], at: int) -> tuple[tuple[str | None, str, int] | None, int]:
    """``name``, ``schema.name`` or ``catalog.schema.name`` at ``at``, and the index after it."""
    parts: list[_Token] = []
    while at < len(tokens) and tokens[at].kind in ("word", "quoted"):
        parts.append(tokens[at])
        at += 1
        if at < len(tokens) and tokens[at].text == ".":
            at += 1
        else:
            break
    if not parts:
        return None, at
    schema = parts[-2].text if len(parts) > 1 else None
    return (schema, parts[-1].text, parts[0].offset), at
