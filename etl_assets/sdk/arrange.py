"""One canonical layout of a declaration, so that similar flows diff cleanly.

The attributes in the flow model's order (name, description, source, map, target, ...); the
map's fields in the order of the source file's header when a file is at hand (else as they
are); each map field and link on one line (``{type: String, required: true}``), their keys in
the field model's order (a Method's ``options`` after its ``method``); two-space indentation.
Comments stay with the key they annotate, and a ``${parameter}`` stays a reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from etl_assets.model.flow import (
    DedupeSpec,
    FlowModel,
    FlowScheduleSpec,
    LinkSpec,
    MapField,
    PartitionSpec,
    SensorSpec,
    SourceSpec,
    TargetSpec,
)
from etl_assets.model.parameters import read_sets, resolved
from etl_assets.sdk.compiling import sample_file
from etl_assets.sdk.documents import dump_document, merge_into

NESTED = {
    "source": SourceSpec,
    "target": TargetSpec,
    "dedupe": DedupeSpec,
    "partitions": PartitionSpec,
    "schedule": FlowScheduleSpec,
    "sensor": SensorSpec,
}


def arrange(flow: Any) -> None:
    attributes = flow.document.setdefault("attributes", CommentedMap())
    merge_into(attributes, flow.declaration(), flow.baseline)  # a ${parameter} stays as written
    expected = flow.declaration()
    if isinstance(attributes.get("map"), CommentedMap):
        _comments_to_keys(attributes["map"], indent=4, one_line=True)
    _comments_to_keys(attributes, indent=2, one_line=False)
    flow.document["attributes"] = _ordered(attributes, list(FlowModel.model_fields))
    attributes = flow.document["attributes"]
    for key, spec in NESTED.items():
        if isinstance(attributes.get(key), CommentedMap):
            attributes[key] = _ordered(attributes[key], list(spec.model_fields))
    if isinstance(attributes.get("map"), CommentedMap):
        header = _header_order(flow)
        names = sorted(attributes["map"], key=lambda n: header.get(flow.model.source_column(n), len(header)))
        attributes["map"] = _ordered(attributes["map"], names)
        for name in list(attributes["map"]):
            attributes["map"][name] = _one_line(attributes["map"][name], list(MapField.model_fields))
    if isinstance(attributes.get("links"), CommentedSeq):
        for index, link in enumerate(attributes["links"]):
            attributes["links"][index] = _one_line(link, list(LinkSpec.model_fields))
    arranged = resolved(
        yaml.safe_load(dump_document(flow.document))["attributes"], read_sets(flow.path.parents[1])
    )
    if FlowModel.model_validate(arranged) != FlowModel.model_validate(expected):
        raise ValueError(f"{flow.name}: the arranged declaration would not say the same: not arranged")
    flow.model = FlowModel.model_validate(flow.declaration())


def _comments_to_keys(mapping: CommentedMap, indent: int, one_line: bool) -> None:
    """Comments made to travel with the key they annotate. A comment line above a key is held
    by the end of the value before it: it becomes that key's own (written above it); with
    ``one_line`` (values written on one line), a comment inside a value joins its key's line."""
    keys = list(mapping)
    for index, key in enumerate(keys):
        own, above_next = _taken(mapping, key)
        value = mapping[key]
        if isinstance(value, CommentedMap) and one_line:
            inner, trailing = _all_comments(value)
            own, above_next = own + inner, above_next + trailing
        elif isinstance(value, CommentedMap) and value:
            above_next = _last_lines(value) + above_next
        if own:
            mapping.yaml_add_eol_comment(" ".join(own), key)
        if above_next and index + 1 < len(keys):
            mapping.yaml_set_comment_before_after_key(
                keys[index + 1], before="\n".join(above_next), indent=indent
            )
        elif above_next:
            mapping.yaml_add_eol_comment(" ".join([*own, *above_next]), key)


def _last_lines(mapping: CommentedMap) -> list[str]:
    """The comment lines after a block mapping's last value, removed (its end-of-line stays)."""
    last = list(mapping)[-1]
    found = _last_lines(mapping[last]) if isinstance(mapping[last], CommentedMap) and mapping[last] else []
    entry = mapping.ca.items.get(last)
    if entry and len(entry) > 2 and entry[2] is not None:
        eol, full = _split(entry[2].value)
        entry[2] = None
        if eol:
            mapping.yaml_add_eol_comment(" ".join(eol), last)
        found += full
    return found


def _split(text: str) -> tuple[list[str], list[str]]:
    """A comment token: (its end-of-line comment, the full comment lines after it), without ``#``."""
    first, _, rest = text.partition("\n")
    eol = [first.strip().lstrip("#").strip()] if "#" in first else []
    full = [line.strip().lstrip("#").strip() for line in rest.splitlines() if line.strip().startswith("#")]
    return eol, full


def _taken(mapping: CommentedMap, key: object) -> tuple[list[str], list[str]]:
    """The comment after ``key``'s value, removed: (end of line, lines below)."""
    entry = mapping.ca.items.get(key)
    if not entry or len(entry) < 3 or entry[2] is None:
        return [], []
    eol, full = _split(entry[2].value)
    entry[2] = None
    return eol, full


def _all_comments(mapping: CommentedMap) -> tuple[list[str], list[str]]:
    """Every comment inside a mapping, removed: (those on its lines, those after its end)."""
    inner: list[str] = []
    keys = list(mapping)
    trailing: list[str] = []
    for index, key in enumerate(keys):
        entry = mapping.ca.items.get(key)
        if entry and len(entry) > 1 and entry[1]:
            inner += [c for token in entry[1] for c in sum(_split("\n" + token.value), [])]
            entry[1] = None
        eol, full = _taken(mapping, key)
        inner += eol
        if isinstance(mapping[key], CommentedMap):
            nested, after = _all_comments(mapping[key])
            inner += nested
            full = after + full
        if index + 1 < len(keys):
            inner += full
        else:
            trailing = full
    return inner, trailing


def _ordered(mapping: CommentedMap, order: list[str]) -> CommentedMap:
    """The same keys in ``order`` (keys it does not name last), each with its comments."""
    rank = {key: i for i, key in enumerate(order)}
    arranged = CommentedMap()
    for key in sorted(mapping, key=lambda k: rank.get(k, len(rank))):
        arranged[key] = mapping[key]
        if key in mapping.ca.items:
            arranged.ca.items[key] = mapping.ca.items[key]
    arranged.ca.comment = mapping.ca.comment
    if mapping.fa.flow_style():
        arranged.fa.set_flow_style()
    return arranged


def _one_line(value: object, order: list[str]) -> object:
    if not isinstance(value, CommentedMap):
        return value
    arranged = _ordered(value, order)
    arranged.fa.set_flow_style()
    return arranged


def _header_order(flow: Any) -> dict[str, int]:
    """Source column -> its position in the header of a file at hand; empty without one."""
    sample = sample_file(flow.model, Path(flow.project.settings.home))
    if sample is None:
        return {}
    try:
        columns = pl.read_csv(
            sample, separator=flow.model.source.delimiter, n_rows=0, infer_schema=False
        ).columns
    except Exception:  # no usable header: the order stays as written
        return {}
    return {c.strip().strip("\ufeff"): i for i, c in enumerate(columns)}
