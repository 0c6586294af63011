"""Where a flow's partition keeps its staged data on disk, one file per step, and how
steps read and write those files a batch at a time (memory holds a batch, not a file).

``ETL_HOME/data/<flow>/<partition>/``: ``raw/<file>`` (+ ``.sha256``), ``extract.parquet``,
``transform.parquet``, ``transform_rejected.parquet``, ``transform_collapsed.parquet``,
``load.parquet``, ``link.parquet``. Any step can be re-run from the one before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.engine.columns import LINE
from etl_assets.resources.files import partial_name
from etl_assets.resources.folders import FoldersResource

T = TypeVar("T")
LOCK_FILE = ".lock"
# What a staged file records it was made from (``StagedWriter(tags=...)``): a step whose input
# and version are those of its staged output reuses the output instead of computing it again.
MADE_TAG = "etl_made"  # one per write: a file written again is another input, even from the same bytes
VERSION_TAG = "etl_stage_version"
SOURCE_TAG = "etl_source_file"
SIZE_TAG = "etl_source_size"
SHA256_TAG = "etl_source_sha256"
INPUT_TAG = "etl_input"  # the MADE_TAG of the staged file the step read
# "true": extract read no NUL byte in the file, so the map need not look for one in any value
NUL_FREE_TAG = "etl_nul_free"
# Polars' own string layout handed to Arrow without a copy, written and read back as it is
# (1M rows of the companies file: ~0.1 s less in extract and in transform each, ~40 MB less)
ARROW_LEVEL = pl.CompatLevel.newest()
# the staged files a step reads, written by the steps before it: a step re-run alone needs them
STEP_INPUTS = {
    "transform": ("extract.parquet",),
    "load": ("extract.parquet", "transform.parquet"),
    "link": ("extract.parquet", "transform.parquet", "load.parquet"),
}


def partition_dir_name(partition_key: str) -> str:
    """A partition key as a folder name (``:`` is not portable)."""
    return partition_key.replace(":", "-")


@dataclass(frozen=True)
class PartitionStage:
    """The staged files of one flow partition."""

    flow: str
    partition_key: str
    folders: FoldersResource

    @property
    def dir(self) -> Path:
        return self.folders.dir("data", self.flow, partition_dir_name(self.partition_key))

    def file(self, name: str) -> Path:
        return self.dir / name

    @property
    def raw_dir(self) -> Path:
        path = self.dir / "raw"
        path.mkdir(exist_ok=True)
        return path

    def missing_inputs(self, step: str) -> list[Path]:
        """The staged files ``step`` reads that are not there (none for extract: its input is
        the source)."""
        return [self.file(name) for name in STEP_INPUTS.get(step, ()) if not self.file(name).exists()]

    def error_file(self, step: str) -> Path:
        """``ETL_HOME/errors/<flow>/<partition>/<step>.csv``."""
        return self.folders.dir("errors", self.flow, partition_dir_name(self.partition_key)) / f"{step}.csv"

    def stopped_file(self, step: str) -> Path:
        return self.dir / f"{step}.stopped"

    def mark_stopped(self, step: str, reason: str | None) -> None:
        """Remember that the step's blocking check stopped this partition (``reason``), or that
        it no longer does (None): a later step run alone (a retry "from failure") must not
        carry on with what the check refused."""
        path = self.stopped_file(step)
        if reason is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(reason, encoding="utf-8")

    def stopped_by(self, step: str) -> str | None:
        path = self.stopped_file(step)
        return path.read_text(encoding="utf-8") if path.exists() else None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The partition's staged files to this step alone: a second run of the partition at
        the same moment waits for the step to end (an exclusive ``flock`` on ``.lock``, freed
        by the kernel if the process dies)."""
        with (self.dir / LOCK_FILE).open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class _WriterThread:
    """Row groups written in order on a thread of their own, at most one waiting: parquet
    compression releases the GIL, so the step computes its next batch meanwhile (1M rows
    of the companies file: 0.4-0.5 s of writing per staged file, no longer on the way)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"staged-writer {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            if self._error is None:  # after a failure, the rest is only drained
                try:
                    work()
                except BaseException as exc:  # raised in the step's thread by submit or finish
                    self._error = exc

    def submit(self, work: Callable[[], object]) -> None:
        self._raise()
        self._queue.put(work)

    def finish(self) -> None:
        """Wait for everything submitted; raise what failed."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class StagedWriter:
    """One parquet file written a batch (row group) at a time; it appears under its name
    only when complete, so a failed step never leaves half a file for the next one."""

    def __init__(
        self, path: Path, schema: dict[str, pl.DataType] | None = None, tags: dict[str, str] | None = None
    ) -> None:
        self.path = path
        self.partial = path.with_name(partial_name(path.name))
        self.schema = schema
        # key-value metadata of the file (``staged_tags``): what it was made from, set until close
        self.tags: dict[str, str] = dict(tags or {})
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._thread: _WriterThread | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Append ``frame`` as a row group (none for an empty frame: files written batch
        for batch from one another keep the same row groups)."""
        if frame.height == 0:
            self.schema = self.schema or dict(frame.schema)
            return
        if self.schema is not None:
            frame = frame.select(list(self.schema)).cast(self.schema)
        table = frame.to_arrow(compat_level=ARROW_LEVEL)
        if self._writer is None:
            # lz4 without dictionaries: written in half the time of zstd with them, ~5% larger;
            # statistics only for the line, which filtered reads of source lines use
            self._writer = pq.ParquetWriter(
                self.partial,
                table.schema,
                compression="lz4",
                use_dictionary=False,
                write_statistics=[LINE] if LINE in table.schema.names else False,
            )
            self._thread = _WriterThread(self.path.name)
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        assert self._thread is not None
        self._thread.submit(lambda writer=self._writer: writer.write_table(table))
        self.rows += frame.height

    def close(self) -> Path:
        """Finish the file; with no batch written, an empty file of ``schema``."""
        if self._writer is None:
            empty = pl.DataFrame(schema=self.schema or {}).to_arrow(compat_level=ARROW_LEVEL)
            tagged = empty.replace_schema_metadata({**(empty.schema.metadata or {}), **self.tags})
            pq.write_table(tagged, self.partial)
        else:
            assert self._thread is not None
            try:
                self._thread.finish()
            except BaseException:
                self.abort()
                raise
            if self.tags:
                self._writer.add_key_value_metadata(self.tags)
            self._writer.close()
        self.partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file; the step's own error is the one that counts, so a writer
        that fails again on the way out (a full disk) does not hide it."""
        with contextlib.suppress(Exception):
            if self._thread is not None:
                self._thread.finish()
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> StagedWriter:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def read_batches(path: Path, columns: list[str] | None = None, min_rows: int = 0) -> Iterator[pl.DataFrame]:
    """The file's row groups in order, as frames of at least ``min_rows`` rows (consecutive
    row groups joined). Two files written batch for batch from one another give the same
    batches, so they can be read in step."""
    source = pq.ParquetFile(path)
    pending: list[pl.DataFrame] = []
    for index in range(source.num_row_groups):
        pending.append(_frame(source.read_row_group(index, columns=columns)))
        if sum(f.height for f in pending) >= min_rows:
            yield pl.concat(pending)
            pending = []
    if pending or source.num_row_groups == 0:
        empty = source.schema_arrow.empty_table()
        yield pl.concat(pending) if pending else _frame(empty.select(columns) if columns else empty)


