"""A client's Method module as it sits beside its flow (``<flow>/site_rules.py``, named
``site_rules:pseudonymise``): the tests copy it there. Its functions take a secret of the site,
the salt, as an option."""

from __future__ import annotations

import hashlib

import polars as pl


def pseudonymise(raw: pl.Expr, salt: str) -> pl.Expr:
    """sha256 of salt + value, in hex: one address, one pseudonym on a site, and nobody without
    the salt computes it from a list of known addresses."""
    return raw.map_elements(lambda value: hashlib.sha256((salt + value).encode()).hexdigest(), pl.String)


def careless(raw: pl.Expr, salt: str) -> pl.Expr:
    """A Method that puts its option into its error message: no one may read that message as it is."""
    raise ValueError(f"salt {salt} refused: too predictable")
