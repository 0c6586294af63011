"""Staged files written on a thread of their own: order kept, a failure never hidden."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from etl_assets.engine.columns import LINE
from etl_assets.engine.staging import StagedWriter, prefetched, read_batches


def _batch(start: int, rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {LINE: range(start, start + rows), "value": [f"v{n}" for n in range(start, start + rows)]},
        schema={LINE: pl.Int64, "value": pl.String},
    )


def test_row_groups_arrive_in_order_with_line_statistics_only(tmp_path: Path) -> None:
    path = tmp_path / "extract.parquet"
    with StagedWriter(path) as writer:
        for start in range(0, 50_000, 5_000):
            writer.write(_batch(start, 5_000))
    assert writer.rows == 50_000
    assert not list(path.parent.glob(".extract.parquet.*.part"))
    assert [b.height for b in read_batches(path)] == [5_000] * 10
    assert pl.read_parquet(path).equals(_batch(0, 50_000))
    group = pq.ParquetFile(path).metadata.row_group(3)
    assert (group.column(0).statistics.min, group.column(0).statistics.max) == (15_000, 19_999)
    assert group.column(1).statistics is None  # no statistics for a column nobody filters on
    # a filtered read of some lines (how the catcher finds source rows) still works
    found = pl.scan_parquet(path).filter(pl.col(LINE).is_in([7, 42_001])).collect()
    assert found.get_column("value").to_list() == ["v7", "v42001"]


def test_a_failed_background_write_fails_the_step_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a mock: a disk that fills up mid-file is a fault we cannot cause for real here
    calls = {"n": 0}
    real_write = pq.ParquetWriter.write_table

    def failing_write(self: pq.ParquetWriter, table: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_write(self, table, *args, **kwargs)

    def failing_close(self: pq.ParquetWriter) -> None:  # the footer cannot be written either
        raise OSError(28, "No space left on device (footer)")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing_write)
    monkeypatch.setattr(pq.ParquetWriter, "close", failing_close)
    path = tmp_path / "transform.parquet"
    with pytest.raises(OSError, match="No space left on device$"), StagedWriter(path) as writer:
        for start in range(0, 30, 5):
            writer.write(_batch(start, 5))  # the failed write is raised, not the failed close
    assert not path.exists()
    assert not list(path.parent.glob(".transform.parquet.*.part"))


def test_an_error_of_the_step_waits_for_the_writer_and_removes_the_part(tmp_path: Path) -> None:
    path = tmp_path / "load.parquet"
    with pytest.raises(RuntimeError, match="the step failed"), StagedWriter(path) as writer:
        writer.write(_batch(0, 100_000))
        raise RuntimeError("the step failed")
    assert list(tmp_path.iterdir()) == []


def test_no_batch_gives_an_empty_file_of_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "link.parquet"
    with StagedWriter(path, {LINE: pl.Int64, "action": pl.String}):
        pass
    assert pl.read_parquet(path).schema == pl.Schema({LINE: pl.Int64, "action": pl.String})


def test_prefetched_gives_every_item_in_order_and_raises_the_producers_error() -> None:
    assert list(prefetched(iter(range(1000)))) == list(range(1000))

    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("line 3: bad bytes")

    got: list[int] = []
    with pytest.raises(ValueError, match="line 3: bad bytes"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # what leaving a for loop on an error does
    stopped_at = len(produced)
    time.sleep(0.3)
    assert len(produced) == stopped_at <= 3 + 2 + 1  # three taken, two queued, one in hand
    assert not any(t.name == "prefetch" for t in threading.enumerate())
