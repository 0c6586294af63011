"""Sources beyond files: a database table read by its watermark, a Python generator; both staged
as a file's records are (engine/sources/records.py)."""

from etl_assets.engine.sources.database import extract_table
from etl_assets.engine.sources.inputs import SourceInputs
from etl_assets.engine.sources.python import PageFailed, SourceContext, extract_generated
from etl_assets.engine.sources.watermarks import commit_watermark, read_watermark

__all__ = [
    "PageFailed",
    "SourceContext",
    "SourceInputs",
    "commit_watermark",
    "extract_generated",
    "extract_table",
    "read_watermark",
]
