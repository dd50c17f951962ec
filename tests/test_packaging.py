"""The installed package: every sub-package of uvav is declared, so a non-editable install has all of it."""

from __future__ import annotations

import pytest

from .conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def test_every_subpackage_is_declared():
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(REPO).parent.parts) for p in (REPO / "uvav").rglob("__init__.py")}
    assert found <= declared, f"add {sorted(found - declared)} to [tool.setuptools] packages in pyproject.toml"
