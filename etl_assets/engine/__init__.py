"""The engine: a flow's steps, knowing nothing of Dagster.

Given a declaration (``etl_assets.model``), staged files and connections (``etl_assets.resources``),
it extracts, maps, transforms, loads, links, parks and writes error files, and returns plain
results (frames, counts, outcomes). One module or sub-package per stage, as dlt splits
extract / normalize / load; ``steps`` runs one partition through one step.
"""
