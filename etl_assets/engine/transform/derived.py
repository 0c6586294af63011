"""A derived field's value as a Polars expression over the typed columns of the fields it
requires (model/derive.py declares the two forms).

The derived text takes the place of the source value (``fill: missing``: only where the
source value is empty; ``always``: everywhere), then goes through the field's own type and
validation like a value read from the file; a reason then says the value was derived.
"""

from __future__ import annotations

import polars as pl

from etl_assets.model.derive import is_template, method_parameters, template_parts
from etl_assets.model.flow import MapField
from etl_assets.model.functions import load_function


def source_raw_column(name: str) -> str:
    """The intermediate column of a derived field's own source value, before the derive."""
    return f"_src:{name}"


def derived_text(derive: str) -> pl.Expr:
    """The derive's text: stripped, empty as null."""
    if is_template(derive):
        pieces = []
        for literal, name in template_parts(derive):
            if literal:
                pieces.append(pl.lit(literal))
            if name is not None:
                pieces.append(pl.col(name).cast(pl.String).fill_null(""))
        text = pl.concat_str(pieces or [pl.lit("")])
    else:
        function = load_function(derive, "derive")
        text = function(**{p: pl.col(p) for p in method_parameters(derive)}).cast(pl.String)
    stripped = text.str.strip_chars()
    return pl.when(stripped == "").then(None).otherwise(stripped)


def derived_raw(name: str, spec: MapField) -> pl.Expr:
    """The field's raw value: its source value, or where ``fill`` says so the derived text;
    then its default. Not aliased."""
    assert spec.derive is not None
    raw = derived_text(spec.derive)
    if spec.fill == "missing":
        raw = pl.coalesce(pl.col(source_raw_column(name)), raw)
    return raw if spec.default is None else raw.fill_null(pl.lit(spec.default))


def derived_reason(name: str, spec: MapField, reason: pl.Expr) -> pl.Expr:
    """``reason``, told as the derive's where the value was derived."""
    told = pl.concat_str([pl.lit(f"derived by {spec.derive}: "), reason])
    if spec.fill == "always":
        return told
    return pl.when(pl.col(source_raw_column(name)).is_null()).then(told).otherwise(reason)
