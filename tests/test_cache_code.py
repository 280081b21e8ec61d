"""Caches are keyed by the code that produced them (infra/codehash.py, infra/cache.py, infra/stages.py).

An edit of a producing function (or of a module it imports, a base class, a statement mutating a
constant it reads, a data file it declares) makes the cache miss; an edit elsewhere (a function
beside it that it does not use, a module it does not import) still hits. The TOFU pipeline's keys:
a metric fix re-evaluates without re-training, the packaged IDK list re-runs only the IDK-style
runs, and versions / device / strategy re-run the training stages.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from infra import codehash
from infra.cache import cached
from infra.stages import Stages, stage_hash

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
            import functools

            import numpy as np

            from toy_producer.helper import grad

            OFFSET = 1.0


            def compute(x):
                return {"y": grad(np.asarray(x)) + OFFSET}


            def beside():
                return "not used by compute"


            class Base:
                def scale(self):
                    return 2.0


            class Child(Base):
                def __call__(self, x):
                    return self.scale() * x

                def method(self, x):
                    return self(x) + OFFSET


            TABLE = {"a": 1.0}
            TABLE.update(b=2.0)
            for _k in ("c",):
                TABLE[_k] = 3.0


            def lookup(key):
                return TABLE[key]


            SCALED = functools.partial(grad, 3.0)


            def scaled():
                return SCALED()
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
    simulations/synthetic_methods.py, not on llm/evaluate/metrics.py; TOFU's reference log-probs the other way."""
    from llm.train import refcache
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
    monkeypatch.setattr(codehash, "module_source", edited("llm.evaluate.metrics"))
    assert fig4() == base["fig4"] and collapse() == base["collapse"]
    monkeypatch.setattr(codehash, "module_source", edited("llm.models"))
    assert ref() != base["ref"] and fig4() == base["fig4"]
    monkeypatch.setattr(codehash, "module_source", edited("simulations.trajectory"))
    assert collapse() != base["collapse"] and fig4() == base["fig4"]


def test_the_hand_bumped_version_constants_are_gone():
    import infra.cache
    import llm.studies.collapse_rate
    import llm.studies.lr_sweep
    import llm.pipeline.run
    import simulations.collapse_rate
    import simulations.theorem2
    for module in (infra.cache, llm.pipeline.run, llm.studies.collapse_rate, llm.studies.lr_sweep, simulations.collapse_rate,
                   simulations.theorem2):
        assert not {"CACHE_VERSION", "RESULT_VERSION", "STAGE_VERSIONS"} & set(vars(module))
    assert "version" not in llm.studies.collapse_rate.TINY_RECIPE   # the tiny target is keyed by its code


def _produce():
    return importlib.import_module(f"{PKG}.produce")


def test_partial_bound_method_and_callable_object_hash_the_code_they_run(toy):
    p = _produce()
    assert codehash.code_hash(functools.partial(p.compute, [1.0])) == codehash.code_hash(p.compute)
    assert codehash.code_hash(p.Child().method) == codehash.code_hash(p.Child.method, p.Child)
    assert codehash.code_hash(p.Child()) == codehash.code_hash(p.Child)
    hashes = lambda p: [codehash.code_hash(x) for x in (functools.partial(p.compute, [1.0]),  # noqa: E731
                                                       p.Child().method, p.Child())]
    before = hashes(p)
    toy("produce.py", "return self.scale() * x", "return self.scale() * x * x")   # Child.__call__
    after = hashes(_produce())
    assert after[0] == before[0] and after[1] != before[1] and after[2] != before[2]
    toy("produce.py", "+ OFFSET", "- OFFSET")                                      # compute
    assert hashes(_produce())[0] != after[0]


@pytest.mark.parametrize("producer", [len, object(), 3, np.add])
def test_a_producer_whose_code_cannot_be_read_raises(producer):
    with pytest.raises(TypeError, match="cannot read the code"):
        codehash.code_hash(producer)


def test_an_edit_of_a_same_module_base_class_misses(toy):
    before = codehash.code_hash(_produce().Child)
    toy("produce.py", '"not used by compute"', '"edited"')     # beside it: still hits
    assert codehash.code_hash(_produce().Child) == before
    toy("produce.py", "return 2.0", "return 4.0")              # Base.scale
    assert codehash.code_hash(_produce().Child) != before


@pytest.mark.parametrize("old, new", [("TABLE.update(b=2.0)", "TABLE.update(b=5.0)"),
                                      ("TABLE[_k] = 3.0", "TABLE[_k] = 4.0"),
                                      ('TABLE = {"a": 1.0}', 'TABLE = {"a": 6.0}')])
def test_a_module_level_mutation_of_a_name_the_producer_reads_misses(toy, old, new):
    before = codehash.code_hash(_produce().lookup)
    toy("produce.py", old, new)
    assert codehash.code_hash(_produce().lookup) != before


@pytest.mark.parametrize("old, new", [("functools.partial(grad, 3.0)", "functools.partial(grad, 4.0)"),
                                      ("SCALE * x", "SCALE * x * x")])
def test_a_module_level_partial_counts_with_its_arguments_and_its_function(toy, old, new):
    before = codehash.code_hash(_produce().scaled)
    toy("helper.py" if "SCALE" in old else "produce.py", old, new)
    assert codehash.code_hash(_produce().scaled) != before


