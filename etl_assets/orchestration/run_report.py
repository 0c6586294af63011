"""What a run tells the operator when its partitions are done: one e-mail.

A run of one partition sends the run's e-mail (``engine.run_email``) when it rejected rows or
failed. A run of a batch (a backfill, ``etl-assets backfill``) leaves a line per partition for
the batch's one e-mail (``engine.batch_email``), sent when the batch is over. A run of several
partitions of its own (``dagster asset materialize --partition-range``) sends that same kind of
e-mail at once: a line per partition, its subject saying how many failed.
"""

from __future__ import annotations

import dagster as dg

from etl_assets.engine.batch_email import partition_line, record_line, send_batch_email
from etl_assets.engine.run_email import rejected_in, run_error_files, send_kept_emails, send_run_email
from etl_assets.engine.steps import ErrorFile
from etl_assets.model.flow import FlowModel
from etl_assets.orchestration.batches import batch_of
from etl_assets.resources import FoldersResource, MailerResource


class RunReport:
    """The e-mail (or the batch's lines) of one run of one flow."""

    def __init__(
        self,
        flow: FlowModel,
        context: dg.AssetExecutionContext,
        mailer: MailerResource,
        folders: FoldersResource,
    ) -> None:
        self.flow = flow
        self.context = context
        self.mailer = mailer
        self.folders = folders

    def send(
        self,
        ran: dict[str, list[str]],
        failures: dict[str, str],
        extra_files: list[ErrorFile],
        news: dict[str, str] | None = None,
    ) -> None:
        """``ran``: the steps each partition went through (the failing one last); ``news``: what
        a partition's new delivery changed, said even when nothing was rejected."""
        news = news or {}
        files = {key: run_error_files(self.flow.name, [key], ran[key], self.folders) for key in ran}
        batch = batch_of(self.context.run)
        if batch is None and len(ran) == 1:
            ((key, mine),) = files.items()
            mine = mine + [f for f in extra_files if f not in mine]
            rejected = rejected_in(mine, self.flow.source.delimiter)
            self.send_one([key], mine, rejected, failures.get(key), news.get(key))
            return
        for key, mine in files.items():
            line = partition_line(
                self.flow.name,
                key,
                self.folders,
                mine,
                rejected_in(mine, self.flow.source.delimiter),
                failures.get(key),
                news.get(key),
            )
            record_line(self.folders, batch or self.context.run.run_id, line)
            if batch is not None:
                note = "(one e-mail when the batch ends)"
                self.context.log.info(f"batch {batch}: {self.flow.name} {line.text()} {note}")
        if batch is None:
            self.send_kept()
            where = send_batch_email(self.mailer, self.folders, self.context.run.run_id, what="run")
            if where:
                self.context.log.info(f"run e-mail: {where}")

    def send_kept(self) -> None:
        for kept in send_kept_emails(self.mailer, self.folders):
            self.context.log.info(f"sent a kept e-mail: {kept}")

    def send_one(
        self,
        partition_keys: list[str],
        files: list[ErrorFile],
        rejected: int,
        failure: str | None = None,
        news: str | None = None,
    ) -> None:
        """E-mails kept from earlier runs first, then this run's (if it rejected, failed or
        loaded a new delivery)."""
        self.send_kept()
        where = send_run_email(
            mailer=self.mailer,
            folders=self.folders,
            flow=self.flow.name,
            run_id=self.context.run.run_id,
            partition_keys=partition_keys,
            error_files=files,
            rejected=rejected,
            failure=failure,
            news=news,
        )
        if where:
            self.context.log.info(f"run e-mail: {where}")
