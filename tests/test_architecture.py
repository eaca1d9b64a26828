"""The house rules of src/unlearnable, checked on its own code (docs/architecture.md).

- no import circle, counting the imports made inside functions;
- an import inside a function only of an optional or heavy library (never of the package itself,
  which would be dodging a circle);
- no private name imported across packages;
- a docstring on every public definition a package exports;
- the layers contract (import-linter, also run by `make test`).
"""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unlearnable

SRC = Path(unlearnable.__file__).resolve().parent
ROOT = SRC.parents[1]
# Imported where they are used, not when the package is: optional extras (ray, kornia, fsspec),
# or libraries that take a second or more to import (scikit-learn, SciPy, matplotlib) where most
# commands never touch them. threadpoolctl comes with scikit-learn.
LAZY = {"ray", "kornia", "fsspec", "sklearn", "scipy", "matplotlib", "threadpoolctl"}


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = (path, ast.parse(path.read_text(), str(path)))
    return out


MODULES = _modules()


def _absolute(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _target(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def _imports() -> list[tuple[str, str, bool, list[str], int]]:
    """(module, imported module, inside a function, names, line) for every import statement."""
    out = []
    for module, (path, tree) in MODULES.items():
        is_pkg = path.name == "__init__.py"

        def visit(node: ast.AST, inner: bool) -> None:
            for child in ast.iter_child_nodes(node):
                f = inner or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, ast.Import):
                    for a in child.names:
                        out.append((module, a.name, inner, [], child.lineno))
                elif isinstance(child, ast.ImportFrom):
                    full = _absolute(child, module, is_pkg)
                    for a in child.names:
                        sub = f"{full}.{a.name}"
                        out.append((module, sub if sub in MODULES else full, inner, [a.name], child.lineno))
                visit(child, f)

        visit(tree, False)
    return out


IMPORTS = _imports()


def test_no_import_circle_even_counting_imports_inside_functions():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, imported, _, _, _ in IMPORTS:
        t = _target(imported) if imported.startswith("unlearnable") else None
        if t is not None and t != module:
            graph[module].add(t)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert len(MODULES) > 100 and not circles, circles


def test_imports_inside_functions_are_only_of_optional_or_heavy_libraries():
    inner = [(m, imp, line) for m, imp, is_inner, _, line in IMPORTS if is_inner]
    bad = [(m, imp, line) for m, imp, line in inner if imp.split(".")[0] not in LAZY]
    assert not bad, bad


def test_no_private_name_is_imported_across_packages():
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    bad = [(m, imp, names[0], line) for m, imp, _, names, line in IMPORTS
           if names and names[0].startswith("_") and not names[0].startswith("__") and imp.startswith("unlearnable")
           and package(_target(imp) or imp) != package(m)]
    assert not bad, bad


PACKAGES = sorted(m for m, (p, _) in MODULES.items() if p.name == "__init__.py")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_definition_a_package_exports_has_a_docstring(name):
    mod = importlib.import_module(name)
    assert (mod.__doc__ or "").strip(), f"{name} has no docstring"
    missing = []
    for attr in getattr(mod, "__all__", []):
        obj = getattr(mod, attr)
        if (callable(obj) or isinstance(obj, type)) and not isinstance(obj, dict):
            doc = (getattr(obj, "__doc__", None) or "").strip()
            # A dataclass without a docstring gets its signature as one: that is not documentation.
            if not doc or (isinstance(obj, type) and doc.startswith(f"{obj.__name__}(")):
                missing.append(attr)
    assert not missing, f"{name} exports definitions without a docstring: {missing}"


def test_the_layers_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install 'unlearnable[test]')")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "KEPT" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


ENTRY_POINTS = sorted(p for p in (SRC / "cli").glob("*.py") if p.name != "common.py")
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", ENTRY_POINTS + SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_entry_point_starts_with_the_exact_command(path):
    """nanoGPT's convention: the top of every command's module, and of every benchmark script,
    says what to type."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    want = "unlearnable" if path.parent.name == "cli" else f"benchmarks/{path.name}"
    examples = [line.strip() for line in doc.splitlines() if line.startswith("    ")]
    assert doc.splitlines() and any(want in e for e in examples), (path, doc[:300])


def test_every_public_top_level_definition_has_a_docstring():
    missing = [f"{m}.{n.name}" for m, (_, tree) in MODULES.items() for n in tree.body
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and not n.name.startswith("_") and not ast.get_docstring(n)]
    assert not missing, missing
