"""Map fields compiled to Polars expressions: one vectorised pass, never a loop per row.

Each field yields a typed value and an error condition with its reason; a row's first
error (in map order) rejects it, naming the source column and the reason.

A ``Method`` field calls ``function(expr, **options)``. An option that is an ``enc:`` token is
decrypted here, right before the call, and nowhere else: the flow's model, its Dagster
metadata and every file keep the token; a fault raised by the function or by the plan built
from it is told with the clear values left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl

from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE, SOURCE_FILE
from etl_assets.engine.transform.derived import derived_raw, derived_reason, source_raw_column
from etl_assets.model.derive import derive_order
from etl_assets.model.flow import FlowModel, MapField
from etl_assets.model.functions import load_function
from etl_assets.model.parameters import Scalar
from etl_assets.resources.errors import redact
from etl_assets.settings.secrets import decrypt, is_encrypted

EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$"
URL_RE = r"^(?i)https?://[^\s/$.?#][^\s]*$"
PHONE_RE = r"^\+?[0-9]{6,15}$"
# 1.234.567,89 or 1234567,89 or -12: the decimal comma of a European ERP.
DECIMAL_COMMA_RE = r"^-?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$"
INTEGER_RE = r"^-?(\d{1,3}(\.\d{3})+|\d+)$"
NUMBER_SHAPES = {"Integer": INTEGER_RE, "Decimal": DECIMAL_COMMA_RE}


@dataclass(frozen=True)
class CompiledField:
    """A map field as expressions in two passes: ``raw`` over the source frame, then
    ``value`` over the raw column, then the error conditions over both columns. Each error
    check then reads the computed value instead of computing it again (1M rows of the
    companies map: 0.5 s against 1.2 s)."""

    name: str
    source: str
    raw: pl.Expr  # named raw_column(name)
    value: pl.Expr  # named name
    errors: list[tuple[pl.Expr, pl.Expr]]  # (condition, reason)
    # a derived field: its raw column over the typed columns it requires (``raw`` is then its
    # source value, named source_raw_column(name))
    derived: pl.Expr | None = None
    # the clear values of a Method's decrypted options, for messages to leave out
    secrets: tuple[str, ...] = field(default=(), repr=False)


class MethodError(ValueError):
    """A fault of a Method whose options held a secret, told without its clear value."""


def raw_column(name: str) -> str:
    """The intermediate column of a field's stripped source value."""
    return f"_raw:{name}"


def _raw(column: str, present: bool, default: str | None) -> pl.Expr:
    """The source value stripped, empty as null, the default filled in."""
    if not present:
        raw = pl.lit(None, dtype=pl.String)
    else:
        stripped = pl.col(column).str.strip_chars()
        raw = pl.when(stripped == "").then(None).otherwise(stripped)
    if default is not None:
        raw = raw.fill_null(pl.lit(default))
    return raw


def _reason(prefix: str, raw: pl.Expr) -> pl.Expr:
    """``prefix: 'value'`` (concat, not pl.format: a prefix may hold regex braces)."""
    return pl.concat_str([pl.lit(f"{prefix}: '"), raw, pl.lit("'")])


def load_method(path: str) -> Callable[..., pl.Expr]:
    """The function a Method names (``module:function``)."""
    return load_function(path, "Method")


def revealed_options(spec: MapField, where: str) -> tuple[dict[str, Scalar], tuple[str, ...]]:
    """A Method's options for the call, each ``enc:`` token decrypted, and the clear values
    revealed. A token that cannot be decrypted is a SecretError naming ``where`` (the flow and
    field) and the option, never the value."""
    options: dict[str, Scalar] = {}
    revealed: list[str] = []
    for option, value in (spec.options or {}).items():
        if isinstance(value, str) and is_encrypted(value):
            value = decrypt(value, f"{where} option {option}")
            revealed.append(value)
        options[option] = value
    return options, tuple(revealed)


@contextmanager
def told_without(secrets: Sequence[str]) -> Iterator[None]:
    """A fault raised inside, raised again with these values left out of its message and its
    cause dropped (a traceback would print the cause's message)."""
    try:
        yield
    except Exception as exc:
        if not secrets:
            raise
        raise MethodError(f"{type(exc).__name__}: {redact(str(exc), secrets)}") from None


