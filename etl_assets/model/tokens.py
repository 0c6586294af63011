"""Where an ``enc:`` token may stand in a flow: a ``Method``'s ``options``, and nowhere else.

An option is handed to the Method's function, and a token there is decrypted right before the
call (engine/transform/maps.py). Anywhere else nothing decrypts it: a token in a ``default``
would be loaded into the table as text, one in a folder would name a folder. So, once the
parameters are substituted, a token (or a text holding one) anywhere but in an option is
refused at its key; the flow's ``parameters`` may hold tokens (they are checked where used).
An option named like a secret (``salt``, ``api_key``) must hold a token: never the clear text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from etl_assets.model.parameters import PLACEHOLDER, REFERENCE, SECRET_NAME
from etl_assets.settings.secrets import holds_token, is_encrypted

Loc = tuple[str | int, ...]
OUTSIDE_OPTIONS = "an enc: token can only be used in a Method's options, where it is decrypted at use"
CLEAR_OPTION = (
    "an option named like a secret holds it in clear: store an enc: token (etl-assets encrypt-password),"
    " in a parameter set or here"
)
INSIDE_TEXT = "an enc: token is an option's whole value (it is decrypted as one), not part of a text"


def token_problems(data: Any) -> list[tuple[Loc, str]]:
    """(loc, message) of every token a flow's data holds where none may stand."""
    found = []
    for loc, value in _scalars(data, ()):
        if _is_option(loc) and SECRET_NAME.search(str(loc[3])) and not _sealed(value):
            found.append((loc, CLEAR_OPTION))
            continue
        if not isinstance(value, str) or not holds_token(value) or loc[:1] == ("parameters",):
            continue
        if _is_option(loc):
            if not is_encrypted(value):
                found.append((loc, INSIDE_TEXT))
        else:
            found.append((loc, OUTSIDE_OPTIONS))
    return found


def _sealed(value: object) -> bool:
    """A token, the placeholder an export left for one (compile asks for it to be filled), or a
    parameter not substituted yet (an SDK save validates the declaration as written; the value
    it stands for is judged once substituted, as a run reads it)."""
    return isinstance(value, str) and (
        is_encrypted(value) or any(p.fullmatch(value) for p in (PLACEHOLDER, REFERENCE))
    )


def _is_option(loc: Loc) -> bool:
    """``map.<field>.options.<option>``."""
    return len(loc) == 4 and loc[0] == "map" and loc[2] == "options"


def _scalars(node: Any, loc: Loc) -> Iterator[tuple[Loc, Any]]:
    """Every scalar of plain data or of models (before validation a flow may hold either)."""
    if isinstance(node, BaseModel):
        node = {name: getattr(node, name) for name in type(node).model_fields}
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _scalars(value, (*loc, str(key)))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _scalars(value, (*loc, index))
    else:
        yield loc, node
