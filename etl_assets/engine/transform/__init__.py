"""The transform stage: the map compiled to Polars expressions (``maps``), then duplicates
collapsed or resolved and the result staged (``stage``)."""
