"""Caches are keyed by the code that produced them (infra/codehash.py, infra/cache.py, infra/stages.py).

An edit of a producing function (or of a module it imports) makes the cache miss; an edit
elsewhere (a function beside it that it does not use, a module it does not import) still hits.
"""
from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest

from infra import codehash
from infra.cache import cached
from infra.stages import Stages

PKG = "toy_producer"


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A two-module package on disk, importable, counted as project code."""
    root = tmp_path / "src"
    (root / PKG).mkdir(parents=True)
    files = {
        "__init__.py": "",
        "helper.py": "SCALE = 2.0\n\ndef grad(x):\n    return SCALE * x\n",
        "unrelated.py": "def other():\n    return 1\n",
        "produce.py": textwrap.dedent("""\
            import numpy as np

            from toy_producer.helper import grad

            OFFSET = 1.0


            def compute(x):
                return {"y": grad(np.asarray(x)) + OFFSET}


            def beside():
                return "not used by compute"
            """),
    }
    for name, text in files.items():
        (root / PKG / name).write_text(text)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(codehash, "PROJECT_PACKAGES", codehash.PROJECT_PACKAGES + (PKG,))
    codehash._origin.cache_clear()  # an earlier test's copy of the package lived elsewhere

    def edit(name, old, new):
        path = root / PKG / name
        path.write_text(path.read_text().replace(old, new))
        _bump_mtime(path)
        for mod in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
            del sys.modules[mod]  # a fresh process would import the edited file
        importlib.invalidate_caches()
        codehash._origin.cache_clear()

    yield edit
    for mod in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
        del sys.modules[mod]


def _bump_mtime(path):
    import os
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _run(tmp_path, calls):
    produce = importlib.import_module(f"{PKG}.produce")

    def compute():
        calls.append(1)
        return produce.compute([1.0, 2.0])

    return cached("toy", {"x": [1.0, 2.0]}, compute, root=tmp_path / "cache", code=(produce.compute,))


def _hash():
    produce = importlib.import_module(f"{PKG}.produce")
    return codehash.code_hash(produce.compute)


@pytest.mark.parametrize("name, old, new, misses", [
    ("produce.py", "+ OFFSET", "- OFFSET", True),                  # the producing function
    ("produce.py", "OFFSET = 1.0", "OFFSET = 3.0", True),          # a constant it reads
    ("helper.py", "SCALE * x", "SCALE * x * x", True),             # a function it imports
    ("produce.py", '"not used by compute"', '"edited"', False),    # a function beside it
    ("unrelated.py", "return 1", "return 2", False),               # a module it does not import
])
def test_an_edit_of_the_producing_code_misses_and_an_unrelated_edit_hits(toy, tmp_path, name, old,
                                                                          new, misses):
    calls = []
    first = _run(tmp_path, calls)
    before = _hash()
    toy(name, old, new)
    second = _run(tmp_path, calls)
    assert (_hash() != before) is misses
    assert len(calls) == (2 if misses else 1)
    if misses:
        assert not np.array_equal(first["y"], second["y"])   # the stale value was not served


def test_stage_reruns_when_its_code_changes(toy, tmp_path):
    calls = []

    def stage(path):
        produce = importlib.import_module(f"{PKG}.produce")
        calls.append(1)
        return {"y": produce.compute([1.0])["y"].tolist()}

    def run():
        produce = importlib.import_module(f"{PKG}.produce")
        return Stages(tmp_path / "work", log=lambda *a: None).run("s", {"k": 1}, [], stage,
                                                                  code=(produce.compute,))

    a = run()
    assert run()["hash"] == a["hash"] and len(calls) == 1       # unchanged: skipped
    toy("unrelated.py", "return 1", "return 2")
    assert run()["hash"] == a["hash"] and len(calls) == 1       # unrelated edit: still skipped
    toy("helper.py", "SCALE * x", "SCALE * x * x")
    assert run()["hash"] != a["hash"] and len(calls) == 2       # its code changed: redone


def test_real_producers_follow_their_imports(monkeypatch):
    """Simulated edits of project files: Fig. 4's runs depend on the gradients in
    simulations/synthetic_methods.py, not on llm/metrics.py; TOFU's reference log-probs the other way."""
    from llm import refcache
    from simulations import synthetic, theorem2

    fig4 = lambda: codehash.code_hash(synthetic.run_experiment)           # noqa: E731
    ref = lambda: codehash.code_hash(refcache.cached_reference_logps)     # noqa: E731
    collapse = lambda: codehash.code_hash(theorem2.simulate_settings)     # noqa: E731
    base = {"fig4": fig4(), "ref": ref(), "collapse": collapse()}
    real = codehash.module_source

    def edited(target):
        return lambda name: real(name) + (b"\n# edited\n" if name == target else b"")

    monkeypatch.setattr(codehash, "module_source", edited("simulations.synthetic_methods"))
    assert fig4() != base["fig4"] and ref() == base["ref"] and collapse() == base["collapse"]
    monkeypatch.setattr(codehash, "module_source", edited("llm.metrics"))
    assert fig4() == base["fig4"] and collapse() == base["collapse"]
    monkeypatch.setattr(codehash, "module_source", edited("llm.models"))
    assert ref() != base["ref"] and fig4() == base["fig4"]
    monkeypatch.setattr(codehash, "module_source", edited("simulations.trajectory"))
    assert collapse() != base["collapse"] and fig4() == base["fig4"]


def test_the_hand_bumped_version_constants_are_gone():
    import infra.cache
    import llm.collapse_rate
    import llm.lr_sweep
    import llm.pipeline
    import simulations.collapse_rate
    import simulations.theorem2
    for module in (infra.cache, llm.pipeline, llm.collapse_rate, llm.lr_sweep, simulations.collapse_rate,
                   simulations.theorem2):
        assert not {"CACHE_VERSION", "RESULT_VERSION", "STAGE_VERSIONS"} & set(vars(module))
    assert "version" not in llm.collapse_rate.TINY_RECIPE   # the tiny target is keyed by its code
