"""Property-based fuzzing of what a client can send: every file either loads balanced, with
every rejected row in the error file with its field and reason and exactly the loaded rows
in PostgreSQL, or fails as a file (``SourceFileError`` naming the file and the fault).
Never any other exception.

Each example runs the engine's own steps (``FlowSteps`` extract, transform, load) on the
private PostgreSQL cluster, without Dagster: ~30-60 ms an example. ``ETL_FUZZ_EXAMPLES``
sets how many (default 2000; 50000 for a long run); ``derandomize=True`` makes every run
try the same examples, so a CI failure reproduces anywhere.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings

from etl_assets.engine.catcher import ERROR_COLUMNS
from etl_assets.engine.columns import LINE
from etl_assets.engine.extract import SourceFileError
from etl_assets.engine.partition_keys import source_file_name
from etl_assets.engine.steps import FlowSteps
from etl_assets.engine.verdicts import reconciliation
from etl_assets.model.flow import FlowModel
from etl_assets.resources import FoldersResource
from etl_assets.resources.files import LocalFilesResource
from etl_assets_tests.services import PostgresServer
from etl_assets_tests.test_engine.fuzz_strategies import COLUMNS, DELIMITER, SourceCase, source_cases

EXAMPLES = int(os.environ.get("ETL_FUZZ_EXAMPLES", "2000"))
TABLE = "fuzz_target"
PARTITION, START = "2026-01-15", datetime(2026, 1, 15)
LOADED, FAILED = "loaded", "failed as a file"


def fuzz_flow(encoding: str) -> FlowModel:
    """A key, Strings (one with a length limit), an Integer and a Date: transform has rows
    to reject and keys to collapse or resolve."""
    return FlowModel.model_validate(
        {
            "name": f"fuzz_{encoding}",
            "source": {
                "file": "fuzz_{start:%Y%m%d}.csv",
                "folder": "/outbound/fuzz",
                "delimiter": DELIMITER,
                "encoding": encoding,
                "settle_seconds": 0,
            },
            "map": {
                "code": {"type": "String", "source": "CODE", "required": True, "max_length": 40},
                "name": {"type": "String", "source": "NAME", "required": True},
                "amount": {"type": "Integer", "source": "AMOUNT"},
                "when": {"type": "Date", "source": "WHEN", "format": "%d/%m/%Y"},
                "note": {"type": "String", "source": "NOTE"},
            },
            "target": {"table": TABLE, "key": "code"},
            "dedupe": {"latest_by": "when"},
            "schedule": None,
        }
    )


FLOWS = {encoding: fuzz_flow(encoding) for encoding in ("utf8", "cp1252")}


@pytest.fixture(scope="module")
def fuzz_engine(postgres: PostgresServer) -> Iterator[sa.Engine]:
    """One database for the module: every example reuses its table (emptied after each)."""
    with postgres.own_engine("etl_fuzz") as engine:
        yield engine


@dataclass
class Harness:
    """Runs one file through extract, transform and load and checks the property.

    Every example reuses one ETL_HOME, one partition and one table, as a client re-sending a
    day's file does: each step rewrites the files it stages (a failed extract is not followed
    by transform), the error file goes when nothing is rejected, and the target is emptied
    after each example. Removing the folders instead cost ~25 ms an example (ext4 rmdir).
    """

    engine: sa.Engine
    home: Path
    faults: Counter[str] = field(default_factory=Counter)  # file faults met, by kind
    rows: Counter[str] = field(default_factory=Counter)  # rows in, loaded, rejected, collapsed

    def run(self, case: SourceCase) -> str:
        """LOADED or FAILED; any broken property or other exception propagates."""
        imported = self.home / "import"
        imported.mkdir(parents=True, exist_ok=True)
        flow = FLOWS[case.encoding]
        file_name = source_file_name(flow, START)
        (imported / file_name).write_bytes(case.data)
        steps = FlowSteps(flow, FoldersResource(home=str(self.home)))
        stage = steps.stage(PARTITION)
        try:
            steps.extract(PARTITION, START, LocalFilesResource(root=str(imported)))
        except SourceFileError as exc:
            assert exc.file == file_name
            assert exc.fault.strip()
            assert str(exc).startswith(f"{file_name}: ")
            assert (stage.raw_dir / file_name).read_bytes() == case.data  # kept as received
            self.faults[re.sub(r"\d+", "N", exc.fault.split("(")[0]).strip()[:60]] += 1
            return FAILED
        assert (stage.raw_dir / file_name).read_bytes() == case.data
        transformed = steps.transform(PARTITION)
        loaded = steps.load(PARTITION, self.engine)
        rejected_lines = self._check_error_file(steps, flow, transformed.caught.count)
        stored = self._take_stored()
        good = pl.read_parquet(stage.file("transform.parquet"), columns=[LINE, "code"])
        assert sorted(stored) == sorted(good.iter_rows()), "the target holds exactly the loaded rows"
        balance = loaded.balance
        assert balance["loaded"] == len(stored)
        assert balance["rows_in"] == balance["loaded"] + balance["rejected"] + balance["collapsed"]
        assert reconciliation([balance]).passed
        self.rows.update({k: v for k, v in balance.items() if k != "partition"})
        # every source line once: loaded, rejected (in the error file) or collapsed
        collapsed = pl.read_parquet(stage.file("transform_collapsed.parquet"))[LINE].to_list()
        source_lines = pl.read_parquet(stage.file("extract.parquet"), columns=[LINE])[LINE].to_list()
        accounted = [line for line, _ in stored] + rejected_lines + collapsed
        assert sorted(accounted) == sorted(source_lines)
        return LOADED

    def run_extract(self, case: SourceCase) -> None:
        """Only the extract of the case (a regression asserts its fault)."""
        imported = self.home / "import"
        imported.mkdir(parents=True, exist_ok=True)
        flow = FLOWS[case.encoding]
        (imported / source_file_name(flow, START)).write_bytes(case.data)
        steps = FlowSteps(flow, FoldersResource(home=str(self.home)))
        steps.extract(PARTITION, START, LocalFilesResource(root=str(imported)))

    def _check_error_file(self, steps: FlowSteps, flow: FlowModel, count: int) -> list[int]:
        """The transform error file: one row per rejected row, each with a field and a
        reason; the source lines it names."""
        path = steps.stage(PARTITION).error_file("transform")
        if count == 0:
            assert not path.exists()
            return []
        errors = pl.read_csv(path, separator=flow.source.delimiter, infer_schema=False)
        tail = errors.select(errors.columns[-len(ERROR_COLUMNS) :])
        assert tail.columns == ERROR_COLUMNS
        assert errors.height == count
        assert tail["error_step"].to_list() == ["transform"] * count
        assert set(tail["error_field"].to_list()) <= set(COLUMNS), tail["error_field"].to_list()
        assert tail["error_reason"].str.len_chars().min() > 0
        assert tail["source_file"].to_list() == [source_file_name(flow, START)] * count
        return [int(line) for line in tail["source_line"]]

    def _take_stored(self) -> list[tuple[int, str]]:
        """The target's rows (line, key), deleted in the same statement: the next example
        starts from an empty table."""
        with self.engine.begin() as conn:
            return [
                (line, code)
                for line, code in conn.exec_driver_sql(
                    f"DELETE FROM {TABLE} RETURNING etl_source_line, code"
                ).all()
            ]


@pytest.fixture
def harness(fuzz_engine: sa.Engine, tmp_path: Path) -> Harness:
    return Harness(fuzz_engine, tmp_path / "etl_home")


def test_every_hostile_file_loads_balanced_or_fails_as_a_file(harness: Harness) -> None:
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(case=source_cases())
    def check(case: SourceCase) -> None:
        outcome = harness.run(case)
        outcomes[outcome] += 1
        kinds[case.kind] += 1
        event(outcome)

    started = time.perf_counter()
    check()
    seconds = time.perf_counter() - started
    tried = sum(outcomes.values())
    print(f"\nfuzz: {tried} examples in {seconds:.1f} s: {dict(outcomes)}; rows {dict(harness.rows)}")
    print(f"fuzz: kinds {dict(kinds.most_common())}")
    print(f"fuzz: file faults {dict(harness.faults.most_common())}")
    # the number tried is counted, not assumed; every outcome the property names was reached
    assert tried >= EXAMPLES
    assert outcomes[LOADED] and outcomes[FAILED]
    assert harness.rows["loaded"] and harness.rows["rejected"] and harness.rows["collapsed"]


# Regressions: inputs the fuzzing found that raised (or did worse), as plain tests.
HEADER = b"CODE;NAME;AMOUNT;WHEN;NOTE"


def test_blank_lines_before_the_header_are_skipped(harness: Harness) -> None:
    """Was: the first (blank) line taken for the header, ``NoDataError: empty CSV``."""
    case = SourceCase(b"\n \r\n" + HEADER + b"\nC1;Rossi;12;01/01/2025;\n", "utf8", "regression")
    assert harness.run(case) == LOADED
    assert harness.rows == Counter(rows_in=1, loaded=1, rejected=0, collapsed=0)
    staged = pl.read_parquet(harness.home / "data" / "fuzz_utf8" / PARTITION / "extract.parquet")
    assert staged.select(LINE, "CODE", "NAME").rows() == [(4, "C1", "Rossi")]


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        pytest.param(
            HEADER + b"\r;;;;;\rC1;C1;C1;line\nbreak\r",
            "malformed header at line 1: it holds a carriage return (CR-only line ends? "
            "save it with LF or CRLF line ends)",
            id="CR-only line ends, was DuplicateError",
        ),
        pytest.param(
            HEADER + b"\rC1;Rossi;1;01/01/2025;\r",
            "malformed header at line 1: it holds a carriage return (CR-only line ends? "
            "save it with LF or CRLF line ends)",
            id="CR-only line ends, was a load of no row",
        ),
        pytest.param(
            b"CODE;NAME; CODE\nC1;x;C2\n",
            "malformed header at line 1: column CODE given twice",
            id="a name twice once trimmed, was DuplicateError",
        ),
        pytest.param(
            b"CODE;CODE;NAME\nC1;C2;x\n",
            "malformed header at line 1: column CODE given twice",
            id="a name twice, was the first loaded and the second kept as CODE_duplicated_0",
        ),
        pytest.param(
            b"CODE;NAME;NO\x00TE\nC1;x;y\n",
            "malformed header at line 1: it holds a NUL byte (is it UTF-16? save it as UTF-8)",
            id="a NUL in a column name, was a Polars panic writing extract.parquet",
        ),
        pytest.param(
            b'error_field;CODE;NAME;AMOUNT;WHEN;NOTE\n"C1";"C1";"""";"""";"C1";"C1"\n',
            "malformed header at line 1: column error_field: a name the error file or staging uses; rename it",
            id="a column named as an error file's column, was DuplicateError writing the error file",
        ),
        pytest.param(
            b"_line;CODE;NAME\n7;C1;x\n",
            "malformed header at line 1: column _line: a name the error file or staging uses; rename it",
            id="a column named _line, was its values replaced by the source lines",
        ),
        pytest.param(
            b"\xef\xbb\xbf\xef\xbb\xbf\n" + HEADER + b"\nC1;x;;;\n",
            "malformed header at line 1: empty CSV",
            id="a header of a BOM only, was NoDataError",
        ),
    ],
)
def test_a_malformed_header_fails_as_a_file(harness: Harness, data: bytes, fault: str) -> None:
    with pytest.raises(SourceFileError) as caught:
        harness.run_extract(SourceCase(data, "utf8", "regression"))
    assert (caught.value.file, caught.value.fault) == ("fuzz_20260115.csv", fault)
    assert harness.run(SourceCase(data, "utf8", "regression")) == FAILED


def test_a_fault_quoting_a_10000_character_field_is_cut_short(harness: Harness) -> None:
    """Was: the whole field in the fault, which becomes a log line and an e-mail subject."""
    data = HEADER + b'\nC1;"' + b"x" * 10_000 + b'"y;1;;\n'
    with pytest.raises(SourceFileError) as caught:
        harness.run_extract(SourceCase(data, "utf8", "regression"))
    assert caught.value.fault.startswith('malformed CSV at line 2: could not parse `"xxx')
    assert len(caught.value.fault) < 260
