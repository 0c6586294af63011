"""Records in blocks of bytes: where a block may end, where its records start, and the
source line of each record (a quoted field may hold line breaks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import polars as pl

from etl_assets.engine.columns import LINE, SOURCE_FILE

BLOCK_BYTES = 8 << 20  # ~40k records of 200 bytes: a row group of the staged files


def record_blocks(handle: BinaryIO, size: int | None = None) -> Iterator[bytes]:
    """The file in blocks of about ``size`` bytes, each ending after a line break outside
    quotes: a block holds whole records (a quoted field's line breaks stay inside it)."""
    rest = b""
    while data := handle.read(size or BLOCK_BYTES):
        buffer = rest + data if rest else data
        cut = last_record_end(buffer)
        rest = buffer[cut:]
        if cut:
            yield buffer[:cut]
    if rest:
        yield rest


def last_record_end(buffer: bytes) -> int:
    """Just after the last line break with an even number of quotes before it; 0 if none."""
    if buffer.find(b'"') < 0:  # no quote at all (most files): every line break ends a record
        return buffer.rfind(b"\n") + 1
    end = len(buffer)
    while (newline := buffer.rfind(b"\n", 0, end)) >= 0:
        if buffer.count(b'"', 0, newline) % 2 == 0:
            return newline + 1
        end = newline
    return 0


def record_starts(block: bytes) -> list[int]:
    """Where each record of a block begins: after a line break outside quotes."""
    starts, quotes, position = [0], 0, 0
    while (newline := block.find(b"\n", position)) >= 0:
        quotes += block.count(b'"', position, newline)
        position = newline + 1
        if quotes % 2 == 0 and position < len(block):
            starts.append(position)
    return starts


def with_lines(
    frame: pl.DataFrame, file_name: str, first_line: int, block: bytes | None = None
) -> pl.DataFrame:
    """Each record's source line, counting the line breaks quoted inside records. A value
    keeps its line breaks as received (CRLF stays CRLF: the value is the client's); a CRLF
    counts as one line, as an LF does.

    When the ``block`` the frame was parsed from has as many lines as the frame has rows,
    every record is one line (no line break quoted in a value, no blank line) and no column
    is scanned: most files. Otherwise only the columns that hold a line break are counted.
    """
    if block is not None and block.count(b"\n") + (not block.endswith(b"\n")) == frame.height:
        lines = pl.int_range(first_line, first_line + frame.height)
    else:
        found = frame.select(pl.all().str.contains("\n", literal=True).any()).row(0)
        broken = [c for c, has in zip(frame.columns, found, strict=True) if has]
        if broken:
            embedded = pl.sum_horizontal(
                pl.col(c).str.count_matches("\n", literal=True).fill_null(0) for c in broken
            )
            lines = (1 + embedded).cum_sum() - (1 + embedded) + first_line
        else:
            lines = pl.int_range(first_line, first_line + frame.height)
    return frame.with_columns(lines.cast(pl.Int64).alias(LINE), pl.lit(file_name).alias(SOURCE_FILE))
