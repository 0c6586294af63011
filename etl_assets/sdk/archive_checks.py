"""An archive of flows read as untrusted input (the rule that keeps secrets out of one is
``archive_secrets``).

A ZIP handed over by someone else may try to write outside the flows folder (``../``,
absolute paths, symbolic links), to exhaust the disk (a size or ratio bomb), to smuggle in
files the manifest does not vouch for, or to make a flow run code that did not travel with it
(a ``Method`` naming any module). ``read_archive`` checks every entry from the ZIP's headers
first, then its bytes against the manifest, then each parameter set (``parameters/<set>.yaml``)
against the parameter set model and each declaration against the flow model, and raises
``ArchiveError`` naming the entry before the caller writes anything.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from etl_assets.model.declarations import DECLARATION, DeclarationError, is_flow_document, read_document
from etl_assets.model.declarations import read_flow as read_declaration
from etl_assets.model.derive import is_template
from etl_assets.model.flow import IDENTIFIER_RULE, FlowModel, is_identifier
from etl_assets.model.functions import split_path
from etl_assets.model.parameters import FOLDER as SETS
from etl_assets.model.parameters import (
    ParameterError,
    ParameterSet,
    read_sets,
    resolved,
    sets_named,
)

FORMAT = "etl_assets.flows"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROOT = "flows"  # flows/<flow>/defs.yaml and flows/<flow>/<module>.py; SETS: parameters/<set>.yaml
PACKAGE = "etl_assets"  # a Method of the package's own travels with the package, not the archive
MAX_TOTAL_BYTES = 50 * 1024 * 1024  # uncompressed, every entry together
MAX_RATIO = 100  # uncompressed / compressed, per entry and overall (text deflates ~5x)
RATIO_FLOOR = 64 * 1024  # below this a high ratio is a short repetitive file, not a bomb
MAX_ENTRIES = 2000
MAX_MANIFEST_BYTES = 1024 * 1024


class ArchiveError(ValueError):
    """An archive refused (or an export that cannot be made): the message names the entry."""


@dataclass(frozen=True)
class ArchivedFlow:
    """One flow of an archive, checked: its declaration's text and model, and its modules."""

    name: str
    entry: str  # flows/<name>/defs.yaml
    text: str
    model: FlowModel
    modules: dict[str, bytes]  # path under the flow's folder (rules.py) -> content
    parameter_sets: frozenset[str] = frozenset()  # the sets its declaration uses


@dataclass(frozen=True)
class ArchivedSet:
    """One parameter set of an archive, checked: its file's text and its model."""

    name: str
    entry: str  # parameters/<name>.yaml
    text: str
    model: ParameterSet


@dataclass(frozen=True)
class Archive:
    source: Path
    manifest: dict[str, Any]
    flows: list[ArchivedFlow]
    parameter_sets: list[ArchivedSet]


# -- Method modules ----------------------------------------------------------------------
def method_modules(model: FlowModel) -> list[tuple[str, str]]:
    """(map field, module) of every Method field and derive Method."""
    found = [(n, f.method.partition(":")[0]) for n, f in model.map.items() if f.type == "Method" and f.method]
    found += [
        (n, split_path(f.derive)[0]) for n, f in model.map.items() if f.derive and not is_template(f.derive)
    ]
    return found


def is_package_module(module: str) -> bool:
    return module == PACKAGE or module.startswith(f"{PACKAGE}.")


def module_path(module: str) -> PurePosixPath | None:
    """``a.b`` -> ``a/b.py``, beside the flow's declaration; None for a name no file can hold."""
    parts = module.split(".")
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return None
    return PurePosixPath(*parts[:-1], f"{parts[-1]}.py")


# -- reading an archive ------------------------------------------------------------------
def _refuse(source: Path, entry: str | None, why: str) -> ArchiveError:
    where = f"entry {entry!r}: " if entry else ""
    return ArchiveError(f"{source.name} refused: {where}{why}; nothing was imported")


def _check_header(source: Path, info: zipfile.ZipInfo) -> None:
    """An entry judged by its header alone: where it would land and what kind of file it is."""
    name = info.filename
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise _refuse(source, name, "an absolute path (entries are relative to the archive's root)")
    if ".." in name.split("/"):
        raise _refuse(source, name, "a path outside the archive's root (..)")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _refuse(source, name, "a symbolic link (an archive holds regular files only)")
    kind = stat.S_IFMT(mode)  # 0: no type recorded (a ZIP made on Windows, or by writestr)
    if info.is_dir() or kind not in (0, stat.S_IFREG) or "" in name.split("/") or "." in name.split("/"):
        raise _refuse(source, name, "not a regular file at a plain path")
    if info.flag_bits & 0x1:
        raise _refuse(source, name, "encrypted")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= RATIO_FLOOR and ratio > MAX_RATIO:
        raise _refuse(
            source, name, f"compressed {ratio:.0f}:1, over the limit of {MAX_RATIO}:1 (a zip bomb?)"
        )


