"""A report as an object: its declaration on disk, compiled as a flow is.

Reports are the package's (``defs/<report>/defs.yaml``, ``type: etl_assets.orchestration.
ReportComponent``): the SDK lists and compiles them, it does not edit them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl_assets.model.declarations import DeclarationError, read_document

if TYPE_CHECKING:
    from etl_assets.sdk.compiling import CompileResult


@dataclass
class Report:
    """One report's declaration; ``compile()`` checks it without running it."""

    project: Any = field(repr=False)  # the sdk.project.Project listing it (not imported: a circle)
    path: Path
    packaged: bool = True

    @property
    def name(self) -> str:
        """The declared ``name``; the folder's when the declaration has none (compile says why)."""
        try:
            attributes = read_document(self.path).get("attributes")
        except DeclarationError:
            attributes = None
        name = attributes.get("name") if isinstance(attributes, dict) else None
        return name if isinstance(name, str) else self.path.parent.name

    def compile(self) -> CompileResult:
        """``project.compile_report(report)``: see ``sdk.report_compiling``."""
        return self.project.compile_report(self)


class ReportList(list[Report]):
    """The reports of a project."""

    def get(self, name: str) -> Report | None:
        """The report of that name; None when there is none."""
        return next((r for r in self if r.name == name), None)
