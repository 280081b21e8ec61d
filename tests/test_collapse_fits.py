"""simulations/fits.py and the recording schedule: fits recover known laws."""
import numpy as np
import pytest

from simulations import fits
from simulations.trajectory import record_schedule


def test_linear_fit_recovers_a_noisy_line():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 200)
    y = 3.5 * x - 2.0 + rng.normal(0, 0.1, x.size)
    fit = fits.linear_fit(x, y)
    assert fit.slope == pytest.approx(3.5, rel=1e-2) and fit.intercept == pytest.approx(-2.0, abs=0.1)
    assert 0.999 < fit.r2 < 1.0
    assert fits.linear_fit(x, 2 * x + 1).r2 == pytest.approx(1.0, abs=1e-12)
    # R^2 of a curve that is not a line in x is clearly below 1
    assert fits.linear_fit(x, np.exp(x)).r2 < 0.9


def test_rate_fits_use_only_the_window():
    t = record_schedule(100_000).astype(float)
    ga = np.where(t < 1000, 0.0, 0.25 * t + 7.0)          # garbage before the window
    fit = fits.fit_linear_in_t(t, ga, t_min=1000)
    assert fit.slope == pytest.approx(0.25, rel=1e-12) and fit.r2 == pytest.approx(1.0)
    npo = 4.2 * np.log(np.maximum(t, 1)) + 1.0
    fit = fits.fit_linear_in_log_t(t, npo, t_min=1000)
    assert fit.slope == pytest.approx(4.2, rel=1e-12)
    assert fit.n_points == np.count_nonzero(t >= 1000)
    # an NPO-like curve is not linear in t, a GA-like one not linear in log t
    assert fits.fit_linear_in_t(t, npo, 10).r2 < 0.9
    assert fits.fit_linear_in_log_t(t, 0.25 * t, 10).r2 < 0.9


def test_power_law_exponent():
    x = np.array([5, 10, 20, 40, 80.0])
    assert fits.power_law(x, 3.0 * x ** -0.5).slope == pytest.approx(-0.5, abs=1e-12)


def test_crossing_steps():
    t = record_schedule(10_000).astype(float)
    np.testing.assert_allclose(fits.crossing_steps(t, 0.5 * t, [10.0, 2000.0]), [20.0, 4000.0],
                               rtol=1e-3)
    log_curve = np.log1p(t)
    got = fits.crossing_steps(t, log_curve, [3.0, 100.0])
    assert got[0] == pytest.approx(np.expm1(3.0), rel=2e-3) and np.isnan(got[1])


def test_record_schedule():
    s = record_schedule(1_000_000, per_decade=40)
    assert s[0] == 0 and s[-1] == 1_000_000 and np.all(np.diff(s) > 0)
    assert {10, 100, 1000, 10_000, 100_000} <= set(s.tolist())
    assert len(s) < 300
    assert record_schedule(37)[-1] == 37
