"""Imports run downward: models → tasks → scoring → store → evidence → query / evaluate / ingest →
intervene / distributed → serve / api, with the dependency-free modules at the bottom. Every
import is read, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ATLAS = Path(__file__).resolve().parents[2] / "atlas"
LAYERS = [
    {"errors"},
    {"naming", "paths", "progress", "versions", "presets", "histogram"},
    {"models"},
    {"tasks"},
    {"scoring"},
    {"store"},
    {"evidence"},
    {"query", "evaluate", "ingest"},
    {"intervene", "distributed"},
    {"serve", "api"},
]
LAYER = {part: k for k, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str | None:
    """The top-level part of atlas a dotted module name lies in (None: the package itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "atlas" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "atlas":
                found += [(node.lineno, f"atlas.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def test_every_part_of_atlas_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ATLAS.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
             and p.name != "__init__.py"}
    assert parts == set(LAYER)


def test_imports_run_downward():
    wrong = []
    for path in ATLAS.rglob("*.py"):
        if path == ATLAS / "__init__.py":  # the package's lazy `open` (the api) and errors
            continue
        own = path.relative_to(ATLAS).parts[0].removesuffix(".py")
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == own or target not in LAYER:
                continue
            if LAYER[target] >= LAYER[own]:
                wrong.append(f"{path.relative_to(ATLAS.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


# Beyond the order: the store never selects (scoring), the read side never writes, and tasks
# never need a model.
FORBIDDEN = {("store", "scoring"), ("tasks", "models"), ("query", "intervene"),
             ("query", "ingest"), ("intervene", "ingest")}


def test_no_forbidden_edge():
    wrong = []
    for path in ATLAS.rglob("*.py"):
        own = path.relative_to(ATLAS).parts[0].removesuffix(".py")
        wrong += [f"{path.relative_to(ATLAS.parent)}:{line} imports {module}"
                  for line, module in _imports(path) if (own, _part(module)) in FORBIDDEN]
    assert not wrong, "\n".join(wrong)


@pytest.mark.system
def test_reading_tasks_and_the_atlas_loads_no_torch():
    import subprocess
    import sys

    code = ("import sys, atlas.tasks.sni, atlas.query, atlas.api, atlas.intervene.report\n"
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ATLAS.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