def _entries(source: Path) -> dict[str, bytes]:
    """Every entry's bytes, once each entry's header and the archive's sizes have passed."""
    if not source.is_file():
        raise ArchiveError(f"{source}: no such archive")
    if source.stat().st_size > MAX_TOTAL_BYTES:
        raise _refuse(source, None, f"the file is over {MAX_TOTAL_BYTES} bytes")
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ENTRIES:
                raise _refuse(source, None, f"{len(infos)} entries, over the limit of {MAX_ENTRIES}")
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                twice = next(n for n in names if names.count(n) > 1)
                raise _refuse(source, twice, "present twice")
            for info in infos:
                _check_header(source, info)
            total = sum(i.file_size for i in infos)
            if total > MAX_TOTAL_BYTES:
                raise _refuse(
                    source, None, f"{total} bytes uncompressed, over the limit of {MAX_TOTAL_BYTES}"
                )
            packed = sum(i.compress_size for i in infos)
            if total >= RATIO_FLOOR and total / max(packed, 1) > MAX_RATIO:
                raise _refuse(source, None, f"compressed over {MAX_RATIO}:1 overall (a zip bomb?)")
            data = {}
            for info in infos:
                with archive.open(info) as handle:
                    blob = handle.read(info.file_size + 1)
                if len(blob) != info.file_size:
                    raise _refuse(source, info.filename, "its size differs from its header's")
                data[info.filename] = blob
            return data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise _refuse(source, None, f"not a readable ZIP ({exc})") from None


