"""Names SQL may carry as they are (tables, columns, flows), and the strict base of every
declaration model: shared by the flow model and its source specs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

IDENTIFIER = r"^[a-z][a-z0-9_]*$"
# PostgreSQL keeps 63 bytes of a name and cuts the rest without an error: two long names
# could become one.
MAX_IDENTIFIER_LENGTH = 63
IDENTIFIER_RULE = (
    f"lower-case letters, digits and _ only, starting with a letter, at most {MAX_IDENTIFIER_LENGTH} "
    "characters"
)


def is_identifier(value: object) -> bool:
    """A name SQL may carry as it is: lower case (PostgreSQL folds unquoted names to lower case,
    so the name is the same quoted or not, in psql and in a report's query alike); no leading
    ``_`` (the engine's own frame columns start with one). Every statement quotes it anyway."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_IDENTIFIER_LENGTH
        and re.fullmatch(IDENTIFIER.strip("^$"), value) is not None
    )


def identifier_problem(where: str, value: object) -> str | None:
    """Why ``value`` (declared at ``where``) cannot be a table, column or flow name; None if it can."""
    if not is_identifier(value):
        return f"{where} {value!r} is not an identifier: {IDENTIFIER_RULE}"
    return None


def _named(value: str, info: ValidationInfo) -> str:
    problem = identifier_problem(info.field_name or "name", value)
    if problem:
        raise ValueError(problem)
    return value


# The pattern stays in the JSON schema (editors, dg); the check gives the message above.
Identifier = Annotated[str, AfterValidator(_named), Field(json_schema_extra={"pattern": IDENTIFIER})]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