def test_a_declared_data_file_is_hashed_by_name_and_bytes(toy, tmp_path):
    p = _produce()
    a, b = tmp_path / "a" / "answers.txt", tmp_path / "b" / "answers.txt"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_text("I don't know.\n")
    shutil.copy(a, b)
    h = codehash.code_hash(p.compute, a)
    assert codehash.code_hash(p.compute, b) == h != codehash.code_hash(p.compute)   # where it lies: no
    b.write_text("I don't know.\nNo idea.\n")
    assert codehash.code_hash(p.compute, b) != h


# ---- the TOFU pipeline's keys ----------------------------------------------------------------------

def _pipeline_keys(tofu_dir, tmp_path, **options) -> dict[str, str]:
    """Every stage's hash as ``run_pipeline`` computes it (infra.stages.stage_hash), without
    training or evaluating: a stand-in runner records the hashes, runs only the data stage (the
    pipeline reads its files) and leaves the few files the pipeline reads after a stage."""
    from llm.pipeline import run as pipeline
    from llm.pipeline.plan import PAPER_GRID, PRESETS
    keys = {}

    class Recorder:
        def __init__(self, work, force=False, log=print):
            self.work = Path(work)

        def run(self, name, config, inputs, fn, code=None):
            h = keys[name] = stage_hash(name, config, inputs, fn if code is None else code)
            path = self.work / f"{name}-{h}"
            path.mkdir(parents=True)
            info = fn(path) if name == "data" else {"summary": {}}
            (path / "row.json").write_text("{}")
            (path / "run.jsonl").write_text(json.dumps({"event": "meta"}) + "\n")
            return {"hash": h, "info": info, "path": path}

    preset = dataclasses.replace(PRESETS["cpu"], tasks=("forget01",), task_methods={},
                                 methods=PAPER_GRID, threads=None)
    work = tmp_path / f"work{len(list(tmp_path.glob('work*')))}"
    o = pipeline.Options("cpu", preset, tofu_dir, work / "out", work, extras=False, **options)
    real = pipeline.Stages
    pipeline.Stages = Recorder
    try:
        pipeline.run_pipeline(o, log=lambda *a: None)
    finally:
        pipeline.Stages = real
    return keys


def _changed(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if a[k] != b[k]}


IDK_RUNS = {"run-forget01-idk_rt-rt1-s0", "run-forget01-dpo_rt-rt1-s0", "run-forget01-kto_rt-rt1-s0"}


def test_pipeline_the_packaged_idk_list_keys_only_the_idk_style_runs(tofu_dir, tmp_path, monkeypatch):
    import llm.data.tofu
    base = _pipeline_keys(tofu_dir, tmp_path)
    runs = {k for k in base if k.startswith("run-")}
    assert IDK_RUNS < runs and len(runs) == 9
    copy = tmp_path / "pkg" / "idk_answers.txt"
    copy.parent.mkdir()
    shutil.copy(llm.data.tofu.PACKAGED_IDK, copy)
    monkeypatch.setattr(llm.data.tofu, "PACKAGED_IDK", copy)
    assert _pipeline_keys(tofu_dir, tmp_path) == base             # the same list elsewhere: all hit
    copy.write_text(copy.read_text() + "That is beyond what I know.\n")
    assert _changed(base, _pipeline_keys(tofu_dir, tmp_path)) == IDK_RUNS


def test_pipeline_a_metric_fix_re_evaluates_without_re_training(tofu_dir, tmp_path, monkeypatch):
    base = _pipeline_keys(tofu_dir, tmp_path)
    training = {"target", "retain90"}
    evals = {"retain-eval-forget01", "initial-forget01"}
    runs = {k for k in base if k.startswith("run-")}
    real = codehash.module_source
    for module in ("llm.evaluate.metrics", "llm.evaluate.mia", "llm.evaluate.summary", "llm.evaluate.scoring"):
        monkeypatch.setattr(codehash, "module_source",
                            lambda name, m=module: real(name) + (b"\n# edited\n" if name == m else b""))
        assert _changed(base, _pipeline_keys(tofu_dir, tmp_path)) == evals | runs, module
    for module in ("llm.train.methods.base", "llm.train.methods.npo", "llm.train.unlearning"):  # a method or its inputs
        monkeypatch.setattr(codehash, "module_source",
                            lambda name, m=module: real(name) + (b"\n# edited\n" if name == m else b""))
        assert _changed(base, _pipeline_keys(tofu_dir, tmp_path)) == runs, module  # the target is kept
    assert training.isdisjoint(runs | evals)


@pytest.mark.parametrize("change", ["versions", "device", "strategy"])
def test_pipeline_library_versions_device_and_strategy_key_the_training_stages(tofu_dir, tmp_path,
                                                                                 monkeypatch, change):
    from llm.pipeline import run as pipeline
    base = _pipeline_keys(tofu_dir, tmp_path)
    options = {}
    if change == "versions":
        real = pipeline.versions
        monkeypatch.setattr(pipeline, "versions", lambda: {**real(), "torch": "0.0.1"})
    elif change == "device":
        monkeypatch.setattr(pipeline, "device_name", lambda device: "NVIDIA H100 80GB HBM3")
    else:
        options["strategy"] = "fsdp"
    changed = _changed(base, _pipeline_keys(tofu_dir, tmp_path, **options))
    # every training stage, hence everything downstream of one; the data stage is kept
    assert changed == set(base) - {"data"}
    for name in ("target", "retain90", "run-forget01-npo_rt-rt1-s0"):
        assert name in changed
