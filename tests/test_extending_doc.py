"""docs/extending.md's examples stay true to the API: every file it shows compiles, and every
name it imports from the package exists where it imports it from (run in full, the examples
were checked by adding them to a copy of the package and running the tests they name)."""

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCKS = re.findall(r"```python\n(# (?:add to )?(src/unlearnable/[\w/]+\.py)[^\n]*\n.*?)```", DOC.read_text(), re.S)


# Modules the doc itself writes (an example may import another one's).
WRITTEN = {".".join(Path(p).with_suffix("").parts[1:]) for c, p in BLOCKS if "# add to" not in c.splitlines()[0]}


def _package_of(path: str) -> str:
    """src/unlearnable/poisons/stripes.py -> unlearnable.poisons (the package its relative imports start from)."""
    return ".".join(Path(path).parent.parts[1:])


def test_the_doc_shows_an_example_per_concept():
    shown = {p for _, p in BLOCKS}
    for where in ("data/sources.py", "models/", "poisons/", "attacks/", "analyses/", "kinds/", "auditor/steps.py",
                  "imports/"):
        assert any(where in p for p in shown), where


@pytest.mark.parametrize("code,path", BLOCKS, ids=[p for _, p in BLOCKS])
def test_every_example_compiles_and_imports_what_exists(code, path):
    tree = ast.parse(code, filename=path)
    imported = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = _package_of(path).split(".")
            module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            if module in WRITTEN:
                continue
            mod = importlib.import_module(module)
            for alias in node.names:
                submodule = hasattr(mod, "__path__") and importlib.util.find_spec(f"{module}.{alias.name}")
                assert hasattr(mod, alias.name) or submodule, f"{path}: {module} has no {alias.name}"
                imported += 1
    # A file of its own imports its neighbours; an addition to a module uses that module's names.
    if "# add to" not in code.splitlines()[0]:
        assert imported, path
