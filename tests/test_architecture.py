"""The code's shape, checked: the store is the only door to the database (no SQL and no
connection outside ``chancy/store/``), and ``chancy/`` has no import cycle (imports inside
functions count; ``if TYPE_CHECKING:`` imports do not)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chancy"
STORE = PACKAGE / "store"

#: A string that is (part of) a SQL statement: a statement keyword in capitals followed by
#: what only SQL puts after it.
SQL_TEXT = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|CREATE\s+(UNIQUE\s+)?(TABLE|INDEX|TYPE|FUNCTION)"
    r"|ALTER\s+TABLE|DROP\s+(TABLE|INDEX)|TRUNCATE\s|\b(UN)?LISTEN\s+[{\x22*\w]+\s*$|NOTIFY\s+\w+\s*,|pg_notify\(|pg_advisory|pg_try_advisory"
    r"|WITH\s+\w+\s+AS\s*\(|\bSET\s+(plan_cache_mode|statement_timeout|lock_timeout|application_name))", re.MULTILINE
)
#: Calls that open a connection or run a statement on one: psycopg's, its pools', and the
#: app's own connection methods (``Chancy.connection()`` and kin).
DATABASE_CALLS = {"execute", "executemany", "cursor", "getconn", "putconn", "notifies", "connect_sync",
                  "connection", "connection_sync", "lease_sync", "async_pool", "claim_pool",
                  "listening_connection_sync"}
DATABASE_CLASSES = {"ConnectionPool", "AsyncConnectionPool", "Connection", "AsyncConnection"}


def _opens_connection(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in DATABASE_CALLS or name in DATABASE_CLASSES:
        return True
    # connect(): psycopg's (psycopg.connect, psycopg.AsyncConnection.connect) or the
    # app's dedicated session (app.connect(), self.app.connect()); not a signal's.
    if name == "connect" and isinstance(func, ast.Attribute):
        receiver = ast.unparse(func.value)
        return receiver.startswith("psycopg") or receiver.split(".")[-1] in {"app", "chancy", "_app"}
    return False


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _outside_store() -> list[Path]:
    return [p for p in _modules() if STORE not in p.parents]


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_outside_store() -> list[str]:
    found = []
    for path in _outside_store():
        tree = ast.parse(path.read_text())
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if SQL_TEXT.search(node.value):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.strip()[:60]!r}")
    return found


def connections_outside_store() -> list[str]:
    found = []
    for path in _outside_store():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] == "psycopg_pool" for n in names):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: imports psycopg_pool")
            if isinstance(node, ast.Call) and _opens_connection(node):
                func = node.func
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: calls {ast.unparse(func)}(…)")
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in _modules()}

    def target(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps: set[str] = set()

        class Visitor(ast.NodeVisitor):
            def visit_If(self, node: ast.If) -> None:
                if "TYPE_CHECKING" in ast.unparse(node.test):
                    for child in node.orelse:
                        self.visit(child)
                    return
                self.generic_visit(node)

            def visit_Import(self, node: ast.Import) -> None:
                deps.update(filter(None, (target(a.name) for a in node.names)))

            def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base += "." + node.module if node.module else ""
                else:
                    base = node.module or ""
                deps.update(filter(None, [target(base)] + [target(f"{base}.{a.name}") for a in node.names]))

        Visitor().visit(ast.parse(path.read_text()))
        # Importing a module runs its packages' __init__ first (but not its own package's
        # from inside: that one is already running).
        for dep in list(deps):
            parts = dep.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in paths and not module.startswith(parent + "."):
                    deps.add(parent)
        deps.discard(module)
        graph[module] = {d for d in deps if d.startswith("chancy")}
    return graph


def import_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_sql_outside_the_store() -> None:
    assert sql_outside_store() == []


def test_no_connection_outside_the_store() -> None:
    assert connections_outside_store() == []


def test_no_import_cycle() -> None:
    assert import_cycles() == []


@pytest.mark.parametrize("text", ["SELECT id FROM x", "INSERT INTO {jobs} (a)", "WITH t AS (SELECT 1)",
                                  "SELECT pg_notify(%s, %s)", "UPDATE {jobs} SET state = 'x'"])
def test_the_sql_detector_sees_statements(text: str) -> None:
    assert SQL_TEXT.search(text)


@pytest.mark.parametrize("text", ["Select a queue", "Update the settings", "select", "insert the job"])
def test_the_sql_detector_ignores_prose(text: str) -> None:
    assert not SQL_TEXT.search(text)