def _method(spec: MapField, raw: pl.Expr, where: str) -> tuple[pl.Expr, tuple[str, ...]]:
    """The Method's expression, its tokens decrypted only now; the clear values revealed."""
    assert spec.method is not None
    function = load_method(spec.method)
    options, revealed = revealed_options(spec, where)
    with told_without(revealed):
        return function(raw, **options), revealed


def compile_field(
    name: str, spec: MapField, source: str, present: bool, *, flow: str, nul_free: bool = False
) -> CompiledField:
    """The raw and value expressions and the ordered error conditions of one field of ``flow``.

    ``nul_free``: the source holds no NUL byte, so a field read from it (not derived, its
    default without one) cannot either and is not searched for one.
    """
    raw = pl.col(raw_column(name))
    has = raw.is_not_null()
    errors: list[tuple[pl.Expr, pl.Expr]] = []
    if spec.required:
        errors.append((raw.is_null(), pl.lit("required value missing")))
    # a text column stores no NUL (PostgreSQL refuses the whole COPY): the row's fault, caught here
    if not (nul_free and spec.derive is None and "\x00" not in (spec.default or "")):
        errors.append(
            (
                has & raw.str.contains("\x00", literal=True),
                pl.lit("holds a NUL byte: no database text stores it"),
            )
        )
    if spec.max_length is not None:
        errors.append(
            (has & (raw.str.len_chars() > spec.max_length), _reason(f"longer than {spec.max_length}", raw))
        )
    if spec.pattern is not None:
        errors.append((has & ~raw.str.contains(spec.pattern), _reason(f"does not match {spec.pattern}", raw)))
    secrets: tuple[str, ...] = ()
    if spec.type == "Method":
        value, secrets = _method(spec, raw, f"{flow} map.{name}")
        converted, invalid = value, f"rejected by {spec.method}"
    else:
        value, converted, invalid = _typed(spec, raw)
    if spec.type in NUMBER_SHAPES:  # a number well written, yet beyond what its column holds
        beyond = has & raw.str.contains(NUMBER_SHAPES[spec.type]) & pl.col(name).is_null()
        errors.append((beyond, _reason(f"out of range for the column's {_column_type(spec)}", raw)))
    if converted is not None:  # the value is null exactly when the conversion failed
        errors.append((has & pl.col(name).is_null(), _reason(invalid, raw)))
    if spec.derive is None:
        raw_value = _raw(source, present, spec.default).alias(raw_column(name))
        derived = None
    else:
        raw_value = _raw(source, present and spec.fill == "missing", None).alias(source_raw_column(name))
        derived = derived_raw(name, spec).alias(raw_column(name))
        errors = [(condition, derived_reason(name, spec, reason)) for condition, reason in errors]
    return CompiledField(
        name=name,
        source=source,
        raw=raw_value,
        value=value.alias(name),
        errors=errors,
        secrets=secrets,
        derived=derived,
    )


def _column_type(spec: MapField) -> str:
    """The SQL type a field loads as, as PostgreSQL names it (``bigint``, ``numeric(18,2)``)."""
    return "bigint" if spec.type == "Integer" else f"numeric(18,{spec.scale})"


def _typed(spec: MapField, raw: pl.Expr) -> tuple[pl.Expr, pl.Expr | None, str]:
    """(value, expression that is null when the value is invalid, reason prefix)."""
    kind = spec.type
    if kind == "String":
        return raw, None, ""
    if kind == "UppercaseString":
        return raw.str.to_uppercase(), None, ""
    if kind == "TitlecaseString":
        return raw.str.to_titlecase(), None, ""
    if kind == "Integer":
        ok = pl.when(raw.str.contains(INTEGER_RE)).then(raw.str.replace_all(".", "", literal=True))
        value = ok.cast(pl.Int64, strict=False)
        return value, value, "not an integer"
    if kind == "Decimal":
        ok = pl.when(raw.str.contains(DECIMAL_COMMA_RE)).then(
            raw.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)
        )
        value = ok.cast(pl.Decimal(18, spec.scale), strict=False)
        return value, value, "not a number with decimal comma"
    if kind == "Date":
        value = raw.str.strptime(pl.Date, spec.format, strict=False)
        return value, value, f"not a date in format {spec.format}"
    if kind == "DateTime":
        value = raw.str.strptime(pl.Datetime("us"), spec.format, strict=False)
        return value, value, f"not a timestamp in format {spec.format}"
    if kind == "Email":
        lowered = raw.str.to_lowercase()
        value = pl.when(lowered.str.contains(EMAIL_RE)).then(lowered)
        return value, value, "not an e-mail address"
    if kind == "URL":
        value = pl.when(raw.str.contains(URL_RE)).then(raw)
        return value, value, "not a URL"
    if kind == "Phone":
        digits = raw.str.replace_all(r"[\s./()-]", "")
        value = pl.when(digits.str.contains(PHONE_RE)).then(digits)
        return value, value, "not a phone number"
    if kind == "Choice":
        value = pl.when(raw.is_in(spec.choices or [])).then(raw)
        return value, value, f"not one of {', '.join(spec.choices or [])}"
    raise ValueError(f"unknown field type {kind}")


