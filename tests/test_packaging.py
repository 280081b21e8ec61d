"""pyproject.toml's explicit package list must name exactly the project's packages: a listed folder
that does not exist breaks `pip install -e .` (the README's first command), and a package left out
is missing from a non-editable install."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = ("infra", "theory", "simulations", "llm", "figures")


def test_package_list_is_every_package_and_nothing_else():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for top in TOP for p in (REPO / top).rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert listed == found, (sorted(listed - found), sorted(found - listed))


def test_package_data_files_exist():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        folder = REPO.joinpath(*package.split("."))
        for pattern in patterns:
            assert list(folder.glob(pattern)), (package, pattern)
