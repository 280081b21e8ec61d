"""Figures 1, 3, 4, 9 and Table 1: quick runs draw the cached results, write PNG and byte-stable PDF;
errors exit 2."""
import numpy as np
import pytest

from conftest import labelled_lines
from figures import fig1_schematic, fig3_beta_limit, fig4_tradeoff, fig9_forget_kl, table1_hyperparams
from simulations import synthetic as syn

DATA_FIGURES = [fig3_beta_limit, fig4_tradeoff, fig9_forget_kl]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "synthetic_results"  # shared with test_synthetic_paper


def _argv(module, out, results):
    extra = ["--results", str(results)] if module in DATA_FIGURES else []
    return ["--quick", "--out", str(out)] + extra


def _check_fig4(fig, results):
    res = syn.fig4_results(syn.Fig4Config.quick(), results)
    a1, a2, a3, b = fig.axes[:4]
    a, a0 = list(res["alphas"]).index(1.0), list(res["alphas"]).index(0.0)
    methods = [str(m) for m in res["methods"]]
    for ax, key, alpha in ((a1, "fd", a), (a2, "rd", a), (b, "fd", a0)):
        lines = labelled_lines(ax)
        assert list(lines) == methods
        for j, m in enumerate(methods):  # mean over seeds against the step axis
            np.testing.assert_array_equal(lines[m].get_xdata(), res["steps"])
            np.testing.assert_allclose(lines[m].get_ydata(), res[key][alpha, :, :, j].mean(0))
    lines = labelled_lines(a3)
    for j, m in enumerate(methods):  # retain vs forget distance, seed means
        np.testing.assert_allclose(lines[m].get_xdata(), res["fd"][a, :, :, j].mean(0))
        np.testing.assert_allclose(lines[m].get_ydata(), res["rd"][a, :, :, j].mean(0))


def _check_fig9(fig, results):
    res = syn.fig4_results(syn.Fig4Config.quick(), results)
    for ax, alpha in zip(fig.axes[:2], (1.0, 0.0)):
        a = list(res["alphas"]).index(alpha)
        lines = labelled_lines(ax)
        assert list(lines) == [str(m) for m in res["methods"]]
        for j, m in enumerate(res["methods"]):
            np.testing.assert_allclose(lines[str(m)].get_ydata(), res["fkl"][a, :, :, j].mean(0))


def _check_fig3(fig, results):
    res = syn.fig3_results(syn.Fig3Config.quick(), results)
    fd, rd = res["fd"][0], res["rd"][0]
    lines = labelled_lines(fig.axes[0])
    assert list(lines) == [str(m) for m in res["methods"]]
    for j, m in enumerate(res["methods"]):
        np.testing.assert_allclose(lines[str(m)].get_xdata(), fd.mean(0)[:, j])
        np.testing.assert_allclose(lines[str(m)].get_ydata(), rd.mean(0)[:, j])
    per_seed = fig.axes[1].get_lines()  # GA and the largest beta, one line per seed
    assert len(per_seed) == 2 * fd.shape[0]
    for line, (j, s) in zip(per_seed, [(j, s) for j in (0, fd.shape[2] - 1) for s in range(fd.shape[0])]):
        np.testing.assert_allclose(line.get_xdata(), fd[s, :, j])
        np.testing.assert_allclose(line.get_ydata(), rd[s, :, j])


DRAWN = {fig3_beta_limit: _check_fig3, fig4_tradeoff: _check_fig4, fig9_forget_kl: _check_fig9}


@pytest.mark.slow
@pytest.mark.parametrize("module", [fig1_schematic, fig3_beta_limit, fig4_tradeoff, fig9_forget_kl,
                                    table1_hyperparams], ids=lambda m: m.__name__.split(".")[-1])
def test_quick_figure_draws_the_results_and_writes_byte_stable_pdf(module, tmp_path, results, drawn):
    for out in (tmp_path / "a", tmp_path / "b"):
        assert module.main(_argv(module, out, results)) == 0
        for ext in ("png", "pdf"):
            assert (out / f"{module.STEM}.{ext}").read_bytes()[:4] in (b"\x89PNG", b"%PDF")
    assert len(drawn) == 2
    if module in DRAWN:
        DRAWN[module](drawn[0], results)
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
