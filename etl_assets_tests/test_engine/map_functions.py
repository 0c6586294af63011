"""A Method field's function for the tests: takes and returns a Polars expression."""

import polars as pl


def reverse(raw: pl.Expr) -> pl.Expr:
    """Reversed text; the value 'bad' is invalid (null)."""
    return pl.when(raw != "bad").then(raw.str.reverse())


def initials(first_name: pl.Expr, last_name: pl.Expr) -> pl.Expr:
    """A derive Method: the fields it takes are its parameters' names."""
    return pl.concat_str([first_name.str.slice(0, 1), last_name.str.slice(0, 1)])


def anything(*fields: pl.Expr) -> pl.Expr:
    """A derive Method that names no field: refused."""
    return pl.lit("x")
