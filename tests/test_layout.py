"""The package layout (ARCHITECTURE.md): no import circles, layers that import downwards only, small modules,
no import of another module's private names, and test files named after the modules they test.

The import graph is read from the source (``ast``), so the test needs no heavy import. An edge is every
``import`` / ``from ... import`` the module runs, at its top or inside a function (a lazy import is
still a dependency); imports under ``if TYPE_CHECKING:`` are annotations only and are left out.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("proxy_env", "feedback", "agents")
# a layer may import from the layers after it, never from those before it
LAYERS = ("agents", "feedback", "proxy_env")
MAX_LINES = 400  # counted after `ruff format`, which `make lint` checks
# modules allowed over MAX_LINES, each with the reason it is clearer whole
LONG_MODULES: dict[str, str] = {
    "proxy_env.engine.lm": "FrozenLM: loading, the chat-template prefill and the batched forward of one model",
    "agents.eval.report": "the bench report: one table, its CSV and its figures share the row formatting",
    "proxy_env.vector.vector_env": "the env: its Gymnasium docstring (a doctest), settings, reset and step, read as one",
}
# test files not named after a module (tests/test_<name>.py for a <package>/.../<name>.py), each with the reason
UNNAMED_TEST_FILES: dict[str, str] = {
    "test_layout": "this file: the layout of the packages as a whole",
    "test_clients": "third-party RL libraries run on the env through their own entry points (the README's table)",
    "test_examples": "the scripts in examples/, outside the packages",
    "test_bench_feedback": "benchmarks/bench_feedback.py, a script outside the packages",
    "test_rephi": "benchmarks/rephi.py, a script outside the packages",
    "test_cli": "agents/cli/app.py, named after what users type: the proxy-rlhf command line",
    "test_decoders": "proxy_env/vector/decoder.py and its subclasses in candidate.py and prefix.py, side by side",
    "test_tasks": "proxy_env/tasks/__init__.py, the task registry: every registered id made and stepped",
    "test_step_tensors": "ProxyRLHFVectorEnv.step_tensors / reset_tensors: the env's torch-native API beside step",
    "test_tilt": "the agents/tilt/ package (collect, data, future, fit, backend): one backend, tested together",
}


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            parts = file.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    walk(ast.Module([sub], []))
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        edges: set[str] = set()
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                edges.add(target if target in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_planted_circle(tmp_path):
    """The checker has power: a lazy import inside a function closes a circle it reports; TYPE_CHECKING does not."""
    pkg = tmp_path / "agents"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from agents.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from agents import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agents.d import X\n")
    (pkg / "d.py").write_text("from . import c\n")
    graph = import_graph(tmp_path)
    assert graph["agents.b"] == {"agents.a"} and graph["agents.d"] == {"agents.c"}
    assert cycles(graph) == [["agents.a", "agents.b"]]


def test_no_import_circles():
    assert cycles(import_graph(ROOT)) == []


def test_layers_import_downwards_only():
    """The env never imports the agents or the feedback pipeline; the feedback pipeline never imports the agents."""
    bad = [
        f"{module} -> {target}"
        for module, targets in import_graph(ROOT).items()
        for target in targets
        if LAYERS.index(target.split(".")[0]) < LAYERS.index(module.split(".")[0])
    ]
    assert bad == []


def test_no_module_over_the_size_guideline():
    sizes = {name: len(file.read_text(encoding="utf-8").splitlines()) for name, file in _modules(ROOT).items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES and name not in LONG_MODULES} == {}
    assert [name for name in LONG_MODULES if sizes.get(name, 0) <= MAX_LINES] == []  # no stale exception


def _optional(module: str) -> str | None:
    """The optional dependency ``module`` needs at import time, or None."""
    return "ray" if module == "agents.rllib.module" else None


def test_every_module_imports_alone():
    """Every module imports in a fresh interpreter (no hidden import order), warning nothing of ours."""
    import importlib.util
    import subprocess
    import sys

    names = [
        m
        for m in _modules(ROOT)
        if m != "agents.cli.__main__" and (_optional(m) is None or importlib.util.find_spec(_optional(m)) is not None)
    ]
    code = (
        "import importlib, warnings\n"
        "for p in ('proxy_env', 'feedback', 'agents'): warnings.filterwarnings('error', module=p + r'\\b')\n"
        f"for m in {json.dumps(names)}: importlib.import_module(m)\nprint(len({json.dumps(names)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == len(names) > 60


def private_imports(root: Path) -> list[str]:
    """``from m import _name`` where ``m`` is another module of ours: a private name used across modules."""
    found = []
    modules = _modules(root)
    for name, file in modules.items():
        for node in _runtime_imports(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                found += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_the_private_import_finder_finds_one(tmp_path):
    pkg = tmp_path / "agents"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _helper(): ...\n")
    (pkg / "b.py").write_text("def f():\n    from agents.a import _helper\n")
    assert private_imports(tmp_path) == ["agents.b: agents.a._helper"]


def test_no_module_imports_another_modules_private_names():
    assert private_imports(ROOT) == []


def unnamed_test_files(root: Path) -> list[str]:
    """The ``tests/test_<name>.py`` files of ``root`` for which no ``<package>/.../<name>.py`` exists."""
    names = {file.stem for package in PACKAGES for file in (root / package).rglob("*.py")}
    return sorted(f.stem for f in (root / "tests").glob("test_*.py") if f.stem.removeprefix("test_") not in names)


def test_every_test_file_is_named_after_a_module(tmp_path):
    """Tests mirror the packages, in one flat folder: the tests of ``agents/saving/checkpoint.py`` are in
    ``tests/test_checkpoint.py``; a file that cannot be named so is listed in UNNAMED_TEST_FILES with the reason."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "agents" / "saving").mkdir(parents=True)
    (tmp_path / "agents" / "saving" / "checkpoint.py").write_text("")
    for name in ("test_checkpoint.py", "test_reliability.py", "conftest.py"):
        (tmp_path / "tests" / name).write_text("")
    assert unnamed_test_files(tmp_path) == ["test_reliability"]  # the check has power
    unnamed = unnamed_test_files(ROOT)
    assert [name for name in unnamed if name not in UNNAMED_TEST_FILES] == []
    assert [name for name in UNNAMED_TEST_FILES if name not in unnamed] == []  # no stale or needless exception
