"""A flow's hooks: Python functions its declaration names at stage boundaries (``hooks:``),
as Flask Data Pipes' decorators (``@on_load_commit``) do for a pipeline.

Each is called ``function(context)`` with a frozen ``HookContext`` of plain data (never a
secret): ``pre_extract`` before the extract fetches; ``post_transform`` once the transform
staged its output (``staged_file``: transform.parquet); ``on_load_commit`` after the load's
transaction committed, with the response frame's counts, once per commit (see
``load.hook_runs``: at most once); ``on_failure`` when a step of a partition failed. A hook
that raises fails its step for that partition only, its name in the line (``HookError``); a
failing ``on_failure`` is told by the caller and never masks the failure it was told of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from etl_assets.engine.deliveries import file_sha256
from etl_assets.engine.load import hook_runs
from etl_assets.engine.load.response import Outcome
from etl_assets.engine.staging import PartitionStage
from etl_assets.model.flow import FlowModel
from etl_assets.model.functions import load_function

ON_LOAD_COMMIT = "on_load_commit"


@dataclass(frozen=True)
class LoadCounts:
    """What a committed load did, from its response frame."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0  # snapshot and append modes only (engine/load/modes.py)
    rejected: int = 0

    @classmethod
    def of(cls, outcome: Outcome) -> LoadCounts:
        return cls(**{name: outcome.actions.get(name, 0) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HookContext:
    """What a hook is given."""

    hook: str  # pre_extract, post_transform, on_load_commit, on_failure
    flow: str
    partition_key: str
    run_id: str
    staged_file: Path | None = None  # the stage's staged parquet, where there is one
    counts: LoadCounts | None = None  # on_load_commit
    commit_id: str | None = None  # on_load_commit: the delivery's sha256 and the code version
    step: str | None = None  # on_failure: the step that failed
    error: str | None = None  # on_failure: its failure line


class HookError(Exception):
    """A hook raised: ``hook <name> (<path>) failed: <error>``."""


def commit_id(stage: PartitionStage, code_version: str) -> str:
    """What identifies a load's commit for its hook (``load.hook_runs``): the checksum the
    partition's extract recorded for its delivery (``raw/<file>.sha256``; staged rows with no
    delivery recorded: the staged good rows' checksum) and the flow's code version."""
    recorded = sorted(stage.raw_dir.glob("*.sha256"), key=lambda p: p.stat().st_mtime)
    if recorded:
        digest = recorded[-1].read_text(encoding="utf-8").split()[0]
    else:
        digest = file_sha256(stage.file("transform.parquet"))
    return f"{digest}:{code_version}"


class Hooks:
    """The hooks of one flow within one run."""

    def __init__(self, flow: FlowModel, run_id: str = "") -> None:
        self.flow = flow
        self.run_id = run_id

    def declared(self, name: str) -> bool:
        return name in self.flow.hooks

    def call(self, name: str, partition_key: str, **fields: object) -> None:
        """The hook ``name``, if declared, for the partition; its fault as a HookError."""
        path = self.flow.hooks.get(name)  # type: ignore[call-overload]
        if path is None:
            return
        context = HookContext(name, self.flow.name, partition_key, self.run_id, **fields)  # type: ignore[arg-type]
        try:
            load_function(path, f"hook {name}")(context)
        except Exception as exc:
            raise HookError(f"hook {name} ({path}) failed: {type(exc).__name__}: {exc}") from exc

    def after_commit(
        self, engine: sa.Engine, partition_key: str, commit: str, staged_file: Path, counts: LoadCounts
    ) -> None:
        """``on_load_commit`` for a commit the load recorded (``record``), unless a run called
        it already or is calling it now."""
        if not self.declared(ON_LOAD_COMMIT):
            return
        marker = (self.flow.name, partition_key, ON_LOAD_COMMIT, commit)
        if not hook_runs.claim(engine, *marker):
            return
        try:
            self.call(ON_LOAD_COMMIT, partition_key, staged_file=staged_file, counts=counts, commit_id=commit)
        except HookError as exc:
            hook_runs.settle(engine, *marker, error=str(exc))
            raise
        hook_runs.settle(engine, *marker, error=None)

    def record(self, conn: sa.Connection, partition_key: str, commit: str) -> None:
        """Inside the load's transaction: the commit owes ``on_load_commit`` its call."""
        if self.declared(ON_LOAD_COMMIT):
            hook_runs.record_commit(conn, self.flow.name, partition_key, ON_LOAD_COMMIT, commit)
