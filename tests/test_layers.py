"""The package's shape: no import cycles, imports that point down the stages, and no module
reaching into another's underscored names.

The import graph is read from the source with ``ast`` (every import counts: at the top,
inside functions, and under ``TYPE_CHECKING``), so a cycle cannot hide in a lazy import.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dllm_notebook"

CORE = {"_errors", "_types", "_events", "_loop", "_lazy", "_config"}
# What each private stage may import besides the core modules (and itself). The same
# rules stand in each subpackage's docstring.
STAGES: dict[str, set[str]] = {
    "_prompts": set(),
    "_reading": {"_prompts"},
    "_running": {"_reading"},
    "_results": {"_reading", "_prompts"},
    "_display": {"_running"},
    "_analysis": {"_reading", "_prompts", "_running", "_results", "_display"},
    "_local": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> Iterator[tuple[str, list[str]]]:
    """``(module imported, names taken from it)`` for every import in module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [n for n in names if f"{target}.{n}" in MODULES]
            for sub in submodules:
                yield f"{target}.{sub}", []
            yield target, [n for n in names if n not in submodules]


@functools.cache
def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        edges[name] = {target for target, _ in imports(name) if target in MODULES} - {name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if stage(n) in STAGES))
def test_stages_import_only_downwards(name: str) -> None:
    own = stage(name)
    assert own is not None
    allowed = CORE | STAGES[own] | {own}
    wrong = sorted(
        target
        for target in graph()[name]
        if target != "dllm_notebook" and stage(target) not in allowed
    )
    assert wrong == [], f"{name} may import only {sorted(allowed)}"


def test_core_modules_import_no_stage() -> None:
    for name in (f"dllm_notebook.{core}" for core in CORE):
        wrong = sorted(t for t in graph()[name] if stage(t) not in CORE)
        assert wrong == [], f"{name} imports {wrong}"


def underscored_imports(paths: list[Path]) -> list[str]:
    """``file: name from module`` for each underscored name taken from another module."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    module = f"{node.module or ''}.{alias.name}".lstrip(".")
                    is_module = any(m.endswith(module) for m in MODULES)
                    if private and not is_module:
                        found.append(f"{path.relative_to(ROOT)}: {alias.name} from {node.module}")
    return found


def test_no_module_takes_another_modules_underscored_names() -> None:
    paths = [*PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    assert underscored_imports(paths) == []


def test_the_library_never_prints() -> None:
    """Output goes through logging, the progress layer or the CLI (click.echo)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_the_metadata_columns_are_named_once_for_both_stages() -> None:
    from dllm_notebook._prompts.templates import METADATA_COLUMNS
    from dllm_notebook._results.columns import LONG_COLUMNS, META_COLUMNS

    assert META_COLUMNS == METADATA_COLUMNS and set(META_COLUMNS) <= set(LONG_COLUMNS)


# The clients of the public API: the `dllm` command and the benchmarks. Besides
# `dllm_notebook` and `dllm_notebook.testing` they may import only these private modules.
CLIENT_ALLOWED: dict[str, dict[str, str]] = {
    "dllm_notebook/cli": {
        "dllm_notebook._loop": "the CLI is a blocking shell: run_sync and wait_within",
        "dllm_notebook._config": "init's port and type tables and its check of the file it writes",
    },
    "bench/bench_evidence.py": {
        "dllm_notebook._reading.evidence": "it measures the quote matcher itself",
        "dllm_notebook._reading.pdf": "papers read exactly as the matcher gets them",
    },
    "bench/bench_garbled.py": {
        "dllm_notebook._reading.language": "it calibrates the page scorer's thresholds",
    },
    "bench/bench_scale.py": {
        "dllm_notebook._running.dispatch": "it drives the Dispatcher itself: a million answers "
        "checked and dropped, not kept in a list as map() returns them",
        "dllm_notebook._running.pool": "a thousand workers with no server behind them",
        "dllm_notebook._running.worker": "their health, set by hand",
        "dllm_notebook._events": "the dispatcher's event hub, as a Cluster makes it",
    },
    "bench/bench_ingest.py": {
        "dllm_notebook._reading.papers": "it tunes PARALLEL_MIN_PDFS and warm_up",
    },
}
CLIENT_FILES = sorted([*(PACKAGE / "cli").glob("*.py"), *(ROOT / "bench").glob("*.py")])


def private_reach(source: str, name: str) -> list[str]:
    """The private modules ``source`` imports and its reads of ``._pool``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 2:  # from .. (cli -> package)
            base = "dllm_notebook" + (f".{node.module}" if node.module else "")
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Attribute) and node.attr == "_pool":
            found.append(f"{name}:{node.lineno} reads ._pool")
        for target in targets:
            module = target if target in MODULES else target.rpartition(".")[0]
            if module in MODULES and any(p.startswith("_") for p in module.split(".")):
                found.append(f"{name}: {module}")
    return sorted(set(found))


def allowed_for(path: Path) -> dict[str, str]:
    relative = path.relative_to(ROOT).as_posix()
    return CLIENT_ALLOWED.get(relative) or CLIENT_ALLOWED.get(relative.rpartition("/")[0], {})


def test_the_checker_sees_a_reach_into_the_pool_and_a_private_import() -> None:
    source = (
        "from dllm_notebook._running.pool import Worker\n"
        "from dllm_notebook import Cluster, testing\n"
        "from dllm_notebook.testing import FakeLab\n"
        "from .._loop import run_sync\n"
        "def f(c: Cluster) -> object:\n    return c._pool.workers\n"
    )
    assert private_reach(source, "x.py") == [
        "x.py: dllm_notebook._loop",
        "x.py: dllm_notebook._running.pool",
        "x.py:6 reads ._pool",
    ]


@pytest.mark.parametrize("path", CLIENT_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_cli_and_bench_use_only_the_public_api(path: Path) -> None:
    allowed = allowed_for(path)
    name = path.relative_to(ROOT).as_posix()
    source = path.read_text(encoding="utf-8")
    wrong = [r for r in private_reach(source, name) if r.rpartition(": ")[2] not in allowed]
    assert wrong == [], (
        "use dllm_notebook's public names (or dllm_notebook.testing); "
        f"allowed here: {sorted(allowed) or 'none'}"
    )
