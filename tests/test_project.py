"""Project-level rules: packaging metadata, and which package may import which."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression():
    # A table ({text = ...}) is deprecated by setuptools and refused by newer build backends.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
