"""tools/relayout.py's reference rewrite on strings: each form it promises, and a second pass changes
nothing (the tool runs once on the merged tree; these cases keep its rules honest until then)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("relayout", REPO / "tools" / "relayout.py")
relayout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(relayout)

CASES = [
    # dotted paths: imports, -m, importlib and monkeypatch strings, a module that became a package
    ("from llm.train import Plan, fit\n", "llm/x.py",
     "from llm.train.loop import DataOrder, fit\n"),
    ('monkeypatch.setattr("llm.train.prepare_run", f)\n', "tests/t.py",
     'monkeypatch.setattr("llm.train.loop.prepare_run", f)\n'),
    ('"eval": ("llm.evaluate", "main", "TOFU"),\n', "llm/__main__.py",
     '"eval": ("llm.evaluate.cli", "main", "TOFU"),\n'),
    ("import llm.pipeline\nllm.pipeline.Stages\n", "tests/t.py",
     "import llm.pipeline.run\nllm.pipeline.run.Stages\n"),
    ('from llm.methods import by_label\nimport_module(f"llm.methods.{name}")\n', "llm/x.py",
     'from llm.train.methods import by_label\nimport_module(f"llm.train.methods.{name}")\n'),
    # from llm import ...: split per package, aliased to the old name where the file name changed
    ("    from llm import distributed, pipeline_data, models\n", "llm/x.py",
     "    from llm.train import distributed\n    from llm.pipeline import subset as pipeline_data\n"
     "    from llm import models\n"),
    ("from llm import train\n", "llm/unlearning.py", "from llm.train import loop as train\n"),
    ("from llm import tofu_results as tr\nx: tr.Run\n", "figures/f.py",
     "from llm.studies import tofu_results as tr\nx: tr.RunLog\n"),
    # file paths in prose, packaged data, a bare name beside an llm/ path, the claims command
    ("see `llm/eval_mia.py` and llm/idk_answers.txt, llm/methods/\n", "docs/a.md",
     "see `llm/evaluate/membership.py` and llm/data/idk_answers.txt, llm/train/methods/\n"),
    ("(llm/eval_summary.py, eval_logs.py)\n", "tests/t.py",
     "(llm/evaluate/summary.py, llm/evaluate/logs.py)\n"),
    ("python -m llm.tofu_claims --from-results R\n", "README.md", "python -m llm claims --from-results R\n"),
    ("the figures and `llm.tofu_claims` refuse\n", "README.md", "the figures and `python -m llm claims` refuse\n"),
    ("class EvalPlan:\n", "llm/scoring.py", "class EvalItems:\n"),
    # untouched: the CLI spelling, other packages, a name that only starts like a module
    ("python -m llm pipeline; simulations.collapse_rate; llm.models.x; llm.trainer\n", "README.md",
     "python -m llm pipeline; simulations.collapse_rate; llm.models.x; llm.trainer\n"),
]


@pytest.mark.parametrize("old, path, new", CASES)
def test_rewrite_and_a_second_pass_changes_nothing(old, path, new):
    moving = set(relayout.MOVES)
    once = relayout.rewrite_text(old, path, moving)
    assert once == new
    assert relayout.rewrite_text(once, path, set()) == once


def test_pyproject_gets_the_subpackages_and_the_data_once():
    text = 'packages = ["infra", "llm", "figures"]\n\n[tool.setuptools.package-data]\nllm = ["idk_answers.txt"]\n'
    once = relayout.rewrite_text(text, "pyproject.toml")
    assert '"llm", "llm.data", "llm.train", "llm.evaluate", "llm.pipeline", "llm.studies", ' \
           '"llm.train.methods", "figures"' in once and '"llm.data" = ["idk_answers.txt"]' in once
    assert relayout.rewrite_text(once, "pyproject.toml") == once


def test_every_destination_is_unique_and_in_a_known_subpackage():
    targets = list(relayout.MOVES.values()) + list(relayout.PACKAGES.values())
    assert len(targets) == len(set(targets))
    assert all("." not in t or t.split(".")[0] in relayout.SUBPACKAGES for t in targets)


def test_a_module_moved_down_finds_the_repository_one_level_further_up():
    assert relayout._deeper("REPO = Path(__file__).resolve().parents[1]\n") == \
        "REPO = Path(__file__).resolve().parents[2]\n"


def test_readme_package_row_is_replaced_once():
    old = "| `llm/` | TOFU data, prompt formatting, models (presets, ...) |\n| `figures/` | x |\n"
    once = relayout.rewrite_text(old, "README.md")
    assert once.startswith("| `llm/` | by concern: `data/`") and once.endswith("| `figures/` | x |\n")
    assert relayout.rewrite_text(once, "README.md") == once