class RowStream:
    """A staged file's rows in order, taken ``n`` at a time whatever its row groups: to read
    a file in step with another one written from it in other batches."""

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        self._batches = read_batches(path, columns)
        self._held = pl.DataFrame()

    def take(self, count: int) -> pl.DataFrame:
        parts, held = [], self._held
        while held.height < count:
            parts.append(held)
            count -= held.height
            held = next(self._batches, None)
            if held is None:
                raise ValueError("the file has fewer rows than the one read in step with it")
        parts.append(held.head(count))
        self._held = held.slice(count)
        return pl.concat([p for p in parts if p.width] or [held.head(0)])


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def staged_tags(path: Path) -> dict[str, str]:
    """The key-value metadata a ``StagedWriter`` wrote into the file; none for a missing file."""
    if not path.is_file():
        return {}
    try:
        found = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowException):  # unreadable: nothing can be reused from it
        return {}
    return {k.decode(): v.decode() for k, v in found.items() if not k.startswith(b"ARROW:")}


def count_rows(path: Path) -> int:
    """Rows of a staged file, from its metadata (the file is not read)."""
    return pq.ParquetFile(path).metadata.num_rows


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` produced on a thread of their own, up to ``depth`` ahead of the consumer:
    reading and checking the next block overlaps the parsing of this one (work that
    releases the GIL). An error of the producer is raised here; a consumer that stops
    early stops the producer before the source is closed."""
    buffer: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((False, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((True, None))
        except BaseException as exc:  # raised in the consumer's thread
            buffer.put((True, exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            finished, item = buffer.get()
            if finished:
                if isinstance(item, BaseException):
                    raise item
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # a producer blocked on a full queue gets room to see ``stop``
            with contextlib.suppress(queue.Empty):
                buffer.get_nowait()
            thread.join(0.05)
