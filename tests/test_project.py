"""Project-level rules: packaging metadata, and which package may import which."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression():
    # A table ({text = ...}) is deprecated by setuptools and refused by newer build backends.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"


# package -> top-level modules it must never import (anywhere in it, including imports inside functions)
FORBIDDEN_IMPORTS = {
    "service": {"torch", "torchvision", "torchaudio", "training", "model", "benchmarks"},
    "model": {"service", "training", "benchmarks"},
    "fnac": {"torch", "torchvision", "torchaudio", "training", "model", "benchmarks"},
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a source file imports."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_packages_keep_their_import_boundaries():
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package, forbidden in FORBIDDEN_IMPORTS.items()
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imported_modules(path) & forbidden)
    ]
    assert violations == []


def test_only_benchmarks_and_tests_import_benchmarks():
    # The wheel does not install benchmarks/: code that ships must not need it.
    shipped = [d for d in ROOT.iterdir() if d.is_dir() and d.name not in {"benchmarks", "tests"}]
    importers = [
        str(path.relative_to(ROOT))
        for folder in shipped
        if not folder.name.startswith(".")
        for path in sorted(folder.rglob("*.py"))
        if "benchmarks" in imported_modules(path)
    ]
    assert importers == []


def test_the_boundary_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from torch import nn\n    import training.cli\n")
    assert imported_modules(source) == {"torch", "training"}
