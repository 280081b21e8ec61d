"""Figures 1, 3, 4, 9 and Table 1: quick runs write non-empty PNG and byte-stable PDF; errors exit 2."""
import pytest

from figures import fig1_schematic, fig3_beta_limit, fig4_tradeoff, fig9_forget_kl, table1_hyperparams

DATA_FIGURES = [fig3_beta_limit, fig4_tradeoff, fig9_forget_kl]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "synthetic_results"  # shared with test_synthetic_paper


def _argv(module, out, results):
    extra = ["--results", str(results)] if module in DATA_FIGURES else []
    return ["--quick", "--out", str(out)] + extra


@pytest.mark.slow
@pytest.mark.parametrize("module", [fig1_schematic, fig3_beta_limit, fig4_tradeoff, fig9_forget_kl,
                                    table1_hyperparams], ids=lambda m: m.__name__.split(".")[-1])
def test_quick_figure_writes_png_and_byte_stable_pdf(module, tmp_path, results):
    for out in (tmp_path / "a", tmp_path / "b"):
        assert module.main(_argv(module, out, results)) == 0
        for ext in ("png", "pdf"):
            assert (out / f"{module.STEM}.{ext}").stat().st_size > 1000
    pdfs = [(tmp_path / d / f"{module.STEM}.pdf").read_bytes() for d in "ab"]
    assert pdfs[0] == pdfs[1]
    if module is table1_hyperparams:
        md = (tmp_path / "a" / "table1_hyperparams.md").read_text()
        assert "| NPO | 5e-3 | 5e-2 | 1 | 10 | paper Table 1 |" in md


@pytest.mark.parametrize("module", DATA_FIGURES, ids=lambda m: m.__name__.split(".")[-1])
def test_user_errors_are_one_line_exit_2(module, tmp_path, capsys):
    assert module.main(["--workers", "0", "--out", str(tmp_path), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--workers must be >= 1" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        module.main(["--no-such-flag"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_unreadable_results_directory_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = fig4_tradeoff.main(["--quick", "--out", str(tmp_path / "out"), "--results", str(blocker / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "error" in err
