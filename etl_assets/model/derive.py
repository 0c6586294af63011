"""A map field's ``derive:``: the value computed from other map fields, and what it requires.

Two forms, neither evaluating Python text:

- a template, ``"{first_name} {last_name}"``: the named fields' typed values as text between
  the literal text (``{{`` and ``}}`` for a brace); a null field gives empty text, the result is
  stripped and an empty result is null (a missing last name gives the first name alone);
- a Method, ``module:function``: ``function(**fields) -> pl.Expr``, each parameter named after
  a map field and given that field's typed column (``def full_name(first_name, last_name)``).

Each field provides its own name; a derive requires the fields it names. A name that is no map
field, a derive of itself or a cycle is refused at ``map.<field>.derive``; derived fields are
computed after the fields they require, in ``derive_order``.
"""

from __future__ import annotations

import inspect
import string
from graphlib import CycleError, TopologicalSorter
from typing import Any

from etl_assets.model.functions import load_function

Problems = list[tuple[tuple[str | int, ...], Any, str]]


def is_template(derive: str) -> bool:
    """A template names its fields in braces; anything else is a Method's ``module:function``."""
    return "{" in derive or "}" in derive


def template_parts(derive: str) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) of each piece of a template; a ValueError names what
    is not a plain ``{field}`` (a format spec, a conversion, an attribute, a lone brace)."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(derive))
    except ValueError as exc:
        raise ValueError(f"derive {derive!r}: {exc} (write {{{{ and }}}} for a brace)") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or not name.isidentifier()):
            raise ValueError(f"derive {derive!r}: {{{name}}} is not a field name: write {{field}} only")
        parts.append((literal, name))
    return parts


def method_parameters(derive: str) -> list[str]:
    """The fields a derive Method takes: its parameters' names, every one a field."""
    signature = inspect.signature(load_function(derive, "derive"))
    odd = [p.name for p in signature.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if odd:
        raise ValueError(f"derive {derive!r}: name each field it takes as a parameter (not *{odd[0]})")
    return list(signature.parameters)


def derive_requires(derive: str) -> list[str]:
    """The fields a derive reads, in the order it names them."""
    if is_template(derive):
        return list(dict.fromkeys(name for _, name in template_parts(derive) if name is not None))
    return method_parameters(derive)


def _declared(data: Any) -> dict[str, str]:
    """field -> its derive, from a declaration before validation (mappings only)."""
    fields = data.get("map") if isinstance(data, dict) else None
    if not isinstance(fields, dict):
        return {}
    return {
        name: spec["derive"]
        for name, spec in fields.items()
        if isinstance(spec, dict) and isinstance(spec.get("derive"), str)
    }


def derive_problems(data: Any) -> Problems:
    """(loc, value, message) of each derive that does not parse or resolve, names a field the
    map lacks, or is part of a cycle: each at ``map.<field>.derive``."""
    fields = data.get("map") if isinstance(data, dict) else None
    found: Problems = []
    graph: dict[str, list[str]] = {}
    declared = _declared(data)
    for name, derive in declared.items():
        loc = ("map", name, "derive")
        try:
            requires = derive_requires(derive)
        except Exception as exc:  # not importable, a bad template: the message names it
            found.append(
                (loc, derive, str(exc) if isinstance(exc, ValueError) else f"derive {derive!r}: {exc}")
            )
            continue
        missing = [r for r in requires if r not in (fields or {})]
        if missing:
            found.append((loc, derive, f"derive {derive!r} requires {', '.join(missing)}: no such map field"))
        elif name in requires:
            found.append((loc, derive, f"derive {derive!r} requires the field itself"))
        else:
            graph[name] = requires
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        cycle = exc.args[1][:-1]
        for name in sorted(set(cycle)):
            found.append(
                (("map", name, "derive"), declared[name], f"derive cycle: {' -> '.join([*cycle, cycle[0]])}")
            )
    return found


def derive_order(derives: dict[str, str]) -> list[str]:
    """The derived fields (field -> derive), each after the derived fields it requires."""
    graph = {name: [r for r in derive_requires(d) if r in derives] for name, d in derives.items()}
    return list(TopologicalSorter(graph).static_order())
