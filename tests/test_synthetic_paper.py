"""Section 4's paper claims on the quick configuration (seeds 1000 and 2000; Fig 3 at 2000 steps).

The full five-seed table is ``python -m simulations.synthetic --check-paper``; here the same check
code runs on two seeds, and the claims that hold for them are asserted.
"""
import json

import numpy as np
import pytest

from simulations import synthetic as syn


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "synthetic_results"  # shared with the figure tests
    fig4 = syn.fig4_results(syn.Fig4Config.quick(), root)
    fig3 = syn.fig3_results(syn.Fig3Config.quick(), root)
    return fig4, fig3, root


EXPECTED_TO_PASS = [
    "alpha=1 start forget distance", "alpha=1 start retain distance",
    "NPO: first step with median FD < 0.1", "NPO+RT: first step with median FD < 0.1",
    "DPO+RT: first step with median FD < 0.1", "GA: first step with median FD < 0.1",
    "GA+RT: first step with median FD < 0.1", "GA: retain distance explodes",
    "NPO: retain distance saturates", "NPO+RT: retain distance stays near its start",
    "IDK+RT: forget distance plateaus", "alpha=0 start forget distance",
    "alpha=0 Fig 4b final forget distance", "reference/retrained fits converged",
    "Fig 3: NPO beta=0.01 ~ GA", "Fig 3: RD at mean FD=0.15 decreases as beta grows",
]


@pytest.mark.slow
def test_paper_claims_hold_on_the_quick_configuration(quick):
    fig4, fig3, _ = quick
    rows = syn.check_paper(fig4, fig3)
    by_claim = {r["claim"]: r for r in rows}
    for prefix in EXPECTED_TO_PASS:
        matches = [r for c, r in by_claim.items() if c.startswith(prefix)]
        assert len(matches) == 1, prefix
        assert matches[0]["passed"], matches[0]
    for r in rows:  # every row carries numbers, a tolerance, and per-seed values where it judges seeds
        assert r["measured"] and r["tolerance"] and r["paper"]
        if r["passed"] is False:
            assert r["per_seed"], r["claim"]


@pytest.mark.slow
def test_forget_distance_curves_have_the_papers_shape(quick):
    fig4, _, _ = quick
    methods = list(fig4["methods"])
    fd = np.median(fig4["fd"][0], axis=0)  # alpha = 1, (T, M)
    steps = list(fig4["steps"])
    npo, ga = methods.index("NPO"), methods.index("GA")
    assert fd[steps.index(300), npo] < 0.1 < fd[steps.index(300), ga]  # NPO fast, GA slow
    assert fd[0, npo] == pytest.approx(fd[0, ga])                      # same start
    rd = fig4["rd"][0].mean(0)
    assert rd[-1, ga] > 5 * rd[0, ga] and rd[-1, methods.index("NPO+RT")] < 2 * rd[0, ga]


# The rows that fail on the quick configuration (two seeds), measured: the per-seed minimum FD
# reaches 0.012-0.016, not < 0.005 (the paper's five seeds and longer fits go lower), and NPO+RT's
# mean RD at step 1900 is 0.0228, more than 35 % above the paper's ~0.016.
KNOWN_FAILING_ON_QUICK = ("all but IDK+RT reach FD < 0.005",
                          "Fig 4a2 retain distance: NPO+RT (mean over seeds)")


def _known_failing(row) -> bool:
    return row["claim"].startswith(KNOWN_FAILING_ON_QUICK)


def _cli(root, capsys, *extra):
    code = syn.main(["--check-paper", "--quick", "--results", str(root), *extra])
    return code, capsys.readouterr().out


@pytest.mark.slow
def test_check_paper_cli_prints_table_and_json(quick, capsys):
    _, _, root = quick
    code, out = _cli(root, capsys, "--json")
    rows = json.loads(out)["checks"]
    assert {"claim", "paper", "measured", "tolerance", "passed", "per_seed"} <= set(rows[0])
    failing = [r["claim"] for r in rows if r["passed"] is False]
    assert len(failing) == len(KNOWN_FAILING_ON_QUICK)
    assert all(claim.startswith(KNOWN_FAILING_ON_QUICK) for claim in failing)
    assert code == 1  # a failing claim is a non-zero exit
    code, out = _cli(root, capsys)
    assert code == 1
    assert out.startswith("| claim | paper | measured | tolerance | pass |")
    assert f"{len(rows) - len(failing) - sum(r['passed'] is None for r in rows)} passed, " \
           f"{len(failing)} failed" in out
    assert out.count("| FAIL |") == len(failing)


@pytest.mark.slow
def test_check_paper_cli_exit_code_follows_the_rows(quick, capsys, monkeypatch):
    """Without the known-failing rows the CLI exits 0; break one claim's data and it exits 1 with
    exactly that row marked FAIL."""
    _, _, root = quick
    real_check, real_fig4 = syn.check_paper, syn.fig4_results
    monkeypatch.setattr(syn, "check_paper",
                        lambda fig4, fig3: [r for r in real_check(fig4, fig3) if not _known_failing(r)])
    code, out = _cli(root, capsys, "--json")
    rows = json.loads(out)["checks"]
    assert code == 0 and all(r["passed"] is not False for r in rows)
    start = float(rows[0]["measured"].split()[0])  # alpha=1 start forget distance, median

    def shifted_start(*args, **kwargs):  # every alpha=1 forget distance at step 0 raised by 1
        res = dict(real_fig4(*args, **kwargs))
        res["fd"] = res["fd"].copy()
        res["fd"][list(res["alphas"]).index(1.0), :, 0, :] += 1.0
        return res

    monkeypatch.setattr(syn, "fig4_results", shifted_start)
    code, out = _cli(root, capsys, "--json")
    rows = json.loads(out)["checks"]
    failing = [r for r in rows if r["passed"] is False]
    assert code == 1
    assert [r["claim"] for r in failing] == ["alpha=1 start forget distance (step 0, median)"]
    assert float(failing[0]["measured"].split()[0]) == pytest.approx(start + 1.0, abs=1e-3)
