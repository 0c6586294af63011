"""Flows exported from one installation and imported into another: real ZIPs, two ETL_HOMEs.

The second installation is the same settings with another home (``Settings.home``), so its
flows folder, import folder and database are its own. Malicious archives are built by hand
from a genuine export's entries, each one fault at a time; none may leave a file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from etl_assets.cli import main
from etl_assets.sdk import Field
from etl_assets.sdk.archive import ArchiveError, export_flow
from etl_assets.sdk.archive_secrets import redact
from etl_assets.sdk.documents import load_document
from etl_assets_tests.test_sdk.conftest import RULES, RULES_SOURCE, Homes


def tree(root: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under ``root``: equal means untouched."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


def entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_an_export_carries_the_declaration_its_module_and_a_manifest(homes: Homes) -> None:
    homes.supplier()
    flow = homes.source.flows.get("suppliers")
    assert flow is not None
    (flow.path.parent / f"{RULES}.py").write_text(RULES_SOURCE, encoding="utf-8")
    flow.map["code"] = Field.method(f"{RULES}:reverse", source="COMPANY_ID")
    homes.source.update_flow(flow)

    path = homes.source.export_flow(flow)
    assert path.parent == Path(homes.source.settings.home) / "export"
    assert re.fullmatch(r"flows_\d{8}T\d{6}Z\.zip", path.name)
    found = entries(path)
    assert sorted(found) == ["flows/suppliers/defs.yaml", f"flows/suppliers/{RULES}.py", "manifest.json"]
    assert found["flows/suppliers/defs.yaml"] == flow.path.read_bytes()  # as saved, comments and all
    manifest = json.loads(found.pop("manifest.json"))
    assert (manifest["format"], manifest["format_version"], manifest["dagster_version"]) == (
        "etl_assets.flows",
        1,
        "1.13.27",
    )
    assert manifest["etl_assets_version"] and manifest["created_at"].endswith("Z")
    assert manifest["flows"] == [
        {
            "name": "suppliers",
            "declaration": "flows/suppliers/defs.yaml",
            "modules": [f"flows/suppliers/{RULES}.py"],
            "table": "suppliers",
            "cadence": "daily",
        }
    ]
    assert manifest["entries"] == {
        name: {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()} for name, blob in found.items()
    }

    folder = homes.target_home / "flows" / "suppliers"
    response = homes.target.import_flows(path)  # its module is imported from the flow's folder
    assert response.status == "completed", [str(o) for o in response.outcomes]
    (outcome,) = response.outcomes
    assert str(outcome) == f"suppliers: created ({folder / 'defs.yaml'})"
    assert response.imported_flows() == ["suppliers"] and response.refresh() is response
    (imported,) = response.imported_flows(load=True)
    assert imported.path == folder / "defs.yaml" and imported.map["code"].method == f"{RULES}:reverse"
    assert (folder / f"{RULES}.py").read_text(encoding="utf-8") == RULES_SOURCE
    assert [r.number for r in imported.history()] == [1] and response.placeholders == []

    bare = homes.target.import_flows(
        path, conflict_resolution="rename", include_dependencies=False, import_only=True, wait=0
    )
    assert bare.imported_flows() == ["suppliers_2"]  # its module left to the installation
    assert sorted(p.name for p in (folder.parent / "suppliers_2").iterdir()) == ["defs.yaml", "revisions"]


def test_a_method_module_that_is_not_the_flows_own_is_not_exported(homes: Homes) -> None:
    homes.supplier()
    flow = homes.source.flows.get("suppliers")
    assert flow is not None
    flow.map["packaged"] = Field.method("etl_assets.defs.rules:tidy")  # travels with the package
    homes.source.update_flow(flow)
    assert sorted(entries(export_flow(homes.source, "suppliers"))) == [
        "flows/suppliers/defs.yaml",
        "manifest.json",
    ]
    flow.map["elsewhere"] = Field.method("json:dumps")
    homes.source.update_flow(flow)
    with pytest.raises(
        ArchiveError, match=r"map.elsewhere: Method 'json:dumps' names module 'json', which is "
    ):
        homes.source.export_flows(["suppliers"], homes.tmp / "out.zip")
    assert not (homes.tmp / "out.zip").exists()


def test_each_conflict_resolution(homes: Homes) -> None:
    homes.supplier()
    first = homes.source.export_flows(["suppliers"], homes.tmp)
    assert homes.target.import_flows(first).status == "completed"
    declaration = homes.target_home / "flows" / "suppliers" / "defs.yaml"
    before = declaration.read_bytes()
    edited = homes.source.flows.get("suppliers")
    assert edited is not None
    edited.warn_limit = 3
    homes.source.update_flow(edited)
    second = homes.source.export_flows(["suppliers", "companies"], homes.tmp / "second.zip")

    skipped = homes.target.import_flows(second)  # the default: skip
    assert [o.outcome for o in skipped.outcomes] == ["skipped", "skipped"]
    assert str(skipped.outcomes[0]) == f"suppliers: skipped: a flow suppliers exists here: {declaration}"
    assert skipped.outcomes[1].reason.startswith("a sample flow companies exists here: ")
    assert declaration.read_bytes() == before and skipped.imported_flows() == []

    renamed = homes.target.import_flows(second, conflict_resolution="rename")
    assert [str(o).split(" (")[0] for o in renamed.outcomes] == [
        "suppliers: renamed to suppliers_2",
        "companies: renamed to companies_2",
    ]
    copy = homes.target.flows.get("suppliers_2")
    assert copy is not None and (copy.target.table, copy.warn_limit) == ("suppliers_2", 3)
    assert copy.links[0].table == "suppliers_2" and copy.compile().ok

    replaced = homes.target.import_flows(second, conflict_resolution="replace", on_failure="continue")
    assert [o.outcome for o in replaced.outcomes] == ["replaced", "failed"]
    assert "only a client's flow is replaced (rename it instead)" in replaced.outcomes[1].reason
    flow = homes.target.flows.get("suppliers")
    assert flow is not None and flow.warn_limit == 3 and flow.path == declaration
    history = flow.history()
    assert [r.number for r in history] == [1, 2] and history[0].path.read_bytes() == before
    assert replaced.status == "failed"  # one flow of it (companies) could not be imported


def test_a_dry_run_plans_and_writes_nothing(homes: Homes) -> None:
    homes.supplier()
    archive = homes.source.export_flows(["suppliers"], homes.tmp / "suppliers.zip")
    untouched = tree(homes.target_home)
    plan = homes.target.import_flows(archive, dry_run=True)
    assert (str(plan.outcomes[0]), plan.status, plan.imported_flows()) == (
        f"suppliers: would create ({homes.target_home / 'flows' / 'suppliers' / 'defs.yaml'})",
        "completed",
        [],
    )
    assert tree(homes.target_home) == untouched == {}

    homes.target.import_flows(archive)
    untouched = tree(homes.target_home)
    declaration = homes.target_home / "flows" / "suppliers" / "defs.yaml"
    plans = {
        c: homes.target.import_flows(archive, conflict_resolution=c, dry_run=True)
        for c in ("skip", "rename", "replace")
    }
    assert tree(homes.target_home) == untouched
    exists = f"a flow suppliers exists here: {declaration}"
    assert str(plans["skip"].outcomes[0]) == f"suppliers: would skip: {exists}"
    assert str(plans["rename"].outcomes[0]) == (
        f"suppliers: would rename to suppliers_2 ({homes.target_home / 'flows' / 'suppliers_2' / 'defs.yaml'})"
        f": {exists}; its table is renamed suppliers_2 too"
    )
    assert str(plans["replace"].outcomes[0]) == (
        f"suppliers: would replace ({declaration}): {exists}; its declaration stays in the flow's revisions"
    )


def broken_and_sound(homes: Homes) -> Path:
    """An archive of ``broken`` (a link to a table nobody loads) then ``sound``."""
    homes.supplier("broken")
    flow = homes.source.flows.get("broken")
    assert flow is not None
    flow.links[0].table = "nowhere"
    homes.source.update_flow(flow)  # saved: a save validates, only compile looks at links
    homes.supplier("sound")
    return homes.source.export_flows(["broken", "sound"], homes.tmp / "two.zip")


def test_on_failure_stop_or_continue_and_a_flow_failing_compile_is_not_kept(homes: Homes) -> None:
    archive = broken_and_sound(homes)
    stopped = homes.target.import_flows(archive)  # on_failure="stop"
    assert stopped.status == "failed"
    broken, sound = stopped.outcomes
    assert (broken.outcome, broken.reason) == ("failed", "compile failed")
    assert "link parent_vat: table nowhere is loaded by no flow of the project" in broken.problems[0]
    assert (sound.outcome, sound.reason) == (
        "skipped",
        "not imported: the import stopped at broken (on_failure='stop')",
    )
    assert sorted(tree(homes.target_home / "flows")) == []  # nothing half-imported

    going_on = homes.target.import_flows(archive, on_failure="continue")
    assert [o.outcome for o in going_on.outcomes] == ["failed", "created"]
    assert going_on.imported_flows() == ["sound"] and going_on.status == "failed"
    assert sorted(p.name for p in (homes.target_home / "flows").iterdir()) == ["sound"]

    # a replacement that fails compile leaves the flow it would have replaced as it was
    sound_flow = homes.source.flows.get("sound")
    assert sound_flow is not None
    sound_flow.links[0].table = "nowhere"
    homes.source.update_flow(sound_flow)
    worse = homes.source.export_flows(["sound"], homes.tmp / "worse.zip")
    before = tree(homes.target_home / "flows")
    failed = homes.target.import_flows(worse, conflict_resolution="replace")
    assert failed.outcomes[0].outcome == "failed" and tree(homes.target_home / "flows") == before


def test_import_only_keeps_a_flow_it_does_not_compile(homes: Homes) -> None:
    archive = broken_and_sound(homes)
    response = homes.target.import_flows(archive, import_only=True)
    assert [o.outcome for o in response.outcomes] == ["created", "created"]
    (broken, _) = response.imported_flows(load=True)
    assert not broken.compile().ok


# -- malicious archives ------------------------------------------------------------------
Entry = tuple[str, bytes, int]  # name, content, unix mode
SYMLINK, REGULAR = 0o120777, 0o100644


def write_zip(path: Path, items: list[Entry], manifest: dict | None, deflate: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as archive:
        for name, blob, mode in items:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            archive.writestr(info, blob)
        if manifest is not None:
            archive.writestr("manifest.json", json.dumps(manifest))
    return path


def vouched(manifest: dict, items: list[Entry]) -> dict:
    """The manifest vouching for ``items`` (their sizes and checksums right)."""
    listed = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b, _ in items}
    return {**manifest, "entries": listed}


DECLARATION = "flows/suppliers/defs.yaml"


def _with(items: list[Entry], name: str, blob: bytes, mode: int = REGULAR) -> list[Entry]:
    return [*items, (name, blob, mode)]


def _declared(items: list[Entry], old: bytes, new: bytes) -> list[Entry]:
    return [(n, b.replace(old, new) if n == DECLARATION else b, m) for n, b, m in items]


def _bomb_of(size: int) -> Callable[[list[Entry]], list[Entry]]:
    return lambda items: _with(items, "flows/suppliers/bomb.py", b"\0" * size)


# name -> (the genuine entries made malicious, the manifest still vouching for them?, refusal)
MALICIOUS: dict[str, tuple[Callable[[list[Entry]], list[Entry]], bool, str]] = {
    "zip slip": (
        lambda e: _with(e, "flows/suppliers/../../../evil.py", b"x"),
        True,
        r"entry 'flows/suppliers/../../../evil.py': a path outside the archive's root",
    ),
    "parent path": (lambda e: _with(e, "../evil.py", b"x"), True, r"entry '../evil.py': a path outside"),
    "absolute path": (
        lambda e: _with(e, "/tmp/evil.py", b"x"),
        True,
        r"entry '/tmp/evil.py': an absolute path",
    ),
    "symlink": (
        lambda e: _with(e, "flows/suppliers/rules.py", b"/etc/passwd", SYMLINK),
        True,
        r"entry 'flows/suppliers/rules.py': a symbolic link",
    ),
    "tampered checksum": (
        lambda e: _declared(e, b"warn_limit: 10", b"warn_limit: 99"),
        False,
        r"entry 'flows/suppliers/defs.yaml': its sha256 does not match",
    ),
    "extra entry": (
        lambda e: _with(e, "flows/suppliers/extra.py", b"import os"),
        False,
        r"entry 'flows/suppliers/extra.py': not in the manifest",
    ),
    "ratio bomb": (
        _bomb_of(20 * 1024 * 1024),
        True,
        r"entry 'flows/suppliers/bomb.py': compressed \d+:1, over the limit of 100:1",
    ),
    "invalid declaration": (
        lambda e: _declared(e, b"warn_limit: 10", b"warn_limit: -1"),
        True,
        r"flows/suppliers/defs.yaml:\d+: warn_limit: Input should be greater than or equal to 0",
    ),
    "method outside the archive": (
        lambda e: _declared(e, b"  target:", b"    run: {type: Method, method: 'os:system'}\n  target:"),
        True,
        r"map.run: Method 'os:system' names module 'os', which is neither of the etl_assets package nor one of the archive's modules",
    ),
    "module no method names": (
        lambda e: _with(e, "flows/suppliers/helper.py", b"import os"),
        True,
        r"entry 'flows/suppliers/helper.py': a module no Method field of the flow names",
    ),
    "yaml aliases": (
        lambda e: _declared(e, b"  description:", b"  x: &a [1]\n  y: *a\n  description:"),
        True,
        r"uses YAML aliases",
    ),
    "entry outside a flow": (
        lambda e: _with(e, "notes.txt", b"hello"),
        True,
        r"entry 'notes.txt': not inside the folder of a flow the manifest lists",
    ),
}


_GENUINE: dict[str, bytes] = {}


def genuine_entries(homes: Homes) -> dict[str, bytes]:
    """The entries of a genuine export of suppliers, made once for every malicious variant."""
    if not _GENUINE:
        homes.supplier()
        _GENUINE.update(entries(homes.source.export_flows(["suppliers"], homes.tmp / "genuine.zip")))
    return dict(_GENUINE)


@pytest.mark.parametrize("fault", sorted(MALICIOUS))
def test_a_malicious_archive_is_refused_and_nothing_is_written(homes: Homes, fault: str) -> None:
    genuine = genuine_entries(homes)
    manifest = json.loads(genuine.pop("manifest.json"))
    items = [(n, b, REGULAR) for n, b in genuine.items()]
    craft, vouch, refusal = MALICIOUS[fault]
    bad = craft(items)
    path = write_zip(homes.tmp / "bad.zip", bad, vouched(manifest, bad) if vouch else manifest)
    untouched = tree(homes.target_home)
    for dry_run in (True, False):
        with pytest.raises(ArchiveError, match=refusal) as refused:
            homes.target.import_flows(path, dry_run=dry_run, conflict_resolution="replace")
        assert str(refused.value).startswith("bad.zip refused: ")
        assert str(refused.value).endswith("; nothing was imported")
    assert tree(homes.target_home) == untouched


def test_an_oversized_archive_is_refused(homes: Homes) -> None:
    path = write_zip(
        homes.tmp / "big.zip", [("flows/x/big.py", b"y" * (51 * 1024 * 1024), REGULAR)], None, deflate=False
    )
    with pytest.raises(ArchiveError, match=r"big.zip refused: the file is over 52428800 bytes"):
        homes.target.import_flows(path)
    blob = os.urandom(20_000) + bytes(980_000)  # deflates 50:1, under the ratio limit
    many = write_zip(homes.tmp / "wide.zip", [(f"flows/x/m{i}.py", blob, REGULAR) for i in range(60)], None)
    with pytest.raises(
        ArchiveError, match=r"wide.zip refused: 60000000 bytes uncompressed, over the limit of 52428800"
    ):
        homes.target.import_flows(many)
    assert tree(homes.target_home) == {}


# -- secrets -----------------------------------------------------------------------------
def test_an_export_never_carries_a_secret(homes: Homes, encrypt_password: Callable[[str], str]) -> None:
    token = encrypt_password("s3cret-api-key")
    homes.supplier()
    flow = homes.source.flows.get("suppliers")
    assert flow is not None
    (flow.path.parent / f"{RULES}.py").write_text(RULES_SOURCE, encoding="utf-8")
    flow.map["api_key"] = Field.method(f"{RULES}:tagged", source="NAME", options={"tag": token})
    flow.map["smtp_password"] = Field.string(default="hunter2-plain")
    homes.source.update_flow(flow)
    path = homes.source.export_flows(["suppliers"], homes.tmp / "secrets.zip")

    raw = path.read_bytes()
    for blob in [raw, *entries(path).values()]:
        for secret in (token, token.removeprefix("enc:"), "hunter2-plain", "s3cret-api-key"):
            assert secret.encode() not in blob
    manifest = json.loads(entries(path)["manifest.json"])
    assert [(p["placeholder"], p["why"]) for p in manifest["placeholders"]] == [
        ("${secret:suppliers.map.api_key.options.tag}", "an enc: token"),
        ("${secret:suppliers.map.smtp_password.default}", "the plain default of a field named like a secret"),
    ]

    response = homes.target.import_flows(path)
    (outcome,) = response.outcomes
    assert (
        outcome.outcome == "created"
        and "placeholders to fill: ${secret:suppliers.map.api_key.options.tag}" in outcome.reason
    )
    assert [str(p) for p in response.placeholders] == [
        "${secret:suppliers.map.api_key.options.tag}  (suppliers map.api_key.options.tag: to fill with an enc: token)",
        "${secret:suppliers.map.smtp_password.default}  (suppliers map.smtp_password.default: to fill with an enc: token)",
    ]
    (imported,) = response.imported_flows(load=True)
    result = imported.compile()
    assert [(p.stage, p.field) for p in result.errors] == [
        ("placeholder", "map.api_key.options.tag"),
        ("placeholder", "map.smtp_password.default"),
    ]
    lines = imported.path.read_text(encoding="utf-8").splitlines()
    assert "api_key:" in lines[result.errors[0].line - 1]  # type: ignore[operator]
    imported.map["api_key"].options = {"tag": encrypt_password("the-new-sites-key")}
    imported.map["smtp_password"].default = "none"  # a default is text: a token may not stand there
    homes.target.update_flow(imported)
    assert imported.compile().ok and response.refresh().placeholders == []


def test_a_plain_value_under_a_secret_key_becomes_a_placeholder() -> None:
    """Beyond the map: any key named like a secret (a runtime parameter, say) is left out."""
    document = load_document(
        "attributes:\n  parameters:\n    db: {host: db1, password: hunter2, api_token: ''}\n"
    )
    (found,) = redact(document, "suppliers")
    assert (found.placeholder, found.why) == (
        "${secret:suppliers.parameters.db.password}",
        "a plain value under a key named like a secret",
    )
    assert dict(document["attributes"]["parameters"]["db"]) == {
        "host": "db1",
        "password": "${secret:suppliers.parameters.db.password}",
        "api_token": "",
    }


def test_an_enc_token_in_a_comment_stops_the_export(
    homes: Homes, encrypt_password: Callable[[str], str]
) -> None:
    homes.supplier()
    flow = homes.source.flows.get("suppliers")
    assert flow is not None
    flow.path.write_text(flow.path.read_text() + f"# old key: {encrypt_password('x')}\n", encoding="utf-8")
    with pytest.raises(ArchiveError, match=r"defs.yaml:\d+: an enc: token outside a value \(a comment\?\)"):
        homes.source.export_flows(["suppliers"], homes.tmp / "leak.zip")
    assert not (homes.tmp / "leak.zip").exists()


# -- the CLI -----------------------------------------------------------------------------
def test_the_cli_exports_and_imports(
    homes: Homes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def flows(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["flows", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    homes.supplier()
    archive = homes.tmp / "suppliers.zip"
    assert flows("export", "suppliers", "--to", str(archive)) == (0, f"exported suppliers: {archive}\n", "")
    assert flows("export", "nope")[0] == 2

    monkeypatch.setenv("ETL_HOME", str(homes.target_home))  # the other installation
    code, out, _ = flows("import", str(archive), "--dry-run")
    assert (code, out.splitlines()[-1]) == (0, "import plan: completed")
    assert out.startswith("suppliers: would create (") and tree(homes.target_home) == {}
    code, out, _ = flows("import", str(archive), "--json")
    assert code == 0 and json.loads(out)["flows"][0]["outcome"] == "created"
    code, out, _ = flows("import", str(archive), "--conflict", "rename")
    assert code == 0 and out.startswith("suppliers: renamed to suppliers_2 (")

    bad = homes.tmp / "bad.zip"
    bad.write_bytes(io.BytesIO(b"not a zip").getvalue())
    code, out, err = flows("import", str(bad))
    assert (code, out) == (1, "") and err.startswith("etl-assets: bad.zip refused: not a readable ZIP")