def _manifest(source: Path, data: dict[str, bytes]) -> dict[str, Any]:
    """The manifest, vouching for every other entry by size and sha256, and nothing else there."""
    raw = data.pop(MANIFEST, None)
    if raw is None:
        raise _refuse(source, MANIFEST, "missing (every archive of flows has one)")
    try:
        manifest = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_MANIFEST_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(source, MANIFEST, f"not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(source, MANIFEST, f"not a manifest of format {FORMAT}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise _refuse(source, MANIFEST, f"format_version {version!r}: this etl_assets reads {FORMAT_VERSION}")
    listed = manifest.get("entries")
    if not isinstance(listed, dict) or not isinstance(manifest.get("flows"), list):
        raise _refuse(source, MANIFEST, "lacks its entries or its flows")
    for name, blob in data.items():
        expected = listed.get(name)
        if not isinstance(expected, dict):
            raise _refuse(source, name, "not in the manifest")
        if expected.get("size") != len(blob):
            raise _refuse(source, name, f"{len(blob)} bytes, the manifest says {expected.get('size')!r}")
        if expected.get("sha256") != hashlib.sha256(blob).hexdigest():
            raise _refuse(source, name, "its sha256 does not match the manifest's (altered?)")
    missing = sorted(set(listed) - set(data))
    if missing:
        raise _refuse(source, missing[0], "in the manifest but not in the archive")
    return manifest


def _flow_names(source: Path, manifest: dict[str, Any], data: dict[str, bytes]) -> list[str]:
    """The manifest's flows, each entry inside exactly one of their folders."""
    names: list[str] = []
    for item in manifest["flows"]:
        name = item.get("name") if isinstance(item, dict) else None
        if not is_identifier(name) or name in names:
            raise _refuse(source, MANIFEST, f"flow name {name!r} is not a flow's name, or is listed twice")
        names.append(name)
    for entry in data:
        parts = entry.split("/")
        if parts[0] != ROOT or len(parts) < 3 or parts[1] not in names:
            raise _refuse(
                source, entry, f"not inside the folder of a flow the manifest lists ({ROOT}/<flow>/)"
            )
        rest = "/".join(parts[2:])
        if rest != DECLARATION and not (rest.endswith(".py") and module_path(rest[:-3].replace("/", "."))):
            raise _refuse(source, entry, f"a flow's folder holds its {DECLARATION} and Python modules only")
    return names


def _no_aliases(source: Path, entry: str, text: str) -> None:
    """YAML anchors and aliases refused: nested, a few lines expand to billions of nodes."""
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise _refuse(source, entry, "uses YAML aliases (*name): write the values out in full")
    except yaml.YAMLError:
        return  # read_document reports it, with its line


def _set_names(source: Path, manifest: dict[str, Any], data: dict[str, bytes]) -> list[str]:
    """The manifest's parameter sets, each ``parameters/<set>.yaml`` one of them."""
    listed = manifest.get("parameter_sets", [])
    names: list[str] = []
    for item in listed if isinstance(listed, list) else [None]:
        name = item.get("name") if isinstance(item, dict) else None
        if not is_identifier(name) or name in names:
            raise _refuse(source, MANIFEST, f"parameter set {name!r} is not a set's name, or is listed twice")
        names.append(name)
    for entry in (e for e in data if e.split("/")[0] == SETS):
        stem = entry[len(SETS) + 1 : -len(".yaml")] if entry.endswith(".yaml") else None
        if not is_identifier(stem):
            raise _refuse(source, entry, f"a parameter set is {SETS}/<set>.yaml, <set> {IDENTIFIER_RULE}")
        if stem not in names:
            raise _refuse(source, entry, "a parameter set the manifest's parameter_sets does not list")
    return names


def _set(source: Path, name: str, data: dict[str, bytes]) -> ArchivedSet:
    """One parameter set, as ``model/parameters.py`` reads it, its secrets not in clear."""
    entry = f"{SETS}/{name}.yaml"
    if entry not in data:
        raise _refuse(source, entry, f"missing: the manifest lists parameter set {name}")
    try:
        text = data[entry].decode("utf-8")
        _no_aliases(source, entry, text)
        model = ParameterSet.model_validate(yaml.safe_load(text) or {})
        resolved({}, {name: model})  # its default is one of its value sets, no secret in clear
    except UnicodeDecodeError:
        raise _refuse(source, entry, "not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise _refuse(source, entry, f"not valid YAML: {line}{getattr(exc, 'problem', exc)}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the set'}: {e['msg']}" for e in exc.errors())
        raise _refuse(source, entry, f"not a parameter set ({problems})") from None
    except ParameterError as exc:
        raise _refuse(source, entry, str(exc).replace(f"{SETS}/{name}.yaml ", "")) from None
    return ArchivedSet(name, entry, text, model)


def run_with(flows_dir: Path, archived: list[ArchivedSet], replace: bool) -> dict[str, ParameterSet]:
    """The parameter sets the archive's flows will run with in ``flows_dir``: the installation's,
    and the archive's for those it lacks (for every one, when ``replace``)."""
    try:
        here = read_sets(flows_dir)
    except ParameterError as exc:
        raise ArchiveError(f"{exc}: fix the installation's parameter set, then import") from None
    return {**here, **{s.name: s.model for s in archived if replace or s.name not in here}}


def _flow(
    source: Path, name: str, data: dict[str, bytes], flows_dir: Path, sets: dict[str, ParameterSet]
) -> ArchivedFlow:
    entry = f"{ROOT}/{name}/{DECLARATION}"
    here = flows_dir / name / DECLARATION  # its parameters resolve with the sets it will run with
    if entry not in data:
        raise _refuse(source, entry, f"missing: the manifest lists flow {name}")
    try:
        text = data[entry].decode("utf-8")
        _no_aliases(source, entry, text)
        document = read_document(Path(entry), text)
        if not is_flow_document(document):
            raise _refuse(
                source, entry, "not a flow declaration (type: etl_assets.orchestration.FlowComponent)"
            )
        model = read_declaration(here, text, sets=sets)
    except UnicodeDecodeError:
        raise _refuse(source, entry, "not UTF-8 text") from None
    except DeclarationError as exc:
        raise ArchiveError(
            f"{source.name} refused: {str(exc).replace(str(here), entry)}; nothing was imported"
        ) from None
    if model.name != name:
        raise _refuse(source, entry, f"declares flow {model.name!r} in the folder of flow {name!r}")
    prefix = f"{ROOT}/{name}/"
    modules = {e[len(prefix) :]: b for e, b in data.items() if e.startswith(prefix) and e.endswith(".py")}
    named = set()
    for field, module in method_modules(model):
        if is_package_module(module):
            continue
        path = module_path(module)
        if path is None or str(path) not in modules:
            raise _refuse(
                source,
                entry,
                f"map.{field}: Method {model.map[field].method!r} names module {module!r}, which is "
                f"neither of the {PACKAGE} package nor one of the archive's modules"
                + (f" (it would be {prefix}{path})" if path else ""),
            )
        named.add(str(path))
    for path, blob in modules.items():
        if path not in named:
            raise _refuse(source, prefix + path, "a module no Method field of the flow names")
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(source, prefix + path, "not UTF-8 text") from None
    used = frozenset(sets_named(document.get("attributes") or {}))
    return ArchivedFlow(name, entry, text, model, modules, used)


def read_archive(source: Path, flows_dir: Path, replace_sets: bool = False) -> Archive:
    """The archive's flows and parameter sets, once every check has passed; ``ArchiveError``
    naming the entry else. Each declaration is validated as it would be read in ``flows_dir``,
    with the sets it will run with there (``run_with``)."""
    data = _entries(source)
    manifest = _manifest(source, data)
    archived = [_set(source, name, data) for name in _set_names(source, manifest, data)]
    flow_entries = {e: b for e, b in data.items() if e.split("/")[0] != SETS}
    names = _flow_names(source, manifest, flow_entries)
    sets = run_with(flows_dir, archived, replace_sets)
    flows = [_flow(source, name, flow_entries, flows_dir, sets) for name in names]
    for unused in (s for s in archived if not any(s.name in f.parameter_sets for f in flows)):
        raise _refuse(source, unused.entry, "a parameter set no flow of the archive uses")
    return Archive(source, manifest, flows, archived)
