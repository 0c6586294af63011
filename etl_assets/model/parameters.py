"""Runtime parameters of flows: parameter sets with named value sets, and local parameters.

A parameter set is a file beside the flows, ``<flows folder>/parameters/<set>.yaml``::

    default: milano                 # the value set a flow uses unless it picks another
    values:
      milano: {folder: /outbound/milano, warn: 5}
      roma:   {folder: /outbound/roma, warn: 8}

A declaration names ``${site.folder}`` (set ``site``, parameter ``folder``) or ``${warn}`` (a
local parameter of the flow) in any value; the flow's ``parameters`` pick a value set per set
(``value_sets``), override single values (``overrides``) and hold the local ones (``local``).
A value that is a parameter and nothing else takes the parameter's type (``warn_limit: ${warn}``
is an int). A parameter never holds a secret in clear: a parameter whose name says password,
secret, token, salt, API key, private key or credential must be an ``enc:`` token (or the
placeholder an export left in its place, ``${secret:...}``: compile fails until it is filled). A
token has one place of use, a ``Method``'s ``options`` (``options: {salt: "${site.hash_salt}"}``),
decrypted right before the function is called (engine/transform/maps.py); anywhere else in a
declaration it is refused (model/tokens.py), so it never becomes literal text in a table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Scalar = str | int | float | bool | None
REFERENCE = re.compile(r"\$\{([a-z][a-z0-9_]*)(?:\.([a-z][a-z0-9_]*))?\}")
SECRET_NAME = re.compile(
    r"pass(?:w|phrase)|pwd|secret|token|salt|api_?key|private_?key|credential", re.IGNORECASE
)
# What an export writes in place of a secret (sdk.archive): the new installation fills it in.
PLACEHOLDER = re.compile(r"\$\{secret:([A-Za-z0-9_.\-]+)\}")
FOLDER = "parameters"


class ParameterError(ValueError):
    """A parameter that is unknown, or holds a secret in clear: the message names it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParameterSet(_Strict):
    """One ``parameters/<set>.yaml``: named value sets and the default one."""

    default: str | None = None
    values: dict[str, dict[str, Scalar]] = Field(default_factory=dict)


class FlowParameters(_Strict):
    """A flow's choices: a value set per parameter set, single overrides, local parameters."""

    value_sets: dict[str, str] = Field(default_factory=dict)
    overrides: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    local: dict[str, Scalar] = Field(default_factory=dict)

    def merged(self, other: FlowParameters) -> FlowParameters:
        """These choices with ``other``'s on top (a run's, from its config)."""
        overrides = {k: {**self.overrides.get(k, {}), **v} for k, v in other.overrides.items()}
        return FlowParameters(
            value_sets={**self.value_sets, **other.value_sets},
            overrides={**self.overrides, **overrides},
            local={**self.local, **other.local},
        )


def read_sets(flows_folder: Path) -> dict[str, ParameterSet]:
    """The parameter sets beside a folder of flows; a bad file names itself."""
    sets = {}
    folder = flows_folder / FOLDER
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            sets[path.stem] = ParameterSet.model_validate(
                yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            )
        except (yaml.YAMLError, ValidationError) as exc:
            raise ParameterError(f"{path}: not a parameter set: {exc}") from None
    return sets


def resolved(
    attributes: dict[str, Any], sets: dict[str, ParameterSet], run: FlowParameters | None = None
) -> dict:
    """The attributes with every ``${...}`` replaced; unknown parameters name themselves."""
    chosen = FlowParameters.model_validate(attributes.get("parameters") or {})
    if run is not None:
        chosen = chosen.merged(run)
    _no_clear_secrets(chosen, sets)
    values = _values(chosen, sets)
    return {k: (v if k == "parameters" else _substitute(v, values, k)) for k, v in attributes.items()}


def references(attributes: dict[str, Any]) -> set[str]:
    """Every parameter a declaration names (``set.param`` or ``param``)."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "parameters":
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            found.update(".".join(filter(None, m.groups())) for m in REFERENCE.finditer(node))

    walk(attributes)
    return found


def sets_named(attributes: dict[str, Any]) -> set[str]:
    """The parameter sets a declaration uses: those its ``${set.param}`` name, and those its
    ``parameters.value_sets`` pick from (what an export carries with it)."""
    named = {r.split(".", 1)[0] for r in references(attributes) if "." in r}
    chosen = (attributes.get("parameters") or {}).get("value_sets") or {}
    return named | set(chosen)


def _values(chosen: FlowParameters, sets: dict[str, ParameterSet]) -> dict[str, Scalar]:
    values: dict[str, Scalar] = dict(chosen.local)
    for name, parameter_set in sets.items():
        pick = chosen.value_sets.get(name, parameter_set.default)
        if pick is not None and pick not in parameter_set.values:
            raise ParameterError(
                f"parameter set {name}: no value set {pick!r} (value sets: {', '.join(parameter_set.values)})"
            )
        merged = {**(parameter_set.values.get(pick, {}) if pick else {}), **chosen.overrides.get(name, {})}
        values.update({f"{name}.{k}": v for k, v in merged.items()})
    for name in chosen.value_sets:
        if name not in sets:
            raise ParameterError(
                f"value_sets names parameter set {name!r}, which has no file parameters/{name}.yaml"
            )
    return values


def _substitute(node: Any, values: dict[str, Scalar], where: str) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values, f"{where}.{i}") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def value_of(match: re.Match[str]) -> Scalar:
        name = ".".join(filter(None, match.groups()))
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise ParameterError(f"{where}: unknown parameter ${{{name}}} (parameters: {known})")
        return values[name]

    whole = REFERENCE.fullmatch(node)
    if whole:  # the value is the parameter: it keeps its type
        return value_of(whole)
    return REFERENCE.sub(lambda m: str(value_of(m)), node)


def _no_clear_secrets(chosen: FlowParameters, sets: dict[str, ParameterSet]) -> None:
    found = [(f"local.{k}", v) for k, v in chosen.local.items()]
    found += [(f"overrides.{s}.{k}", v) for s, kv in chosen.overrides.items() for k, v in kv.items()]
    found += [
        (f"parameters/{s}.yaml {n}.{k}", v)
        for s, p in sets.items()
        for n, kv in p.values.items()
        for k, v in kv.items()
    ]
    for where, value in found:
        if SECRET_NAME.search(where.rsplit(".", 1)[-1]) and not (
            isinstance(value, str) and (value.startswith("enc:") or PLACEHOLDER.fullmatch(value))
        ):
            raise ParameterError(
                f"{where}: a secret in clear; store an enc: token (etl-assets encrypt-password)"
            )