def compile_map(flow: FlowModel, columns: list[str], *, nul_free: bool = False) -> list[CompiledField]:
    """Every field of the flow's map, given the columns the file actually has, in the order
    they are computed: the fields read from the file in map order, then the derived ones,
    each after the fields it requires (a row's first error is the first in this order)."""
    present = set(columns)
    fields = []
    for name in field_order(flow):
        source = flow.source_column(name)
        fields.append(
            compile_field(name, flow.map[name], source, source in present, flow=flow.name, nul_free=nul_free)
        )
    return fields


def field_order(flow: FlowModel) -> list[str]:
    """The map's fields read from the file, in map order, then the derived ones in ``derive_order``."""
    derives = {name: spec.derive for name, spec in flow.map.items() if spec.derive is not None}
    return [name for name in flow.map if name not in derives] + derive_order(derives)


def apply_map(
    flow: FlowModel, frame: pl.LazyFrame, columns: list[str], *, nul_free: bool = False
) -> pl.DataFrame:
    """Typed map columns plus ``_line``, ``_error_field`` and ``_error_reason`` (null = good).

    Reasons quote the value as received, which costs a string per check and row: they are
    built in a second pass over the failing rows only. ``nul_free``: the source is known to
    hold no NUL byte (``compile_field``).
    """
    fields = compile_map(flow, columns, nul_free=nul_free)
    with told_without([secret for f in fields for secret in f.secrets]):
        return _mapped(fields, frame)


def _mapped(fields: list[CompiledField], frame: pl.LazyFrame) -> pl.DataFrame:
    """``apply_map``'s frame from the compiled fields."""
    first_field = pl.coalesce(
        [pl.when(cond).then(pl.lit(f.source)) for f in fields for cond, _ in f.errors]
        or [pl.lit(None, pl.String)]
    )
    first_reason = pl.coalesce(
        [pl.when(cond).then(reason) for f in fields for cond, reason in f.errors] or [pl.lit(None, pl.String)]
    )
    mapped = (
        typed_columns(frame, fields)
        .select(
            pl.col(LINE),
            pl.col(SOURCE_FILE),
            *(pl.col(f.name) for f in fields),
            first_field.alias(ERROR_FIELD),
        )
        .collect()
    )
    failing = mapped.filter(pl.col(ERROR_FIELD).is_not_null()).select(LINE)
    if failing.height == 0:
        return mapped.with_columns(pl.lit(None, pl.String).alias(ERROR_REASON))
    failing_rows = frame.join(failing.lazy(), on=LINE, how="semi")
    reasons = typed_columns(failing_rows, fields).select(LINE, first_reason.alias(ERROR_REASON))
    return mapped.join(reasons.collect(), on=LINE, how="left").sort(LINE)


def typed_columns(frame: pl.LazyFrame, fields: list[CompiledField]) -> pl.LazyFrame:
    """The frame's line and file, each field's raw column and its typed value: the fields read
    from the file at once, then each derived field after those it requires (``compile_map``'s
    order)."""
    raws = frame.select(pl.col(LINE), pl.col(SOURCE_FILE), *(f.raw for f in fields))
    typed = raws.with_columns(f.value for f in fields if f.derived is None)
    for f in fields:
        if f.derived is not None:
            typed = typed.with_columns(f.derived).with_columns(f.value)
    return typed
