"""The house keeps its shape: imports run one way, the engine knows no Dagster, only the
entry points read the settings, and modules stay small.

``definitions``/``cli`` -> ``sdk`` (flows as data) -> ``orchestration`` (the Dagster layer) ->
``engine`` -> ``resources`` -> ``settings``, with ``model`` (the declarations) below the engine
beside ``resources``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "etl_assets"
MAX_LINES = 400

# what each part of the package may import of the package (itself included)
ALLOWED = {
    "settings": {"settings"},
    "resources": {"resources", "settings"},
    "model": {"model", "settings"},
    "engine": {"engine", "model", "resources", "settings"},
    "orchestration": {"orchestration", "engine", "model", "resources", "settings"},
    # flows managed as data: over the declarations, compiling them through every layer
    "sdk": {"sdk", "orchestration", "engine", "model", "resources", "settings"},
    "defs": {"model", "engine"},  # a flow's Method module: Polars expressions, maybe a column name
    "samples": {"samples"},
}
ENTRY_POINTS = {"definitions", "cli", "__init__"}  # may import any part
NO_DAGSTER = {"settings", "model", "engine"}
READS_SETTINGS = "etl_assets.settings.runtime"  # current_settings(): the entry points only


def modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(package.rglob("*.py"))


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(name: str) -> str:
    """``etl_assets.engine.load.upsert`` -> ``engine``; the package's own ``__init__`` too."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "etl_assets":  # from etl_assets import engine
                found += [(node.lineno, f"etl_assets.{alias.name}") for alias in node.names]
    return found


def violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in modules(package):
        name = module_name(path, package)
        part = part_of(name)
        for line, imported in imports(path):
            top = imported.split(".")[0]
            where = f"{name} (line {line}) imports {imported}"
            if top in ("dagster", "dagster_shared") or top.startswith("dagster_"):
                if part in NO_DAGSTER:
                    found.append(f"{where}: the {part} layer knows no Dagster")
                continue
            if top != "etl_assets" or imported == "etl_assets":
                continue
            if imported == READS_SETTINGS and part not in ENTRY_POINTS:
                found.append(f"{where}: only definitions.py and cli.py read the settings; hand them in")
            if part in ENTRY_POINTS:
                continue
            target = part_of(imported)
            if target not in ALLOWED[part]:
                found.append(f"{where}: {part} may import only {sorted(ALLOWED[part])}, not {target}")
    return found


def test_every_part_of_the_package_is_placed() -> None:
    unplaced = {part_of(module_name(p)) for p in modules()} - set(ALLOWED) - ENTRY_POINTS
    assert not unplaced, f"add {sorted(unplaced)} to ALLOWED with what it may import"


def test_imports_run_one_way() -> None:
    assert violations() == []


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: an engine module importing dagster or the Dagster layer is named,
    and so is a component that reads the settings itself."""
    package = tmp_path / "etl_assets"
    (package / "engine").mkdir(parents=True)
    (package / "orchestration").mkdir()
    (package / "engine" / "bad.py").write_text(
        "import dagster\nfrom etl_assets.orchestration.factory import FlowAssets\n"
    )
    (package / "orchestration" / "fetches.py").write_text(
        "from etl_assets.settings.runtime import current_settings\n"
    )
    assert violations(package) == [
        "etl_assets.engine.bad (line 1) imports dagster: the engine layer knows no Dagster",
        "etl_assets.engine.bad (line 2) imports etl_assets.orchestration.factory: engine may import only "
        "['engine', 'model', 'resources', 'settings'], not orchestration",
        "etl_assets.orchestration.fetches (line 1) imports etl_assets.settings.runtime: only "
        "definitions.py and cli.py read the settings; hand them in",
    ]


def test_no_import_circle() -> None:
    """No module reaches itself through the package's imports (the settings had one)."""
    graph = {module_name(p): {i for _, i in imports(p) if i.startswith("etl_assets.")} for p in modules()}
    known = set(graph)

    def owner(imported: str) -> str | None:  # ``etl_assets.engine.steps.FlowSteps`` -> the module
        while imported and imported not in known:
            imported = imported.rpartition(".")[0]
        return imported or None

    edges = {m: {o for i in targets if (o := owner(i)) and o != m} for m, targets in graph.items()}
    packages = {m for m in known if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    circles = []
    for start in sorted(known - packages):  # a package's __init__ re-exporting its modules is no circle
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen and nxt not in packages:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert circles == []


def test_modules_stay_small() -> None:
    long = {
        module_name(p): n
        for p in modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by job (over {MAX_LINES} lines): {long}"
