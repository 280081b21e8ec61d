"""theory/fits.py (the fits shared by simulations and llm) and the simulations' recording schedule."""
import numpy as np
import pytest

from simulations.trajectory import record_schedule
from theory import fits

STEPS = np.unique(np.r_[0, np.round(np.geomspace(1, 1000, 40))])


def test_line_fit_recovers_a_line():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 200)
    y = 3.5 * x - 2.0 + rng.normal(0, 0.1, x.size)
    fit = fits.line_fit(x, y)
    assert fit.slope == pytest.approx(3.5, rel=1e-2) and fit.intercept == pytest.approx(-2.0, abs=0.1)
    assert 0.999 < fit.r2 < 1.0 and fit.n_points == 200
    exact = fits.line_fit(x, 2 * x + 1)
    assert exact.slope == pytest.approx(2.0, abs=1e-12) and exact.intercept == pytest.approx(1.0, abs=1e-12)
    assert exact.r2 == pytest.approx(1.0, abs=1e-12)
    assert fits.line_fit(x, np.full_like(x, 4.0)).r2 == 1.0   # constant: exact, not nan
    assert fits.line_fit(x, np.exp(x)).r2 < 0.9                # not a line in x
    with pytest.raises(ValueError, match="two distinct x"):
        fits.line_fit([1.0, 1.0], [2.0, 3.0])


def test_law_fits_use_only_the_window():
    t = record_schedule(100_000).astype(float)
    ga = np.where(t < 1000, 0.0, 0.25 * t + 7.0)          # garbage before the window
    fit = fits.law_fit(t, ga, "linear", t_min=1000)
    assert fit.slope == pytest.approx(0.25, rel=1e-12) and fit.r2 == pytest.approx(1.0)
    npo = 4.2 * np.log(np.maximum(t, 1)) + 1.0
    fit = fits.law_fit(t, npo, "logarithmic", t_min=1000)
    assert fit.slope == pytest.approx(4.2, rel=1e-12)
    assert fit.n_points == np.count_nonzero(t >= 1000)
    # an NPO-like curve is not linear in t, a GA-like one not linear in log t
    assert fits.law_fit(t, npo, "linear", 10).r2 < 0.9
    assert fits.law_fit(t, 0.25 * t, "logarithmic", 10).r2 < 0.9
    with pytest.raises(ValueError, match="unknown law"):
        fits.law_fit(t, npo, "quadratic")


def test_power_law_exponent():
    x = np.array([5, 10, 20, 40, 80.0])
    assert fits.power_law(x, 3.0 * x ** -0.5).slope == pytest.approx(-0.5, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        fits.power_law(x, x - 5)


def test_fit_laws_tells_a_line_from_a_logarithm():
    rng = np.random.default_rng(0)
    line = 0.3 * STEPS + rng.normal(0, 0.3, STEPS.size)
    logarithm = 2.0 * np.log1p(STEPS / 5.0) + rng.normal(0, 0.03, STEPS.size)
    f_line, f_log = fits.fit_laws(STEPS, line), fits.fit_laws(STEPS, logarithm)
    assert f_line["law"] == "linear" and f_log["law"] == "logarithmic"
    assert f_line["linear_r2"] > 0.99 and f_line["log_r2"] < 0.95
    assert f_log["log_r2"] > 0.99 and f_log["linear_r2"] < 0.95
    assert f_line["linear_slope"] == pytest.approx(0.3, rel=0.02)
    assert f_log["log_c"] == pytest.approx(2.0, rel=0.05) and f_log["log_tau"] == pytest.approx(5, rel=0.3)
    assert f_line["growth_exponent"] == pytest.approx(1, abs=0.05) and f_log["growth_exponent"] < 0.4
    # a pure logarithm of t is classified logarithmic, with its constant exactly
    pure = fits.fit_laws(STEPS, 3.0 * np.log(np.maximum(STEPS, 1)))
    assert pure["law"] == "logarithmic" and pure["log_c"] == pytest.approx(3.0, rel=1e-12)
    # an early jump before the fit window (GA's collapse of the answers) does not decide the law
    jump = np.where(STEPS >= 20, 50 + 0.3 * STEPS, 0.1 * STEPS)
    assert fits.fit_laws(STEPS, jump)["law"] == "linear" and fits.fit_laws(STEPS, jump)["t_min"] >= 100
    # an explosion is neither law
    assert fits.fit_laws(STEPS, np.exp(STEPS / 100.0))["law"] == "superlinear"
    # a negative divergence (log-ratios fall) is fitted on its magnitude
    assert fits.fit_laws(STEPS, -line)["law"] == "linear"
    with pytest.raises(ValueError, match="fewer than 3 records"):
        fits.fit_laws([0, 1, 2, 100], [0, 1, 2, 3], t_min=50)


def test_crossing_rule():
    t = [0, 1, 10, 100, 1000]
    dip = [0, 4, 2, 8, 20]   # dips after step 1: the running maximum stays at 4
    # 6 lies halfway from 4 (the maximum so far, t = 10) to 8 (t = 100): halfway in log t
    assert fits.crossing_step(t, dip, 6.0) == pytest.approx(10 ** 1.5, rel=1e-12)
    assert fits.crossing_step(t, dip, 14.0) == pytest.approx(10 ** 2.5, rel=1e-12)
    assert fits.crossing_step(t, dip, 8.0) == pytest.approx(100.0)       # reached at a record
    assert fits.crossing_step(t, dip, 3.0) == 1.0        # between step 0 and the first record
    assert fits.crossing_step([5, 10], [7, 9], 6.0) == 5.0  # already reached at the first record
    assert np.isnan(fits.crossing_step(t, dip, 21.0))     # never reached
    # on the simulations' schedule: a line and a logarithm cross where they should
    s = record_schedule(10_000).astype(float)
    assert fits.crossing_step(s, 0.5 * s, 2000.0) == pytest.approx(4000.0, rel=1e-3)
    assert fits.crossing_step(s, np.log1p(s), 3.0) == pytest.approx(np.expm1(3.0), rel=2e-3)


def test_record_schedule():
    s = record_schedule(1_000_000, per_decade=40)
    assert s[0] == 0 and s[-1] == 1_000_000 and np.all(np.diff(s) > 0)
    assert {10, 100, 1000, 10_000, 100_000} <= set(s.tolist())
    assert len(s) < 300
    assert record_schedule(37)[-1] == 37
