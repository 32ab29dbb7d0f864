"""Layers in one direction (model <- training, model <- service), no import cycles inside training/,
and serving that imports nothing from the optional extras."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "training", "service", "client")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, anywhere in the file (functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that lies on one (depth-first search)."""
    found, state = [], dict.fromkeys(edges, 0)  # 0 unseen, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state[nxt] == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node)
    return found


def test_no_import_cycles_inside_training() -> None:
    edges = graph()
    training = {
        k: {m for m in v if m.startswith("training")} for k, v in edges.items() if k.startswith("training")
    }
    assert cycles(training) == []


def test_layers_point_one_way() -> None:
    for name, targets in graph().items():
        layer = name.split(".")[0]
        above = {
            "model": ("training", "service", "client"),
            "service": ("training",),
            "training": ("service",),
        }
        wrong = sorted(t for t in targets if t.split(".")[0] in above.get(layer, ()))
        assert not wrong, f"{name} imports {wrong}"


# Modules only the optional extras install: serving must start without them.
EXTRAS = ("pandas", "pyarrow", "matplotlib", "httpx", "tqdm")
BLOCK = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def test_serving_imports_none_of_the_extras() -> None:
    code = BLOCK + "import model, service.app, service.__main__, service.settings; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
