"""The layering docs/architecture.md describes, checked against the code's own imports and calls (ast, no import of
the modules themselves): no ``Core`` below the composition root, no ``delivery/`` in ``runtime/`` or ``store/``, no
import circle, and job state written only by the services and the scheduler (issue #20)."""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "appliance"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """Imports under ``if TYPE_CHECKING:``: names for mypy, never run."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(n for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The appliance modules an import statement loads (``from pkg import mod`` loads pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's own package
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES:
            yield name


def imports(*, import_time_only: bool) -> dict[str, set[str]]:
    """module -> the appliance modules it imports. ``import_time_only``: only what runs when the module is imported
    (module level, not under TYPE_CHECKING), the imports that can make a circle fail."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_only(tree)
        nodes = tree.body if import_time_only else list(ast.walk(tree))
        graph[module] = {target for node in nodes if isinstance(node, ast.Import | ast.ImportFrom)
                         and node not in skipped for target in _targets(module, path, node)}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_import_reader_sees_known_edges():
    """A guard on the checker itself: an import it failed to read would make every rule below pass vacuously."""
    graph = imports(import_time_only=False)
    assert "appliance.store.jobs" in graph["appliance.runtime.scheduler"]
    assert "appliance.core" in graph["appliance.app"]
    assert "appliance.runtime.executors.zygote" not in imports(import_time_only=True)[
        "appliance.runtime.executors.task_worker"]  # under TYPE_CHECKING only


def test_no_core_import_below_the_composition_root():
    """core.py composes everything; only what starts it (app.py, the CLI) may import it."""
    importers = {m for m, targets in imports(import_time_only=False).items() if "appliance.core" in targets}
    assert {m for m in importers if m != "appliance.app" and not m.startswith("appliance.cli")} == set()


def test_runtime_and_store_never_import_delivery():
    graph = imports(import_time_only=False)
    leaks = {(m, t) for m, targets in graph.items() for t in targets
             if m.startswith(("appliance.runtime", "appliance.store")) and t.startswith("appliance.delivery")}
    assert leaks == set()


def test_no_import_circle():
    assert circles(imports(import_time_only=True)) == []


# Circles closed only by an import inside a function (run on first call, so Python tolerates them). Listed, so a
# new one is a decision, not an accident: the CLI's subcommands read the CLI package's own helpers.
LAZY_CIRCLES = [["appliance.cli", "appliance.cli.models", "appliance.cli.operator"]]


def test_no_new_circle_through_lazy_imports():
    assert circles(imports(import_time_only=False)) == LAZY_CIRCLES


# The store's functions that change a job's or a task's state (status, phase, progress, attempts, deletion, expiry).
STATE_WRITES = {"create_job", "submit_opened", "add_tasks_unless_ended", "clone_job", "update_task", "update_job",
                "end_job", "set_progress", "mark_deleted", "mark_expired"}
RAW_WRITE = re.compile(r"\b(update|insert\s+into|delete\s+from)\s+(jobs|tasks)\b", re.IGNORECASE)
KNOWN_WRITERS: set[tuple[str, str]] = set()  # (the retention sweep's expiry moved from core.py to JobService)


def _writes(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    aliases = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module == "appliance.store" for alias in node.names if alias.name == "jobs"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "appliance.store.jobs":
            yield from (alias.name for alias in node.names if alias.name in STATE_WRITES)
        elif (isinstance(node, ast.Attribute) and node.attr in STATE_WRITES and isinstance(node.value, ast.Name)
              and node.value.id in aliases):
            yield node.attr
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_WRITE.search(node.value):
            yield "SQL: " + RAW_WRITE.search(node.value).group(0)


def test_job_state_is_written_only_by_the_services_and_the_scheduler():
    writers = {(m, write) for m, path in MODULES.items() for write in _writes(path)
               if not m.startswith(("appliance.store", "appliance.services"))
               and m != "appliance.runtime.scheduler"}
    assert writers == KNOWN_WRITERS
