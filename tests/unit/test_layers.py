"""Data flows down only: each part of the package imports only the parts below it
(CONTRIBUTING.md has the picture)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "panoptes"

# The parts of the package, bottom first, and what each may import besides the foundation.
FOUNDATION = {
    *("__init__", "errors", "status", "config", "models", "db", "shapes", "metrics"),
    "notify_settings",
}
ALLOWED: dict[str, set[str]] = {
    "migrations": set(),
    "ingest.facts": set(),
    "ingest.wire": {"ingest.facts"},
    "ingest.machine": {"ingest.wire", "ingest.facts"},
    "ingest.runs": {"ingest.wire", "ingest.machine"},
    "ingest": {"ingest.wire", "ingest.machine", "ingest.runs"},
    "store": set(),  # the write side never imports the read side, nor the machine
    "queries": set(),
    "eta": set(),  # the read side too: the estimate of a running workflow's time left
    "hub": set(),
    "notify": set(),  # notifications: reads the event log, writes its own tables
    "service": {
        "ingest",
        "ingest.wire",
        "ingest.machine",
        "ingest.runs",
        "store",
        "queries",
        "hub",
        "migrations",
        "notify",
    },
    "routes": {"ingest.wire", "queries", "eta", "hub", "service"},  # changes go through the service
    "serving": set(),
    "app": {"routes", "service", "serving"},
    "client": set(),  # the terminal client talks to a server over HTTP, never in-process
    "cli": {"app", "serving", "service", "migrations", "client"},
    "__main__": {"cli"},
}


def _part(module: str) -> str:
    """The part a dotted module name (below panoptes) belongs to."""
    first = module.split(".")[0]
    if first == "ingest" and module.count(".") >= 1:
        return ".".join(module.split(".")[:2])
    return first


def _module_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _member(base: list[str], name: str) -> str:
    """`from <base> import name`: the module name, or the package base if it is not one."""
    folder = PACKAGE.joinpath(*base)
    if (folder / f"{name}.py").exists() or (folder / name).is_dir():
        return ".".join([*base, name])
    return ".".join(base) or "__init__"


def _imports(path: Path) -> set[str]:
    """The panoptes modules a file imports, as dotted names below panoptes."""
    module = _module_of(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
            elif node.module and node.module.split(".")[0] == "panoptes":
                base = []
            else:
                continue
            module_path = [*base, *(node.module.split(".") if node.module else [])]
            if not node.level:
                module_path = module_path[1:]  # panoptes.x.y -> x.y
            found.update(_member(module_path, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("panoptes.")
                for a in node.names
                if a.name.startswith("panoptes.")
            )
    return found


def test_every_part_imports_only_what_lies_below_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_of(path)
        part = _part(module)
        assert part in FOUNDATION or part in ALLOWED, f"{module}: a part this test does not know"
        may = FOUNDATION | ALLOWED.get(part, set()) | {part}
        for imported in _imports(path):
            target = _part(imported)
            if target not in may and not (part in FOUNDATION and target in FOUNDATION):
                wrong.append(f"{module} imports {imported}")
            if part in FOUNDATION and target not in FOUNDATION:
                wrong.append(f"{module} (foundation) imports {imported}")
    assert wrong == []


def test_no_module_is_longer_than_about_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 420
    }
    assert long == {}
