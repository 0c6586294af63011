"""An archive of flows read as untrusted input, and the rule that keeps secrets out of one.

A ZIP handed over by someone else may try to write outside the flows folder (``../``,
absolute paths, symbolic links), to exhaust the disk (a size or ratio bomb), to smuggle in
files the manifest does not vouch for, or to make a flow run code that did not travel with it
(a ``Method`` naming any module). ``read_archive`` checks every entry from the ZIP's headers
first, then its bytes against the manifest, then each declaration against the flow model,
and raises ``ArchiveError`` naming the entry before the caller writes anything.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from etl_assets.model.declarations import DECLARATION, DeclarationError, is_flow_document, read_document
from etl_assets.model.declarations import read_flow as read_declaration
from etl_assets.model.flow import FlowModel, is_identifier
from etl_assets.sdk.compiling import PLACEHOLDER

FORMAT = "etl_assets.flows"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROOT = "flows"  # flows/<flow>/defs.yaml and flows/<flow>/<module>.py
PACKAGE = "etl_assets"  # a Method of the package's own travels with the package, not the archive
MAX_TOTAL_BYTES = 50 * 1024 * 1024  # uncompressed, every entry together
MAX_RATIO = 100  # uncompressed / compressed, per entry and overall (text deflates ~5x)
RATIO_FLOOR = 64 * 1024  # below this a high ratio is a short repetitive file, not a bomb
MAX_ENTRIES = 2000
MAX_MANIFEST_BYTES = 1024 * 1024
# A key whose plain value is taken for a secret; a field named so has its default taken too.
SECRET_KEY = re.compile(r"passw|passphrase|pwd|secret|token|api_?key|private_?key|credential", re.IGNORECASE)
ENC_TOKEN = re.compile(r"enc:[A-Za-z0-9_\-]{16,}")
SECRET_PREFIXES = ("enc:", "plain:")
UNFILLED = "a placeholder not filled yet"


class ArchiveError(ValueError):
    """An archive refused (or an export that cannot be made): the message names the entry."""


@dataclass(frozen=True)
class Placeholder:
    """A secret an export left out: where it was, and the text standing in for it."""

    flow: str
    path: str  # dotted, under the declaration's attributes: map.api_key.default
    placeholder: str  # ${secret:<flow>.<path>}
    why: str

    def __str__(self) -> str:
        return f"{self.placeholder}  ({self.flow} {self.path}: {self.why})"

    def as_dict(self) -> dict[str, str]:
        return {"flow": self.flow, "path": self.path, "placeholder": self.placeholder, "why": self.why}


@dataclass(frozen=True)
class ArchivedFlow:
    """One flow of an archive, checked: its declaration's text and model, and its modules."""

    name: str
    entry: str  # flows/<name>/defs.yaml
    text: str
    model: FlowModel
    modules: dict[str, bytes]  # path under the flow's folder (rules.py) -> content


@dataclass(frozen=True)
class Archive:
    source: Path
    manifest: dict[str, Any]
    flows: list[ArchivedFlow]


# -- secrets -----------------------------------------------------------------------------
def _secret(key: object, parent: object, value: object) -> str | None:
    """Why a scalar is taken for a secret; None when it is not one."""
    if not isinstance(value, str) or not value or PLACEHOLDER.fullmatch(value):
        return None
    if value.startswith(SECRET_PREFIXES) or ENC_TOKEN.search(value):
        return "an enc: token"
    if isinstance(key, str) and SECRET_KEY.search(key):
        return "a plain value under a key named like a secret"
    if key == "default" and isinstance(parent, str) and SECRET_KEY.search(parent):
        return "the plain default of a field named like a secret"
    return None


def _scalars(
    node: Any, path: tuple[Any, ...] = (), parent: object = None
) -> Iterator[tuple[Any, tuple, Any]]:
    """(container, path, parent key) of every scalar in a document, for reading or replacing."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, dict | list):
            yield from _scalars(value, (*path, key), key)
        else:
            yield node, (*path, key), parent


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(map(str, path[1:] if path[:1] == ("attributes",) else path))


def redact(document: Any, flow: str) -> list[Placeholder]:
    """Every secret of a declaration replaced, in place, by a named placeholder; the
    placeholders (those left by an earlier export as well) listed."""
    found = []
    for container, path, parent in _scalars(document):
        value, dotted = container[path[-1]], _dotted(path)
        why = _secret(path[-1], parent, value)
        if why:
            container[path[-1]] = f"${{secret:{flow}.{dotted}}}"
            found.append(Placeholder(flow, dotted, container[path[-1]], why))
        elif isinstance(value, str) and PLACEHOLDER.search(value):
            found.append(Placeholder(flow, dotted, value, UNFILLED))
    return found


def placeholders_in(document: Any, flow: str) -> list[Placeholder]:
    """The placeholders still standing in a declaration: what the installation must fill."""
    return [
        Placeholder(flow, _dotted(path), match.group(0), "to fill with an enc: token")
        for container, path, _ in _scalars(document)
        if isinstance(container[path[-1]], str)
        for match in PLACEHOLDER.finditer(container[path[-1]])
    ]


# -- Method modules ----------------------------------------------------------------------
def method_modules(model: FlowModel) -> list[tuple[str, str]]:
    """(map field, module) of every Method field."""
    return [(n, f.method.partition(":")[0]) for n, f in model.map.items() if f.type == "Method" and f.method]


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
            raise _refuse(source, entry, "uses YAML aliases (*name): write the declaration out")
    except yaml.YAMLError:
        return  # read_document reports it, with its line


def _flow(source: Path, name: str, data: dict[str, bytes], flows_dir: Path) -> ArchivedFlow:
    entry = f"{ROOT}/{name}/{DECLARATION}"
    here = flows_dir / name / DECLARATION  # its parameters resolve with the sets it will run with
    if entry not in data:
        raise _refuse(source, entry, f"missing: the manifest lists flow {name}")
    try:
        text = data[entry].decode("utf-8")
        _no_aliases(source, entry, text)
        if not is_flow_document(read_document(Path(entry), text)):
            raise _refuse(
                source, entry, "not a flow declaration (type: etl_assets.orchestration.FlowComponent)"
            )
        model = read_declaration(here, text)
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
    return ArchivedFlow(name, entry, text, model, modules)


def read_archive(source: Path, flows_dir: Path) -> Archive:
    """The archive's flows, once every check has passed; ``ArchiveError`` naming the entry else.
    Each declaration is validated as it would be read in ``flows_dir`` (its parameter sets)."""
    data = _entries(source)
    manifest = _manifest(source, data)
    names = _flow_names(source, manifest, data)
    return Archive(source, manifest, [_flow(source, name, data, flows_dir) for name in names])
