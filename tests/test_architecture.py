"""The house's rules (docs/architecture.md), checked on the source: the layers import only downwards,
no module imports itself through others, the data layer knows nothing of the model, files stay
readable in one sitting, and the tests mirror the package.

Imports are read from the syntax tree, every one of them (a module's top and the lazy ones inside
functions alike), so a rule holds for every path through the code, not only for what one run loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("causal_vqvae", "datamodules")
MAX_LINES = 500

# Each layer of causal_vqvae, lowest first, and the layers (of the package, and outside it) it may
# import. Every module belongs to exactly one layer: a subpackage is a layer, a top-level module is
# named by itself.
LAYERS: dict[str, set[str]] = {
    "nn": set(),
    "validation": set(),
    "config": {"nn", "validation"},
    "card": {"config", "validation"},
    "familiarity": set(),
    "files": set(),
    "locate": set(),
    "pretrained": {"config", "card", "files", "validation"},
    "model": {"nn", "config", "pretrained", "card", "validation"},
    "images": {"files", "familiarity"},
    "actions": {"nn", "config", "pretrained", "model", "card", "validation"},
    "traversal": {"nn", "config", "pretrained", "model", "actions", "card", "validation"},
    "api": {"nn", "config", "files", "locate", "pretrained", "model", "images", "actions", "traversal", "familiarity",
            "card", "validation"},
    "eval": {"nn", "actions", "traversal", "config", "files", "pretrained", "model", "images", "api", "datamodules", "familiarity", "card", "validation"},
    "training": {"nn", "actions", "traversal", "config", "files", "pretrained", "model", "images", "api", "eval", "datamodules", "familiarity", "card", "validation"},
    "ui": {"nn", "actions", "traversal", "config", "files", "locate", "pretrained", "model", "images", "api", "datamodules", "familiarity", "card", "validation"},
    "cli": {"nn", "actions", "traversal", "config", "files", "locate", "pretrained", "model", "images", "api", "eval", "training", "ui", "datamodules", "familiarity", "card", "validation"},
    "__init__": {"nn", "actions", "traversal", "config", "files", "pretrained", "model", "images", "api", "familiarity", "card", "validation"},
    "__main__": {"cli"},
}
# Third-party packages a layer may not import, whatever the layers above allow.
FORBIDDEN_THIRD_PARTY = {
    layer: {"pytorch_lightning", "lightning", "lightning_fabric", "datasets"}
    for layer in ("nn", "validation", "config", "card", "familiarity", "files", "locate", "pretrained", "model", "images",
                  "actions", "traversal", "api", "__init__")
}


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from . import api" names a module, "from .model import CausalVQVAE" a name in one:
            # either way the longest prefix that is a module is what is imported (see _graph).
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (names that are not modules are dropped)."""
    modules = {_module_name(p): p for p in _sources(*PACKAGES)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # the longest prefix that is a project module: "causal_vqvae.model.CausalVQVAE" -> the module
            parts = imported.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in modules:
                    if candidate != name:
                        targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "datamodules":
        return "datamodules"
    return "__init__" if len(parts) == 1 else parts[1]


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_imports_only_the_layers_below_it():
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        for target in targets:
            target_layer = _layer(target)
            if target_layer == layer:
                continue
            allowed = set() if layer == "datamodules" else LAYERS[layer]
            if target_layer not in allowed:
                wrong.append(f"{module} ({layer}) imports {target} ({target_layer})")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_module_of_the_package_belongs_to_a_declared_layer():
    unknown = sorted({_layer(m) for m in _graph() if m.startswith("causal_vqvae")} - set(LAYERS))
    assert not unknown, f"modules outside the layers of docs/architecture.md: {unknown}; add the layer there and here"


def test_the_networks_and_the_api_import_neither_lightning_nor_hugging_face_datasets():
    wrong = []
    for path in _sources("causal_vqvae"):
        layer = _layer(_module_name(path))
        for imported in _imports(path):
            if imported.split(".")[0] in FORBIDDEN_THIRD_PARTY.get(layer, ()):
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_importing_the_package_and_editing_loads_no_lightning_or_datamodules():
    code = (
        "import sys, causal_vqvae, causal_vqvae.api, causal_vqvae.pretrained, causal_vqvae.nn, causal_vqvae.images; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'datamodules', 'datasets')); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("folder", ["causal_vqvae", "datamodules", "benchmarks", "experiments", "scripts"])
def test_no_source_file_is_over_500_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in _sources(folder) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern (at most {MAX_LINES} lines): {long}"


def test_train_py_is_a_thin_entry():
    lines = (ROOT / "train.py").read_text().splitlines()
    assert len(lines) < 60
    assert "causal_vqvae.cli.train" in "\n".join(lines)


def test_the_tests_mirror_the_package():
    """Each subpackage of causal_vqvae has its folder of tests, and the data layer has tests/data."""
    subpackages = {p.parent.name for p in (ROOT / "causal_vqvae").glob("*/__init__.py")}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert subpackages <= folders, f"no tests/<name> for {sorted(subpackages - folders)}"
    assert "data" in folders
    loose = sorted(p.name for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name)
    assert not loose, f"tests at the top of tests/ belong in the folder of what they test: {loose}"
