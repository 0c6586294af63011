"""A flow's declaration copied under a new name (create from a template, duplicate, an import
renamed on a conflict): its table and self-links follow the name, so the copy never writes
the original's table by accident, and its source file and folder follow it too."""

from __future__ import annotations

from ruamel.yaml.comments import CommentedMap

from etl_assets.model.flow import FlowModel


def rename(document: CommentedMap, template: FlowModel, name: str, description: str | None = None) -> None:
    """``document`` (a copy of ``template``'s) renamed to ``name`` in place."""
    attributes = document["attributes"]
    attributes["name"] = name
    if description is not None:
        attributes["description"] = description
    attributes["target"]["table"] = name
    for link in attributes.get("links") or []:
        if link.get("table") == template.target.table:
            link["table"] = name
    source = attributes.get("source") or {}
    for key in ("file", "folder"):
        if isinstance(source.get(key), str):
            source[key] = source[key].replace(template.name, name)
