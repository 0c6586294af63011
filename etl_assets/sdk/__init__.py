"""Flows managed as data, in the shape of the DataStage / StreamSets SDKs::

    from etl_assets.sdk import Field, Project

    project = Project.open(env="dev")
    flow = project.create_flow("suppliers", template="companies")
    flow.map["website"] = Field.url()
    project.update_flow(flow)
    assert flow.compile().ok

``Project`` lists, creates, updates, duplicates and deletes the client's flows (``flows.dirs``);
a ``Flow`` is edited in memory and compiled without running; ``project.reports`` lists the
reports, each compiled likewise (``report.compile()``).
"""

from etl_assets.sdk.compiling import CompileResult, Problem
from etl_assets.sdk.flow import Field, Flow, Link
from etl_assets.sdk.project import Deleted, FlowError, FlowList, Project
from etl_assets.sdk.report import Report, ReportList

__all__ = [
    "CompileResult",
    "Deleted",
    "Field",
    "Flow",
    "FlowError",
    "FlowList",
    "Link",
    "Problem",
    "Project",
    "Report",
    "ReportList",
]
