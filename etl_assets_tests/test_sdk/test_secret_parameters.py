"""A secret's one place of use: a Method's options. The site's salt is an enc: token in the
parameter set ``site``; the flow names it (``options: {salt: "${site.hash_salt}"}``); the
transform decrypts it right before ``site_rules.pseudonymise`` is called. Proved on a real run
(sshd, PostgreSQL, Dagster): the target holds the salted hashes, and the clear salt is nowhere
a run, a compile or the logs leave bytes. A token anywhere else is refused at its line."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml
from cryptography.fernet import Fernet
from dagster._serdes import serialize_value

from etl_assets.cli import main
from etl_assets.definitions import build_definitions
from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.transform.maps import MethodError, apply_map
from etl_assets.model.declarations import DeclarationError
from etl_assets.sdk import Field, FlowError, Project
from etl_assets.sdk.flow import Flow
from etl_assets.settings import encrypt, load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv
from etl_assets_tests.test_resources.test_secrets_scan import Scan

RULES = Path(__file__).with_name("site_rules.py")
SALT = "Site-Salt 7f3a9c!"  # the site's secret; every search below looks for it
ROWS = [
    "S1;IT00000000101;Fornitore Uno;;;;IT;Anna.Rossi@Uno.example;;;;;;14/01/2026 10:00:00",
    "S2;IT00000000102;Fornitore Due;;;;IT;  ops@due.example ;;;;;;14/01/2026 10:00:00",
]
BAD_ROW = "S3;IT00000000103;Data Errata;;;;IT;tre@tre.example;;;;;31/02/2019;14/01/2026 10:00:00"


def pseudonym(address: str, salt: str = SALT) -> str:
    return hashlib.sha256((salt + address).encode()).hexdigest()


@pytest.fixture(autouse=True)
def forget_rules() -> Iterator[None]:
    """The client's module is imported from this test's flow folder: the next test has its own."""
    yield
    sys.modules.pop("site_rules", None)


def salted_flow(project: Project, salt_token: str, folder: str = "/outbound/suppliers", **edits: Any) -> Flow:
    """``suppliers`` (the companies template) with ``email_hash: site_rules:pseudonymise`` salted by
    ``${site.hash_salt}``, its folder ``${site.folder}``; ``edits`` replace the field's keys. Read
    again after the save: its parameters resolved, as a run reads it."""
    parameters = project.flows_dir / "parameters"
    parameters.mkdir(parents=True, exist_ok=True)
    site = {"default": "milano", "values": {"milano": {"folder": folder, "hash_salt": salt_token}}}
    (parameters / "site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
    flow = project.create_flow("suppliers", template="companies")
    shutil.copy(RULES, flow.path.parent / RULES.name)
    flow.source.folder = "${site.folder}"
    keys = {"source": "EMAIL", "options": {"salt": "${site.hash_salt}"}, **edits}
    flow.map["email_hash"] = Field.method(keys.pop("method", "site_rules:pseudonymise"), **keys)
    project.update_flow(flow)
    again = project.flows.get("suppliers")
    assert again is not None
    return again


def compile_output(capsys: pytest.CaptureFixture[str], *names: str) -> tuple[int, str]:
    """``etl-assets flows compile NAMES``: its exit status and all it printed."""
    capsys.readouterr()
    code = main(["flows", "compile", *names])
    out = capsys.readouterr()
    return code, out.out + out.err


# -- the run ------------------------------------------------------------------------------
def test_the_salt_is_decrypted_at_use_and_is_nowhere_in_clear(
    flow_env: FlowEnv,
    encrypt_password: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = encrypt_password(SALT)
    project = Project.open(env="test")
    flow = salted_flow(project, token, folder=flow_env.folder)
    assert flow.map["email_hash"].options == {"salt": token}  # the model holds the token
    text = flow.path.read_text(encoding="utf-8")
    assert "options: {salt: '${site.hash_salt}'}" in text and "enc:" not in text
    code, compiled = compile_output(capsys, "suppliers")
    assert (code, compiled) == (0, "suppliers: ok\n")

    flow_env.put("suppliers_20260115.csv", companies_csv(*ROWS, BAD_ROW))  # a bad date: an error file
    result = flow_env.run("2026-01-15", job="suppliers_job")
    assert result.success, [str(e) for e in result.all_events if e.is_failure]
    assert (flow_env.home / "errors" / "suppliers" / "2026-01-15" / "transform.csv").is_file()
    (mail,) = sorted(flow_env.smtp.maildir.glob("*.eml"))  # the run's e-mail, the error file attached
    assert flow_env.query("select external_id, email, email_hash from suppliers order by 1") == [
        ("S1", "anna.rossi@uno.example", pseudonym("Anna.Rossi@Uno.example")),
        ("S2", "ops@due.example", pseudonym("ops@due.example")),  # the value stripped, as received
    ]

    events = [serialize_value(e) for e in flow_env.instance.all_logs(result.run_id)]
    metadata = [str(m.metadata) for m in result.asset_materializations_for_node("suppliers_steps")]
    assert any("rows_in" in m or "good_rows" in m for m in metadata), metadata  # the metadata was read
    scan = Scan({"the site's salt": SALT.encode()})
    hits = scan.search_tree(flow_env.home) + scan.search_tree(Path(flow_env.instance.root_directory))
    hits += scan.search("the run's event log", "\n".join(events).encode())
    hits += scan.search("the materializations' metadata", "\n".join(metadata).encode())
    hits += scan.search("the compile output", compiled.encode())
    hits += scan.search("the logs", (caplog.text + "".join(capsys.readouterr())).encode())
    hits += scan.search_mail("the run's e-mail", mail.read_bytes())
    assert hits == []
    assert any(p.name == "transform.parquet" for p in flow_env.home.rglob("*"))  # staged files searched


def test_a_run_may_pick_another_token_but_never_a_salt_in_clear(
    flow_env: FlowEnv, encrypt_password: Any
) -> None:
    project = Project.open(env="test")
    salted_flow(project, encrypt_password(SALT), folder=flow_env.folder)
    flow_env.put("suppliers_20260115.csv", companies_csv(ROWS[0]))
    other = "Other-Salt 2b8e41"

    def run(overrides: dict[str, str]) -> dg.ExecuteInProcessResult:
        config = {"ops": {"suppliers_steps": {"config": {"overrides": {"site": overrides}}}}}
        with flow_env.defs_state():
            job = build_definitions(load_settings("test")).resolve_job_def("suppliers_job")
            return job.execute_in_process(
                partition_key="2026-01-15",
                instance=flow_env.instance,
                run_config=config,
                raise_on_error=False,
            )

    assert run({"hash_salt": encrypt_password(other)}).success
    assert flow_env.query("select email_hash from suppliers") == [
        (pseudonym("Anna.Rossi@Uno.example", other),)
    ]
    refused = run({"hash_salt": "in-clear-salt-9d"})
    error = str(refused.failure_data_for_node("suppliers_steps").error)  # type: ignore[union-attr]
    assert not refused.success and "run config: " in error
    assert "overrides.site.hash_salt: a secret in clear; store an enc: token" in error
    assert "in-clear-salt-9d" not in error
    assert flow_env.query("select email_hash from suppliers") == [
        (pseudonym("Anna.Rossi@Uno.example", other),)
    ]


# -- refused before anything runs ----------------------------------------------------------
def test_a_token_anywhere_but_in_options_is_refused_at_its_line(
    project: Project, encrypt_password: Any
) -> None:
    flow = salted_flow(project, encrypt_password(SALT))
    text = flow.path.read_text(encoding="utf-8")
    flow.path.write_text(text.replace("{type: Email}", "{type: Email, default: '${site.hash_salt}'}"))
    line = next(n for n, x in enumerate(flow.path.read_text().splitlines(), 1) if "default: '${site" in x)
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert str(caught.value) == (
        f"{flow.path}:{line}: map.email.default: Value error, an enc: token can only be used in a "
        "Method's options, where it is decrypted at use"
    )
    flow.path.write_text(text)  # as it was, then the same through the SDK
    again = project.flows.get("suppliers")
    assert again is not None
    again.source.folder = f"/outbound/{encrypt_password('x')}"
    with pytest.raises(
        FlowError, match="source.folder: Value error, an enc: token can only be used in a Method"
    ):
        project.update_flow(again)
    with pytest.raises(
        ValueError, match="options are a Method's keyword arguments: a String field takes none"
    ):
        Field.string(options={"salt": "x"})


def test_an_option_named_like_a_secret_in_clear_is_refused_at_its_line(
    project: Project, encrypt_password: Any
) -> None:
    """Written straight into the declaration, not through a parameter: refused all the same."""
    flow = salted_flow(project, encrypt_password(SALT))
    text = flow.path.read_text(encoding="utf-8")
    assert "{salt: '${site.hash_salt}'}" in text
    flow.path.write_text(text.replace("'${site.hash_salt}'", f"'{SALT}'"), encoding="utf-8")
    line = next(n for n, x in enumerate(flow.path.read_text().splitlines(), 1) if SALT in x)
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert str(caught.value) == (
        f"{flow.path}:{line}: map.email_hash.options.salt: Value error, an option named like a secret "
        "holds it in clear: store an enc: token (etl-assets encrypt-password), in a parameter set or here"
    )


def test_a_token_of_another_key_fails_compile_without_its_value(
    project: Project, encrypt_password: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    encrypt_password("the installation's key is made")
    foreign = encrypt(SALT, key=Fernet.generate_key())
    salted_flow(project, foreign)
    code, output = compile_output(capsys, "suppliers")
    assert code == 1
    assert (
        "error: suppliers transform email_hash: suppliers map.email_hash option salt: the token cannot be "
        "decrypted with the current key (encrypted with another key, or damaged): encrypt it again with "
        "this installation's key (etl-assets encrypt-password)"
    ) in output
    assert SALT not in output and foreign not in output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sault": "${site.hash_salt}"}, "option sault: site_rules:pseudonymise takes no such option"),
        ({}, "options of site_rules:pseudonymise: missing a required argument: 'salt'"),
    ],
)
def test_options_are_bound_against_the_function(
    project: Project, encrypt_password: Any, options: dict[str, str], message: str
) -> None:
    flow = salted_flow(project, encrypt_password(SALT), options=options)
    (problem,) = flow.compile().errors
    assert (problem.stage, problem.field, problem.message) == (
        "transform",
        "email_hash",
        f"{message} (its options: salt)",
    )
    assert "email_hash:" in flow.path.read_text().splitlines()[problem.line - 1]  # type: ignore[operator]


def test_a_method_that_tells_its_salt_is_told_without_it(project: Project, encrypt_password: Any) -> None:
    flow = salted_flow(project, encrypt_password(SALT), method="site_rules:careless")
    (problem,) = flow.compile().errors
    assert problem.message == "does not compile: MethodError: ValueError: salt *** refused: too predictable"
    model = flow.model
    frame = pl.DataFrame({"EMAIL": ["a@b.example"], LINE: [1], SOURCE_FILE: ["f.csv"]}).lazy()
    with pytest.raises(MethodError) as caught:  # the transform's own call
        apply_map(model, frame, ["EMAIL"])
    assert SALT not in str(caught.value) and caught.value.__cause__ is None


def test_arrange_puts_options_after_method_and_keeps_the_reference(
    project: Project, encrypt_password: Any
) -> None:
    flow = salted_flow(project, encrypt_password(SALT))
    text = flow.path.read_text(encoding="utf-8")
    written = next(x for x in text.splitlines() if "email_hash:" in x)
    flow.path.write_text(
        text.replace(
            written.strip(),
            "email_hash: {options: {salt: '${site.hash_salt}'}, method: site_rules:pseudonymise, "
            "source: EMAIL, type: Method}",
        )
    )
    again = project.flows.get("suppliers")
    assert again is not None
    again.auto_arrange()
    project.update_flow(again)
    arranged = again.path.read_text(encoding="utf-8")
    assert (
        "email_hash: {type: Method, source: EMAIL, method: site_rules:pseudonymise, "
        "options: {salt: '${site.hash_salt}'}}"
    ) in arranged
    assert "enc:" not in arranged
