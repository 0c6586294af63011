"""One e-mail per run that rejected rows or failed, every error file of the run attached.

Subject: ``[etl_assets][ENV] <flow> <partition>: N rows rejected`` or
``[etl_assets][ENV] <flow> <partition> failed: <reason>``. A message that cannot be sent
is kept in ``ETL_HOME/logs/unsent/`` so that nothing an operator needs is lost.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import polars as pl

from etl_assets.engine.staging import PartitionStage, partition_dir_name
from etl_assets.resources.errors import ConnectorError
from etl_assets.resources.folders import FoldersResource
from etl_assets.resources.mailer import MailerResource

log = logging.getLogger("etl_assets.run_email")


def run_error_files(
    flow: str, partition_keys: Sequence[str], steps: Sequence[str], folders: FoldersResource
) -> list[tuple[str, str, Path]]:
    """The error files of these partitions and steps, as (partition key, step, path)."""
    found = []
    for key in partition_keys:
        for step in steps:
            path = PartitionStage(flow, key, folders).error_file(step)
            if path.exists():
                found.append((key, step, path))
    return found


def rejected_in(error_files: Sequence[tuple[str, str, Path]], delimiter: str) -> int:
    """Rows in the error files (records, not lines: fields may hold line breaks)."""
    return sum(
        pl.scan_csv(p, separator=delimiter, infer_schema=False).select(pl.len()).collect().item()
        for _, _, p in error_files
    )


def partition_label(partition_keys: Sequence[str]) -> str:
    """One key, or ``first...last`` for a run over a range."""
    if not partition_keys:
        return "-"
    return partition_keys[0] if len(partition_keys) == 1 else f"{partition_keys[0]}...{partition_keys[-1]}"


def subject(env: str, flow: str, label: str, rejected: int, failure: str | None) -> str:
    head = f"[etl_assets][{env}] {flow} {label}"
    if failure:
        return f"{head} failed: {failure.splitlines()[0][:200]}"
    return f"{head}: {rejected} rows rejected"


def send_run_email(
    *,
    mailer: MailerResource,
    folders: FoldersResource,
    flow: str,
    run_id: str,
    partition_keys: Sequence[str],
    error_files: Sequence[tuple[str, str, Path]],
    rejected: int,
    failure: str | None = None,
    news: str | None = None,
) -> str | None:
    """Send the run's e-mail if it rejected rows, failed or loaded a new delivery (``news``:
    what it changed); returns where it went."""
    if not failure and not rejected and not news:
        return None
    label = partition_label(partition_keys)
    attachments = attach(folders, run_id, [(flow, *f) for f in error_files])
    head = [
        f"Flow {flow}, partition {label}, run {run_id}.",
        f"Failed: {failure}" if failure else f"{rejected} rows were rejected.",
        *([f"The file is a {news}."] if news else []),
    ]
    body = "\n".join(
        [
            *head,
            "",
            "Attached error files (source columns as received, then error_step, error_field,",
            "error_reason, source_file, source_line):",
            *(f"  {a.name}" for a in attachments),
        ]
        if attachments
        else head
    )
    message = mailer.build_message(subject(mailer.env, flow, label, rejected, failure), body, attachments)
    return send_or_keep(mailer, folders, message, f"{run_id[:8]}_{flow}")


def attach(
    folders: FoldersResource, mail_id: str, error_files: Sequence[tuple[str, str, str, Path]]
) -> list[Path]:
    """Copies of (flow, partition key, step, path) error files under names of their own
    (several partitions each have their transform.csv), in ``logs/mail/<mail_id>/``."""
    attach_dir = folders.dir("logs", "mail", mail_id)
    attachments = []
    for flow, partition_key, step, path in error_files:
        named = attach_dir / f"{flow}_{partition_dir_name(partition_key)}_{step}.csv"
        shutil.copyfile(path, named)
        attachments.append(named)
    return attachments


def send_or_keep(mailer: MailerResource, folders: FoldersResource, message: EmailMessage, name: str) -> str:
    """Send; a message SMTP refuses is kept in ``logs/unsent/`` for the next run to send."""
    try:
        return mailer.send_message(message)
    except ConnectorError as exc:
        unsent = folders.dir("logs", "unsent")
        kept = unsent / f"{time.strftime('%Y%m%dT%H%M%S')}_{name}.eml"
        partial = kept.with_name(f".{kept.name}.part")
        partial.write_bytes(bytes(message))
        partial.replace(kept)
        log.error("e-mail not sent (%s); kept in %s for the next run", exc.reason, kept)
        return f"kept unsent in {kept}"


def send_kept_emails(mailer: MailerResource, folders: FoldersResource) -> list[str]:
    """Send the e-mails earlier runs could not send, oldest first; each goes out once.

    Stops at the first failure (SMTP still down): the rest wait for the next run.
    """
    sent = []
    for path in sorted(folders.dir("logs", "unsent").glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        try:
            mailer.send_message(message)  # type: ignore[arg-type]
        except ConnectorError as exc:
            log.warning("kept e-mails still not sent (%s)", exc.reason)
            break
        path.unlink()
        sent.append(str(message["Subject"]))
    return sent
