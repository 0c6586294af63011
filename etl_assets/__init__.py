"""etl_assets: a Dagster code location for client ETL flows (SFTP -> Polars -> database).

``dagster ... -m etl_assets`` finds the code location here as well as in
``etl_assets.definitions``. It is imported only when asked for, so that the ``etl-assets``
command (encrypt-password, test-connections) does not pay for importing Dagster.
"""

from typing import Any

_LAZY = {"code_location": ("etl_assets.definitions", "defs")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'etl_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
