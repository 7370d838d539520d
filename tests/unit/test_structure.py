"""The package structure: the ruleset language does no I/O, and no two modules import each other in a circle.

Both read the source (the import statements in each module's syntax tree), so they hold for code paths no
other test runs. An import counts when it runs on import: at module level, in a class body, under a
top-level `if`/`try`/`with`, but not inside a function and not under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANGUAGE = "service.rules.language"

# What the language must not import: drivers, servers, the file system, other processes, and every part of
# the service that holds or reaches them (the rest of service.rules included).
IO_MODULES = (
    "aiosqlite",
    "asyncio",
    "asyncpg",
    "hiredis",
    "httpx",
    "litestar",
    "multiprocessing",
    "os",
    "pathlib",
    "psycopg",
    "redis",
    "select",
    "shutil",
    "socket",
    "sqlalchemy",
    "sqlite3",
    "subprocess",
    "tempfile",
    "urllib",
    "uvicorn",
    "service.api",
    "service.app",
    "service.cli",
    "service.console",
    "service.db",
    "service.decisions",
    "service.masterdata",
    "service.rules.cli",
    "service.rules.lifecycle",
    "service.rules.registry",
    "service.rules.repository",
    "service.rules.trial",
    "service.security",
    "service.services",
    "service.settings",
    "service.stock",
    "service.workflow",
    "simulators",
)


def module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" not in path.relative_to(root).parts:
                found[module_name(path, root)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _type_checking(node.test):
                yield from runtime_imports(node.body)
            yield from runtime_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from runtime_imports(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from runtime_imports(node.body)


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import of `module` reaches: `from a.b import c` names both a.b and a.b.c."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            anchor = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{anchor}.{base}" if base else anchor
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules among `found` it imports on import (a name resolved to its longest known prefix)."""

    def resolve(name: str) -> str | None:
        while name and name not in found:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        targets = {resolve(name) for name in imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def forbidden(name: str) -> bool:
    return any(name == io or name.startswith(io + ".") for io in IO_MODULES)


def test_the_ruleset_language_imports_nothing_that_does_io() -> None:
    found = modules(ROOT, ("service",))
    language = {m: p for m, p in found.items() if m == LANGUAGE or m.startswith(LANGUAGE + ".")}
    assert len(language) >= 10, sorted(language)
    offenders = {
        module: sorted(name for name in imported_names(module, path) if forbidden(name))
        for module, path in language.items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}
    # and inside the service it reaches nothing but itself
    outside = {
        module: sorted(
            n for n in imported_names(module, path) if n.startswith("service.") and not n.startswith(LANGUAGE)
        )
        for module, path in language.items()
    }
    assert {m: names for m, names in outside.items() if names} == {}


def test_no_rules_module_reaches_for_the_app_services() -> None:
    found = modules(ROOT, ("service",))
    rules = {m: p for m, p in found.items() if m.startswith("service.rules.")}
    assert "service.rules.registry" in rules
    reaching = sorted(m for m, p in rules.items() if "service.services" in imported_names(m, p))
    assert reaching == []


def test_no_import_circles_in_service_and_simulators() -> None:
    graph = import_graph(modules(ROOT, ("service", "simulators")))
    assert len(graph) > 100
    assert circles(graph) == []


def test_the_checks_find_a_circle_an_io_import_and_skip_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\nimport sqlalchemy\n")
    (package / "b.py").write_text("if True:\n    from pkg.c import x\n")
    (package / "c.py").write_text("from . import a\n")
    (package / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n"
        "def later():\n    from pkg import e\n"
    )
    (package / "e.py").write_text("import pkg.d\n")
    found = modules(tmp_path, ("pkg",))
    graph = import_graph(found)
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert forbidden("sqlalchemy.ext") and not forbidden("sqlalchemyish")
    assert any(forbidden(n) for n in imported_names("pkg.a", found["pkg.a"]))
