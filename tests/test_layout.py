"""The package layout (ARCHITECTURE.md): no import circles, layers that import downwards only, small modules,
and every moved module still importable from its old path for one release, with a DeprecationWarning.

The import graph is read from the source (``ast``), so the test needs no heavy import. An edge is every
``import`` / ``from ... import`` the module runs, at its top or inside a function (a lazy import is
still a dependency); imports under ``if TYPE_CHECKING:`` are annotations only and are left out.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("proxy_env", "feedback", "agents")
# a layer may import from the layers after it, never from those before it
LAYERS = ("agents", "feedback", "proxy_env")
MAX_LINES = 400
# old path -> (a name it had, the module that holds the name now)
MOVED = {
    "proxy_env.lm": ("FrozenLM", "proxy_env.engine.lm"),
    "proxy_env.row_cache": ("RowCache", "proxy_env.engine.row_cache"),
    "proxy_env.candidates": ("truncate", "proxy_env.engine.candidates"),
    "proxy_env.steering": ("steered_probs", "proxy_env.engine.steering"),
    "proxy_env.host_reads": ("HostReads", "proxy_env.engine.host_reads"),
    "proxy_env.tiny": ("tiny_lm", "proxy_env.engine.tiny"),
    "proxy_env.vector_env": ("ProxyRLHFVectorEnv", "proxy_env.vector.vector_env"),
    "proxy_env.infos": ("step_info", "proxy_env.vector.infos"),
    "proxy_env.sub_envs": ("set_attr", "proxy_env.vector.sub_envs"),
    "proxy_env.seeding": ("env_seeds", "proxy_env.vector.seeding"),
    "proxy_env.checks": ("check_vector_env", "proxy_env.vector.checks"),
    "proxy_env.shaping": ("PotentialShaping", "proxy_env.rewards.shaping"),
    "proxy_env.sb3": ("SB3VecEnv", "proxy_env.adapters.sb3"),
    "proxy_env.feedback": ("build_preferences", "feedback"),
    "proxy_env.feedback.records": ("PreferencePair", "feedback.records"),
    "proxy_env.feedback.sources": ("RewardFeedback", "feedback.sources"),
    "proxy_env.feedback.pairs": ("build_preferences", "feedback.pairs"),
    "proxy_env.feedback.perplexity": ("filter_by_perplexity", "feedback.perplexity"),
    "proxy_env.feedback.bt": ("train_reward_model", "feedback.bt"),
    "proxy_env.feedback.rm": ("load_reward_model", "proxy_env.rewards.learned"),
    "proxy_env.feedback.judge": ("LLMJudge", "proxy_env.rewards.judge"),
    "proxy_env.feedback.pairwise": ("PairwiseJudgeReward", "proxy_env.rewards.pairwise"),
    "proxy_env.feedback.encoders": ("SentenceEncoder", "proxy_env.rewards.encoders"),
    "agents.checkpoint": ("load_checkpoint", "agents.saving.checkpoint"),
    "agents.proxy_folder": ("load_proxy", "agents.saving.folder"),
    "agents.proxy_format": ("llm_fingerprint", "agents.saving.format"),
    "agents.export": ("export", "agents.saving.export"),
    "agents.model_card": ("render", "agents.saving.model_card"),
    "agents.rllib_backend": ("RLlibConfig", "agents.rllib.backend"),
    "agents.rllib_module": ("MODEL_CONFIG", "agents.rllib.module"),
    "agents.rllib_train": ("to_sb3", "agents.rllib.train"),
    "agents.bench": ("run_bench", "agents.eval.bench"),
    "agents.bench_agents": ("eval_proxy", "agents.eval.runners"),
    "agents.bench_report": ("write_outputs", "agents.eval.report"),
    "agents.kl": ("accept_model", "agents.accept"),
    "agents.metrics": ("distinct_n", "agents.eval.metrics"),
    "agents.compare": ("mean_ci", "agents.eval.compare"),
    "agents.cli_feedback": ("add_subcommands", "agents.cli.feedback"),
    "agents.finetune.cli": ("add_subcommands", "agents.cli.finetune"),
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
    bad = [f"{module} -> {target}" for module, targets in import_graph(ROOT).items() for target in targets
           if LAYERS.index(target.split(".")[0]) < LAYERS.index(module.split(".")[0])]
    assert bad == []


def test_no_module_over_the_size_guideline():
    sizes = {name: len(file.read_text(encoding="utf-8").splitlines()) for name, file in _modules(ROOT).items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize("old", sorted(MOVED), ids=str)
def test_old_paths_warn_and_give_the_same_object(old):
    name, new = MOVED[old]
    if _optional(new) is not None:
        pytest.importorskip(_optional(new), reason=f"{new} needs {_optional(new)}")
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} has moved to {new}\.{name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_finetune_keeps_add_subcommands_for_one_release():
    import agents.cli.finetune
    import agents.finetune

    with pytest.warns(DeprecationWarning, match="agents.cli.finetune.add_subcommands"):
        assert agents.finetune.add_subcommands is agents.cli.finetune.add_subcommands
    with pytest.raises(AttributeError):
        agents.finetune.finetune_everything  # noqa: B018


def _optional(module: str) -> str | None:
    """The optional dependency ``module`` needs at import time, or None."""
    return "ray" if module in ("agents.rllib.module", "agents.rllib_module") else None


def test_new_paths_import_without_deprecation_warnings():
    """Nothing in the packages goes through an old path: every module imported in a fresh interpreter, our warning an error."""
    import importlib.util
    import subprocess
    import sys

    names = [m for m in _modules(ROOT) if m not in MOVED and m != "agents.cli.__main__"
             and (_optional(m) is None or importlib.util.find_spec(_optional(m)) is not None)]
    code = ("import importlib, warnings\n"
            "warnings.filterwarnings('error', message='.*has moved to', category=DeprecationWarning)\n"
            f"for m in {json.dumps(names)}: importlib.import_module(m)\nprint(len({json.dumps(names)}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == len(names) > 60
