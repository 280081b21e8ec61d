"""The layer order, read from the source: infra < theory < simulations, llm < figures.

Every import in every module of a package (lazy imports inside functions included) may only name
its own package or a lower layer. tests/ and benchmarks/ may import anything. One documented
exception: simulations/collapse_rate.py's ``draw_figure`` draws its figure through
figures/fig_collapse_rate.py (the command line's plotting entry point, not the compute path).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYER = {"infra": 0, "theory": 1, "simulations": 2, "llm": 2, "figures": 3}
ALLOWED = {("simulations/collapse_rate.py", "figures.fig_collapse_rate")}


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def violations(package: str, root: Path = REPO) -> list[str]:
    out = []
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in LAYER and top != package and LAYER[top] >= LAYER[package] \
                    and (rel, module) not in ALLOWED:
                out.append(f"{rel} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(LAYER))
def test_imports_point_down(package):
    assert violations(package) == []


def test_the_linter_sees_an_upward_import(tmp_path):
    (tmp_path / "theory").mkdir()
    (tmp_path / "theory" / "bad.py").write_text("def f():\n    from figures.style import save\n")
    assert violations("theory", tmp_path) == ["theory/bad.py imports figures.style"]


def test_fine_tuning_imports_neither_the_unlearning_methods_nor_the_evaluation():
    """llm.train.loop's import closure (lazy imports included: infra/codehash.py's rule, so a fine-tune's
    cache key) holds no unlearning method, reference cache or metric: editing them re-runs no fine-tune."""
    from infra.codehash import module_closure
    closure = module_closure(["llm.train.loop"])
    banned = {m for m in closure if m.startswith(("llm.train.methods", "llm.train.unlearning", "llm.train.refcache",
                                                  "llm.evaluate.metrics", "llm.evaluate.scoring", "llm.evaluate.mia", "llm.eval"))}
    assert banned == set() and "llm.train.methods" in module_closure(["llm.train.unlearning"])
