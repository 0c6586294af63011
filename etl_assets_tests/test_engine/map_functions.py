"""A Method field's function for the tests: takes and returns a Polars expression."""

import polars as pl


def reverse(raw: pl.Expr) -> pl.Expr:
    """Reversed text; the value 'bad' is invalid (null)."""
    return pl.when(raw != "bad").then(raw.str.reverse())
