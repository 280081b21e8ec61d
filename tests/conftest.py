"""Test-wide settings: no network, no GUI, deterministic torch, and TOFU data.

``tofu_dir``: a TOFU-shaped fixture our own generator writes once per session (tests/tofu_fixture.py);
every test of a code path uses it, so the suite needs nothing beside the checkout.
``real_tofu_dir``: the real TOFU files from ``$TOFU_DATA_DIR``, for the few tests whose point is the
real data (split sizes, the published eval log); they skip, saying so, when it is unset.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

from tofu_fixture import write_fixture  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tofu_dir(tmp_path_factory) -> Path:
    """The generated TOFU-shaped fixture (200 fictitious authors x 20 QA), built once per session."""
    return write_fixture(tmp_path_factory.mktemp("tofu_fixture"))


def real_tofu(why: str = "checks the real TOFU files") -> Path:
    """The real TOFU folder from $TOFU_DATA_DIR; skips, saying ``why`` the test needs it, when unset."""
    value = os.environ.get("TOFU_DATA_DIR")
    if not value:
        pytest.skip(f"TOFU_DATA_DIR unset: this test {why} (CI sets it; locally: "
                    f"hf download locuslab/TOFU --repo-type dataset, then point TOFU_DATA_DIR at it)")
    path = Path(value).expanduser()
    if not (path / "full.json").exists():
        pytest.fail(f"TOFU_DATA_DIR={value} has no full.json; point it at a TOFU folder")
    return path


@pytest.fixture(scope="session")
def real_tofu_dir() -> Path:
    """The real TOFU files, from $TOFU_DATA_DIR; the test skips, saying why, when it is unset."""
    return real_tofu()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and 2 threads thrash when the cores are shared.

    Use per module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def micro_train_config(target, tofu_dir, tmp_path, **kw):
    """The unlearning tests' micro run: 12 forget01 items from ``target``, one epoch, lr 1e-3, no
    warm-up or weight decay, its own reference cache and output under ``tmp_path``; ``kw`` overrides."""
    from llm.train.loop import TrainConfig
    base = dict(model=str(target), data_dir=str(tofu_dir), forget="forget01", max_examples=12,
                epochs=1, batch_size=2, effective_batch=4, lr=1e-3, weight_decay=0.0,
                warmup_epochs=0.0, ref_cache=str(tmp_path / "refcache"), out=str(tmp_path / "out"),
                seed=0, device="cpu")
    return TrainConfig(**{**base, **kw})


def save_tiny_target(tofu_dir: Path, path: Path, seed: int) -> Path:
    """Save a freshly initialised ``tiny`` preset (model + tokenizer) as a stand-in target model."""
    from llm.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures saved during a test, in order: tests read the data a figure drew
    (lines, points) from them instead of trusting a file size."""
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        if not any(f is self for f in figures):
            figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    return figures


def labelled_lines(ax) -> dict:
    """{label: Line2D} of an axes' lines that carry a legend label; an errorbar's label sits on its
    container, so its data line is listed under that label."""
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    for c in ax.containers:
        if hasattr(c, "has_xerr") and not c.get_label().startswith("_") and c.lines[0] is not None:
            lines[c.get_label()] = c.lines[0]
    return lines


def assert_close(actual, expected, rel: float = 1e-6, abs: float = 1e-12, where: str = "") -> None:
    """``actual`` equals ``expected`` key by key, nested: numbers to ``rel``/``abs`` (NaN equals
    NaN), strings, None and bools exactly, dicts with the same keys, lists of the same length.

    pytest.approx refuses (pytest >= 9.2) mappings that hold strings, and TOFU summaries hold
    ``"numerics": "exact"`` beside their numbers. The message names the first differing key.
    """
    import math
    from numbers import Real

    where = where or "value"
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a dict, got {actual!r}"
        assert set(actual) == set(expected), (
            f"{where}: keys differ: missing {sorted(set(expected) - set(actual))}, "
            f"extra {sorted(set(actual) - set(expected))}")
        for key in expected:
            assert_close(actual[key], expected[key], rel, abs, f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), (
            f"{where}: expected a sequence of {len(expected)}, got {actual!r}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, rel, abs, f"{where}[{i}]")
    elif isinstance(expected, Real) and not isinstance(expected, bool):
        assert isinstance(actual, Real) and not isinstance(actual, bool), (
            f"{where}: expected a number near {expected!r}, got {actual!r}")
        a, e = float(actual), float(expected)
        if math.isnan(e) or math.isnan(a):
            assert math.isnan(a) and math.isnan(e), f"{where}: {a!r} != {e!r}"
        else:
            assert a == e or math.isclose(a, e, rel_tol=rel, abs_tol=abs), (
                f"{where}: {a!r} != {e!r} (rel {rel}, abs {abs})")
    else:
        assert type(actual) is type(expected) and actual == expected, (
            f"{where}: {actual!r} != {expected!r}")


#: The micro pipeline: the cpu preset cut to one task, two methods, one QA pair per author and two
#: epochs on the generated fixture (seconds of CPU); tests/test_pipeline.py runs the same settings.
MICRO_PIPELINE = ["--preset", "cpu", "--tasks", "forget05", "--methods", "GA", "NPO+RT",
                  "--qa-per-author", "1", "--ft-epochs", "2", "--unlearn-epochs", "2", "--ds-size", "6",
                  "--no-extras"]


@pytest.fixture(scope="session")
def micro_pipeline(tofu_dir, tmp_path_factory) -> dict:
    """A finished micro pipeline run, shared by the tests that read one: {"out", "work"} folders."""
    from llm.pipeline import cli as pipeline_cli

    root = tmp_path_factory.mktemp("micro_pipeline")
    out, work = root / "out", root / "work"
    argv = ["--data-dir", str(tofu_dir), *MICRO_PIPELINE, "--out", str(out), "--work", str(work)]
    assert pipeline_cli.main(argv) == 0
    return {"out": out, "work": work}
