"""Archives carry the parameter sets their flows use, secrets left as placeholders; an import
writes, keeps or replaces each set, and replaces a flow soft or hard. Real ZIPs, two ETL_HOMEs
(``homes``); every refused or failed import is checked to leave the target's files as they were.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from etl_assets.cli import main
from etl_assets.sdk.archive import ArchiveError
from etl_assets_tests.test_sdk.conftest import RULES, RULES_SOURCE, Homes
from etl_assets_tests.test_sdk.test_archive import REGULAR, Entry, entries, tree, vouched, write_zip

SITE = """# the sites the suppliers flow reads from
default: milano
values:
  milano: {folder: /outbound/milano, api_token: TOKEN}  # the milano gateway's token
  roma: {folder: /outbound/roma, api_token: TOKEN}
"""
SET_ENTRY = "parameters/site.yaml"
PLACEHOLDER = "${secret:parameters.site.milano.api_token}"


def parameterised(homes: Homes, token: str, name: str = "suppliers") -> Path:
    """A flow of the source whose folder and API token come from the parameter set ``site``."""
    sets = homes.source.flows_dir / "parameters"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "site.yaml").write_text(SITE.replace("TOKEN", token), encoding="utf-8")
    flow = homes.source.create_flow(name, template="companies")
    text = flow.path.read_text(encoding="utf-8").replace(
        f"folder: /outbound/{name}", "folder: ${site.folder}"
    )
    (flow.path.parent / f"{RULES}.py").write_text(RULES_SOURCE, encoding="utf-8")
    field = f'    api_token:    {{type: Method, source: NAME, method: "{RULES}:tagged", options: {{tag: "${{site.api_token}}"}}}}\n'
    flow.path.write_text(text.replace("  target:\n", field + "  target:\n"), encoding="utf-8")
    return flow.path


def target_set(homes: Homes) -> Path:
    return homes.target_home / "flows" / "parameters" / "site.yaml"


def test_a_flow_carries_its_parameter_set_its_secret_a_placeholder(
    homes: Homes, encrypt_password: Callable[[str], str]
) -> None:
    token = encrypt_password("gateway-s3cret")
    parameterised(homes, token)
    path = homes.source.export_flows(["suppliers"], homes.tmp / "suppliers.zip")

    found = entries(path)
    for blob in [path.read_bytes(), *found.values()]:
        for secret in (token, token.removeprefix("enc:"), "gateway-s3cret"):
            assert secret.encode() not in blob
    exported = found[SET_ENTRY].decode()
    assert exported.startswith("# the sites the suppliers flow reads from\n")  # comments kept
    milano = next(line for line in exported.splitlines() if line.startswith("  milano:"))
    assert milano.startswith(f"  milano: {{folder: /outbound/milano, api_token: '{PLACEHOLDER}'}} ")
    assert milano.endswith("# the milano gateway's token")
    assert (
        "  roma: {folder: /outbound/roma, api_token: '${secret:parameters.site.roma.api_token}'}\n"
        in exported
    )
    assert "${site.api_token}" in found["flows/suppliers/defs.yaml"].decode()  # a reference, no secret
    manifest = json.loads(found["manifest.json"])
    assert manifest["parameter_sets"] == [{"name": "site", "entry": SET_ENTRY, "flows": ["suppliers"]}]
    assert manifest["entries"][SET_ENTRY]["size"] == len(found[SET_ENTRY])
    assert [(p["flow"], p["placeholder"], p["why"]) for p in manifest["placeholders"]] == [
        ("parameters/site.yaml", PLACEHOLDER, "an enc: token"),
        ("parameters/site.yaml", "${secret:parameters.site.roma.api_token}", "an enc: token"),
    ]

    without = homes.target.import_flows(path, include_dependencies=False, dry_run=True)
    assert str(without.parameter_sets[0]).startswith(f"parameter set site: would skip ({target_set(homes)})")
    assert (
        without.outcomes[0].outcome == "failed" and "unknown parameter ${site" in without.outcomes[0].reason
    )
    plan = homes.target.import_flows(path, dry_run=True)
    assert [str(s) for s in plan.parameter_sets] == [
        f"parameter set site: would create ({target_set(homes)})"
    ]
    assert [p.placeholder for p in plan.placeholders][:1] == [PLACEHOLDER]
    assert tree(homes.target_home) == {}

    response = homes.target.import_flows(path)
    assert response.status == "completed" and response.outcomes[0].outcome == "created"
    assert [str(s) for s in response.parameter_sets] == [f"parameter set site: created ({target_set(homes)})"]
    assert target_set(homes).read_bytes() == found[SET_ENTRY]
    assert str(response.placeholders[0]) == (
        f"{PLACEHOLDER}  (parameters/site.yaml milano.api_token: to fill with an enc: token)"
    )
    (imported,) = response.imported_flows(load=True)
    assert imported.source.folder == "/outbound/milano"
    errors = imported.compile().errors
    assert [(p.stage, p.field) for p in errors] == [("placeholder", "map.api_token.options.tag")]
    assert "fill it in parameters/site.yaml with an enc: token" in errors[0].message

    filled = exported
    for placeholder in response.placeholders:  # what the new installation's operator does
        filled = filled.replace(placeholder.placeholder, encrypt_password("the-new-sites-token"))
    target_set(homes).write_text(filled, encoding="utf-8")
    again = homes.target.flows.get("suppliers")
    assert again is not None and again.compile().ok and response.refresh().placeholders == []


def test_an_existing_set_is_left_kept_or_replaced_never_lost(
    homes: Homes, encrypt_password: Callable[[str], str]
) -> None:
    parameterised(homes, encrypt_password("k"))
    archive = homes.source.export_flows(["suppliers"], homes.tmp / "suppliers.zip")
    assert homes.target.import_flows(archive).status == "completed"
    same = homes.target.import_flows(archive, conflict_resolution="rename", import_only=True)
    assert [(s.outcome, s.reason) for s in same.parameter_sets] == [
        ("unchanged", "the installation's holds the same values")
    ]

    ours = SITE.replace("/outbound/milano", "/inbound/milano").replace("TOKEN", encrypt_password("ours"))
    ours += "  napoli: {folder: /outbound/napoli, warn: 3}\n"
    target_set(homes).write_text(ours, encoding="utf-8")
    vendors = homes.target.create_flow("vendors", template="companies")  # uses a value the archive's lacks
    text = vendors.path.read_text().replace("warn_limit: 10", "warn_limit: ${site.warn}")
    vendors.path.write_text(
        text.replace("  target:", "  parameters:\n    value_sets: {site: napoli}\n  target:")
    )
    before = tree(homes.target_home / "flows")
    skipped = homes.target.import_flows(archive)  # conflict_resolution="skip"
    assert [o.outcome for o in [*skipped.outcomes, *skipped.parameter_sets]] == ["skipped", "kept"]
    assert tree(homes.target_home / "flows") == before
    kept = homes.target.import_flows(archive, conflict_resolution="rename", import_only=True)
    assert str(kept.parameter_sets[0]) == (
        f"parameter set site: kept ({target_set(homes)}): the installation's differs from the archive's "
        "and is kept (conflict_resolution='replace' replaces it)"
    )
    renamed = homes.target.flows.get(kept.imported_flows()[0])
    assert renamed is not None and renamed.source.folder == "/inbound/milano"  # the installation's set
    refused = homes.target.import_flows(archive, conflict_resolution="replace", dry_run=True)
    assert str(refused.parameter_sets[0]).startswith("parameter set site: would keep (")
    assert "flow vendors (" in refused.parameter_sets[0].reason
    assert (
        "would not load with the archive's: parameter set site: no value set 'napoli'"
        in refused.parameter_sets[0].reason
    )

    homes.target.delete_flow(vendors)
    before = tree(homes.target_home)
    plan = homes.target.import_flows(archive, conflict_resolution="replace", dry_run=True)
    assert str(plan.parameter_sets[0]).startswith(
        f"parameter set site: would replace ({target_set(homes)}): "
    )
    assert tree(homes.target_home) == before
    replaced = homes.target.import_flows(archive, conflict_resolution="replace")
    history = target_set(homes).parent / "revisions" / "site"
    assert [(s.outcome, s.reason) for s in replaced.parameter_sets] == [
        ("replaced", f"the installation's differed from the archive's; it is kept as {history / '1.yaml'}")
    ]
    assert (history / "1.yaml").read_text() == ours
    assert target_set(homes).read_text() == (history / "2.yaml").read_text() != ours


def test_replace_soft_keeps_the_old_folder_hard_sets_it_aside(homes: Homes) -> None:
    homes.supplier()
    first = homes.source.export_flows(["suppliers"], homes.tmp / "first.zip")
    homes.target.import_flows(first)
    folder = homes.target_home / "flows" / "suppliers"
    (folder / "old_rules.py").write_text("# a module the archive does not carry\n", encoding="utf-8")
    edited = homes.source.flows.get("suppliers")
    assert edited is not None
    edited.warn_limit = 3
    homes.source.update_flow(edited)
    second = homes.source.export_flows(["suppliers"], homes.tmp / "second.zip")
    with pytest.raises(ValueError, match=r"replace_mode 'medium': one of soft, hard"):
        homes.target.import_flows(second, conflict_resolution="replace", replace_mode="medium")
    skipped = homes.target.import_flows(second, replace_mode="hard")  # no effect without replace
    assert skipped.outcomes[0].outcome == "skipped" and not (folder.parent / ".deleted").exists()

    soft = homes.target.import_flows(second, conflict_resolution="replace")
    assert soft.outcomes[0].outcome == "replaced" and (folder / "old_rules.py").is_file()
    flow = homes.target.flows.get("suppliers")
    assert flow is not None and [r.number for r in flow.history()] == [1, 2]

    edited.warn_limit = 4
    homes.source.update_flow(edited)
    third = homes.source.export_flows(["suppliers"], homes.tmp / "third.zip")
    plan = homes.target.import_flows(third, conflict_resolution="replace", replace_mode="hard", dry_run=True)
    assert re.fullmatch(
        rf"suppliers: would replace \(hard: {re.escape(str(folder))} moved to "
        rf"{re.escape(str(folder.parent / '.deleted'))}/suppliers_\d{{8}}T\d{{6}}Z\): .*written fresh",
        str(plan.outcomes[0]),
    )
    assert not (folder.parent / ".deleted").exists()
    soft_declaration = (folder / "defs.yaml").read_bytes()
    hard = homes.target.import_flows(third, conflict_resolution="replace", replace_mode="hard")
    (aside,) = (folder.parent / ".deleted").iterdir()
    assert str(hard.outcomes[0]).startswith(f"suppliers: replaced (hard: {folder} moved to {aside}): ")
    assert sorted(p.name for p in folder.iterdir()) == ["defs.yaml", "revisions"]  # old module gone
    assert (aside / "old_rules.py").is_file() and (aside / "defs.yaml").read_bytes() == soft_declaration
    assert sorted(p.name for p in (aside / "revisions").iterdir()) == ["1.yaml", "2.yaml"]
    flow = homes.target.flows.get("suppliers")
    assert flow is not None and flow.warn_limit == 4 and [r.number for r in flow.history()] == [1]

    # a hard replacement that fails compile brings the old folder back from .deleted/
    edited.links[0].table = "nowhere"
    homes.source.update_flow(edited)
    worse = homes.source.export_flows(["suppliers"], homes.tmp / "worse.zip")
    before = tree(homes.target_home / "flows")
    failed = homes.target.import_flows(worse, conflict_resolution="replace", replace_mode="hard")
    assert failed.outcomes[0].outcome == "failed" and tree(homes.target_home / "flows") == before


def test_a_failed_import_leaves_no_set_behind(homes: Homes, encrypt_password: Callable[[str], str]) -> None:
    declaration = parameterised(homes, encrypt_password("k"), "broken")
    declaration.write_text(declaration.read_text().replace("table: broken, match", "table: nowhere, match"))
    archive = homes.source.export_flows(["broken"], homes.tmp / "broken.zip")
    failed = homes.target.import_flows(archive)
    assert failed.outcomes[0].reason == "compile failed"
    assert [(s.outcome, s.reason) for s in failed.parameter_sets] == [
        ("skipped", "not kept: no flow that uses it was imported; the installation's as before")
    ]
    assert tree(homes.target_home / "flows") == {} and failed.placeholders == []  # no parameters/

    target_set(homes).parent.mkdir(parents=True)
    target_set(homes).write_text(SITE.replace("TOKEN", encrypt_password("ours")), encoding="utf-8")
    before = tree(homes.target_home / "flows")
    replaced = homes.target.import_flows(archive, conflict_resolution="replace")
    assert replaced.parameter_sets[0].outcome == "skipped" and tree(homes.target_home / "flows") == before


# -- malicious parameter sets ------------------------------------------------------------
Craft = Callable[[list[Entry], dict], tuple[list[Entry], dict]]


def _listing(manifest: dict, *names: str) -> dict:
    listed = [{"name": n, "entry": f"parameters/{n}.yaml", "flows": []} for n in names]
    return {**manifest, "parameter_sets": manifest["parameter_sets"] + listed}


def _set_text(items: list[Entry], text: bytes) -> list[Entry]:
    return [(n, text if n == SET_ENTRY else b, m) for n, b, m in items]


VALID = b"default: a\nvalues:\n  a: {x: 1}\n"
SETS: dict[str, tuple[Craft, str]] = {
    "outside its folder": (
        lambda e, m: ([*e, ("parameters/../x.yaml", VALID, REGULAR)], m),
        r"entry 'parameters/../x.yaml': a path outside the archive's root",
    ),
    "a name no set has": (
        lambda e, m: ([*e, ("parameters/Bad-Name.yaml", VALID, REGULAR)], _listing(m, "Bad-Name")),
        r"manifest.json': parameter set 'Bad-Name' is not a set's name",
    ),
    "a file no set name makes": (
        lambda e, m: ([*e, ("parameters/Bad-Name.yaml", VALID, REGULAR)], m),
        r"entry 'parameters/Bad-Name.yaml': a parameter set is parameters/<set>.yaml, <set> lower-case",
    ),
    "in a subfolder": (
        lambda e, m: ([*e, ("parameters/revisions/site/1.yaml", VALID, REGULAR)], m),
        r"entry 'parameters/revisions/site/1.yaml': a parameter set is parameters/<set>.yaml",
    ),
    "not listed": (
        lambda e, m: ([*e, ("parameters/extra.yaml", VALID, REGULAR)], m),
        r"entry 'parameters/extra.yaml': a parameter set the manifest's parameter_sets does not list",
    ),
    "listed, not there": (
        lambda e, m: (e, _listing(m, "extra")),
        r"entry 'parameters/extra.yaml': missing: the manifest lists parameter set extra",
    ),
    "used by no flow": (
        lambda e, m: ([*e, ("parameters/extra.yaml", VALID, REGULAR)], _listing(m, "extra")),
        r"entry 'parameters/extra.yaml': a parameter set no flow of the archive uses",
    ),
    "invalid": (
        lambda e, m: (_set_text(e, b"values:\n  milano: {folder: [1, 2]}\n"), m),
        r"entry 'parameters/site.yaml': not a parameter set \(values.milano.folder.str: Input should be",
    ),
    "a default it lacks": (
        lambda e, m: (_set_text(e, b"default: torino\nvalues:\n  milano: {folder: x}\n"), m),
        r"entry 'parameters/site.yaml': parameter set site: no value set 'torino'",
    ),
    "a secret in clear": (
        lambda e, m: (_set_text(e, b"values:\n  milano: {folder: x, api_token: hunter2}\n"), m),
        r"entry 'parameters/site.yaml': milano.api_token: a secret in clear",
    ),
    "yaml aliases": (
        lambda e, m: (_set_text(e, b"values:\n  milano: &m {folder: x}\n  roma: *m\n"), m),
        r"entry 'parameters/site.yaml': uses YAML aliases",
    ),
}
_GENUINE: dict[str, bytes] = {}


@pytest.mark.parametrize("fault", sorted(SETS))
def test_a_malicious_parameter_set_is_refused_and_nothing_is_written(homes: Homes, fault: str) -> None:
    if not _GENUINE:
        parameterised(homes, "enc:" + "A" * 40)
        _GENUINE.update(entries(homes.source.export_flows(["suppliers"], homes.tmp / "genuine.zip")))
    genuine = dict(_GENUINE)
    manifest = json.loads(genuine.pop("manifest.json"))
    craft, refusal = SETS[fault]
    items, manifest = craft([(n, b, REGULAR) for n, b in genuine.items()], manifest)
    path = write_zip(homes.tmp / "bad.zip", items, vouched(manifest, items))
    for dry_run in (True, False):
        with pytest.raises(ArchiveError, match=refusal) as refused:
            homes.target.import_flows(path, dry_run=dry_run, conflict_resolution="replace")
        assert str(refused.value).startswith("bad.zip refused: ")
    assert tree(homes.target_home) == {}


def test_the_cli_lists_the_sets_and_replaces_hard(
    homes: Homes,
    encrypt_password: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parameterised(homes, encrypt_password("k"))
    archive = homes.source.export_flows(["suppliers"], homes.tmp / "suppliers.zip")
    homes.target.import_flows(archive, import_only=True)
    monkeypatch.setenv("ETL_HOME", str(homes.target_home))
    capsys.readouterr()
    code = main(
        ["flows", "import", str(archive), "--conflict", "replace", "--replace-mode", "hard", "--dry-run"]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].startswith("suppliers: would replace (hard: ")
    assert lines[1:4] == [
        f"parameter set site: unchanged ({target_set(homes)}): the installation's holds the same values",
        "placeholders to fill (compile fails until they are):",
        f"  {PLACEHOLDER}  (parameters/site.yaml milano.api_token: to fill with an enc: token)",
    ]
