"""The declarations: a flow (``flow.FlowModel``) and a report (``report.ReportModel``) as plain
pydantic data. The engine reads them, the SDK edits them, the Dagster components validate
``defs.yaml`` against them. Nothing here imports Dagster or the engine."""
