"""Hypothesis strategies for hostile source files: what a client's ERP, a spreadsheet or a
broken upload can put on the SFTP server.

A case is the file's bytes plus the encoding its flow declares. Most cases start as a
table (a header and rows of cells) rendered with some line end, quoting and encoding, then
damaged: the table keeps transform busy (values to reject, keys to collapse), the damage
keeps extract honest (it must fail the file, never crash).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from hypothesis import strategies as st

DELIMITER = ";"
COLUMNS = ["CODE", "NAME", "AMOUNT", "WHEN", "NOTE"]  # the flow's source columns (CODE and NAME required)
LONG_FIELD = 10_000

CODES = ["C1", "C2", "C3", "c1", " C1 ", "C-" + "9" * 38, "C" * 41]  # few: keys repeat, some too long
INTEGERS = [
    "0",
    "-0",
    "42",
    " 42 ",
    "4 2",
    "1.234",
    "1.234.567",
    "12,5",
    "1e5",
    "0x1F",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",  # one past Int64: the cast fails, the row is rejected
    "9" * 40,
    "-" + "9" * 400,
    "9.223.372.036.854.775.808",
    "١٢٣",  # Arabic-Indic digits
    "１２",  # full-width digits
]
DATES = [
    "31/12/2025",
    "01/01/2025",
    "29/02/2024",
    "29/02/2025",
    "31/04/2025",
    "00/00/0000",
    "01/01/0001",
    "31/12/9999",
    "01/01/10000",
    "01/01/99999",
    "01/01/-1",
    "1/1/25",
    "2025-01-01",
    "01/13/2025",
    "32/01/2025",
    "01/01/2025 10:00",
]
FORMULAS = [
    "=1+1",
    '=HYPERLINK("http://example.com";"click")',
    "=cmd|' /C calc'!A0",
    "+SUM(A1:A9)",
    "+41 79 123 45 67",
    "-2+3",
    "@SUM(A1)",
    "\t=1",
    "=",
    "+",
    "-",
    "@",
]
ODD_TEXT = [
    "",
    " ",
    "\t",
    '"',
    '""',
    'a"b',
    DELIMITER,
    f"a{DELIMITER}b",
    "\n",
    "\r",
    "\r\n",
    "line\nbreak",
    "line\r\nbreak",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\ufeff",
    "é",
    "Perù",
    "€",
    "𝄞",
    "名前",
    "\u202e",
    "NULL",
    "null",
    "\\N",
]


def _long(char: str) -> str:
    return char * LONG_FIELD


@dataclass(frozen=True)
class SourceCase:
    """A file's bytes and the encoding its flow declares (what the test runs)."""

    data: bytes
    encoding: str  # the flow's source.encoding: utf8 or cp1252
    kind: str  # how the case was made, for hypothesis' statistics


POOL = [
    *CODES,
    *INTEGERS,
    "1",
    "-17",
    "123456",
    *DATES,
    *FORMULAS,
    *ODD_TEXT,
    *(_long(c) for c in ("x", "é", "€", "\x00", '"', DELIMITER, "\n")),
]


# Values a row of the right types takes (half the rows): most of them load, so the load and
# the target see formulas, long fields, quotes, line breaks and extreme numbers and dates.
TYPED = {
    "CODE": ["C1", "C2", "C3", "C4", "C5", "c1", " C2 ", "=C1", "C;1", "C\n1", "Ç1", "C-" + "9" * 38],
    "AMOUNT": ["", "0", "-0", "42", " 42 ", "1.234.567", "9223372036854775807", "-9223372036854775808"],
    "WHEN": ["", "01/01/2025", "31/12/2025", "29/02/2024", "01/01/0001", "31/12/9999"],
}
TYPED_TEXT = [
    *FORMULAS,
    "Rossi",
    "Perù",
    "名前",
    "𝄞",
    "\u202e",
    "NULL",
    "\\N",
    'a"b',
    f"a{DELIMITER}b",
    "line\nbreak",
    "line\r\nbreak",
    "\x1b[31m",
    "\ufeffBOM",
    *(_long(c) for c in ("x", "é", "€", '"', DELIMITER, "\n")),
]

# Strategies are built once: building one inside a draw costs more than the draw (validation
# and caching), and a regular run makes ~100 draws an example.
_ONE_IN_FOUR = st.integers(0, 3)
_ONE_IN_SIX = st.integers(0, 5)
_ONE_IN_TEN = st.integers(0, 9)
_POOL = st.sampled_from(POOL)
_TYPED = {column: st.sampled_from(values) for column, values in TYPED.items()}
_TYPED_TEXT = st.sampled_from(TYPED_TEXT)
_TEXT = st.text(max_size=6)
_SLOPPY = st.sampled_from(["bare", "bare", "quoted", "stray_open", "stray_close", "stray_inside"])
_DROPPED = st.sampled_from([0, 0, 0, 0, 1, 2])
_EXTRA = st.sampled_from(["EXTRA", "=HEADER", "", "名前", "error_field", "id", "CODE", " NOTE "])
_EXTRAS = st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2])
_COLUMN = st.sampled_from(COLUMNS)
_ORDER = st.permutations(COLUMNS)
_ROWS = st.integers(0, 5)
_RAGGED = st.sampled_from([0] * 20 + [-1, 1, "none", 2])
_BLANKS = st.integers(0, 2)
_BLANK = st.sampled_from(["", " ", "width"])
_ENDS = st.sampled_from(["\n"] * 5 + ["\r\n"] * 4 + ["\r", "mixed"])
_END = st.sampled_from(["\n", "\r\n", "\r"])
_FLOW_ENCODING = st.sampled_from(["utf8", "utf8", "utf8", "cp1252"])
_SHAPE = st.sampled_from(["table"] * 12 + ["random", "header_then_random"])
_ENCODING = st.sampled_from(
    ["utf8"] * 16 + ["utf8_bom", "utf8_bom", "double_bom", "cp1252", "cp1252", "latin1", "utf16", "utf16_be"]
)
_DAMAGE = st.sampled_from(["overwrite", "insert", "truncate"])
_DAMAGES = st.integers(1, 3)
_CHUNK = st.binary(min_size=1, max_size=4)
_RANDOM = st.binary(max_size=300)
_TAIL = st.binary(max_size=200)


def quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def cell(draw: st.DrawFn, sloppy: bool, column: str | None) -> str:
    """One cell as written: as a CSV writer does (quoted when it must be, or always), or,
    ``sloppy``, bare whatever it holds, or with a stray quote. For a ``column`` (a row of the
    right types) a value of its type, else one of the pool of known troublemakers; either
    way, one in four text cells is any short text: any code point but surrogates, so
    control characters, quotes and line breaks too."""
    if column in _TYPED:
        value = draw(_TYPED[column])
    elif draw(_ONE_IN_FOUR) == 0:
        value = draw(_TEXT)
    else:
        value = draw(_POOL if column is None else _TYPED_TEXT)
    if not sloppy:
        must = any(c in value for c in (DELIMITER, '"', "\n", "\r"))
        return quoted(value) if must or draw(_ONE_IN_FOUR) == 0 else value
    how = draw(_SLOPPY)
    if how == "quoted":
        return quoted(value)
    if how == "stray_open":
        return '"' + value
    if how == "stray_close":
        return value + '"'
    if how == "stray_inside":
        return value[:1] + '"' + value[1:]
    return value


def header(draw: st.DrawFn) -> list[str]:
    """The flow's columns in any order, some left out (a required one too), extra ones (some
    twice, once trimmed, or a name the error file uses), maybe every name quoted."""
    dropped = {draw(_COLUMN) for _ in range(draw(_DROPPED))}
    chosen = [n for n in draw(_ORDER) if n not in dropped]
    for _ in range(draw(_EXTRAS)):
        chosen.insert(draw(st.integers(0, len(chosen))), draw(_EXTRA))
    names = chosen or ["CODE"]
    return [f'"{n}"' for n in names] if draw(st.booleans()) else names


def table(draw: st.DrawFn) -> str:
    """A header and rows (ragged at times), with empty lines, one kind of line end (or a mix)
    and maybe no final line break."""
    names = header(draw)
    width = len(names)
    columns = [n.strip('"').strip() for n in names]
    sloppy = draw(_ONE_IN_SIX) == 0
    lines = [DELIMITER.join(names)]
    for _ in range(draw(_ROWS)):
        ragged = draw(_RAGGED)
        size = 0 if ragged == "none" else max(0, width + ragged)
        typed = draw(st.booleans())
        row = (cell(draw, sloppy, columns[i] if typed and i < width else None) for i in range(size))
        lines.append(DELIMITER.join(row))
    for _ in range(draw(_BLANKS)):  # empty (or blank) lines anywhere
        blank = draw(_BLANK)
        lines.insert(draw(st.integers(0, len(lines))), DELIMITER * width if blank == "width" else blank)
    ends = draw(_ENDS)
    text = "".join(line + (draw(_END) if ends == "mixed" else ends) for line in lines)
    return text.rstrip("\r\n") if draw(st.booleans()) else text  # maybe no final line break


def _encode(text: str, how: str) -> bytes:
    if how == "utf8":
        return text.encode("utf-8", "surrogatepass")
    if how == "utf8_bom":
        return codecs.BOM_UTF8 + text.encode("utf-8", "surrogatepass")
    if how == "double_bom":
        return codecs.BOM_UTF8 * 2 + text.encode("utf-8", "surrogatepass")
    if how == "cp1252":
        return text.encode("cp1252", "replace")
    if how == "latin1":
        return text.encode("latin-1", "replace")
    if how == "utf16":
        return text.encode("utf-16", "surrogatepass")  # with a BOM
    if how == "utf16_be":
        return text.encode("utf-16-be", "surrogatepass")
    raise ValueError(how)


def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """The bytes with a few random bytes written over, put in, or cut off."""
    for _ in range(draw(_DAMAGES)):
        what = draw(_DAMAGE)
        at = draw(st.integers(0, len(data)))
        if what == "truncate":
            data = data[:at]
        else:
            chunk = draw(_CHUNK)
            data = data[:at] + chunk + data[at + (len(chunk) if what == "overwrite" else 0) :]
    return data


@st.composite
def source_cases(draw: st.DrawFn) -> SourceCase:
    """A hostile file: a table in some encoding (maybe damaged), or bytes of no structure."""
    flow_encoding = draw(_FLOW_ENCODING)
    shape = draw(_SHAPE)
    if shape == "random":
        return SourceCase(draw(_RANDOM), flow_encoding, "random bytes")
    how = draw(_ENCODING)
    if shape == "header_then_random":
        data = _encode(DELIMITER.join(COLUMNS) + "\n", how) + draw(_TAIL)
        return SourceCase(data, flow_encoding, f"header {how} then random bytes in a {flow_encoding} flow")
    data = _encode(table(draw), how)
    kind = f"table {how}"
    if draw(_ONE_IN_TEN) == 0:
        data = damaged(draw, data)
        kind += " damaged"
    return SourceCase(data, flow_encoding, f"{kind} in a {flow_encoding} flow")
