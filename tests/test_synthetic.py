"""Section 4 synthetic model: data, fits, closed-form gradients (vs torch autograd of the
theory.objectives losses), batched GD (vs autograd GD), metrics (vs kl_categorical), cache, CLI."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import infra.cache

from simulations import synthetic as syn
from simulations.synthetic_data import DataConfig, FitNotConverged, draw_instance, fit_reference_and_retrained
from simulations.synthetic_methods import (FIGURE_METHODS, METHODS, TABLE1, LogitGradients, MethodSpec,
                                           binary_kl, distances, objective, sigmoid_fast, softplus_fast,
                                           table1_specs, unlearn)
from theory import objectives as ob

SMALL = DataConfig(n_features=32, n_forget=24, n_retain=60, n_eval=50, fit_steps=300, fit_max_grad_norm=np.inf)


def _rows(logits):
    return np.stack([ob.log_sigmoid(-logits), ob.log_sigmoid(logits)], -1)


# ---- data and fits ---------------------------------------------------------------------------------

def test_instances_are_seeded_and_alphas_share_noise_and_labels():
    cfg = DataConfig()
    a, b = draw_instance(cfg, 1000, 1.0), draw_instance(cfg, 1000, 1.0)
    np.testing.assert_array_equal(a.z_forget, b.z_forget)
    other = draw_instance(cfg, 2000, 1.0)
    assert not np.array_equal(a.z_forget, other.z_forget)
    zero = draw_instance(cfg, 1000, 0.0)  # labels depend on x - mu only, as in the authors' code
    np.testing.assert_array_equal(a.y_forget, zero.y_forget)
    np.testing.assert_array_equal(a.y_idk, zero.y_idk)
    assert not np.array_equal(a.z_forget, zero.z_forget)
    assert a.z_forget.shape == (200, 128) and a.z_eval_retain.shape == (1000, 128)
    assert a.z_forget.min() == 0.0  # ReLU features
    # label model: forget mostly 1, retain mostly 0 (digest: ~0.67 and ~0.30)
    ys = [draw_instance(cfg, s, 1.0) for s in (1000, 2000, 3000)]
    assert 0.6 < np.mean([i.y_forget.mean() for i in ys]) < 0.75
    assert 0.25 < np.mean([i.y_retain.mean() for i in ys]) < 0.35


def test_fits_equal_gradient_descent_on_the_objectives_loss():
    """The batched tanh-form GD equals plain GD with torch autograd on nll_loss."""
    inst = [draw_instance(SMALL, s, 1.0) for s in (1, 2)]
    got = fit_reference_and_retrained(SMALL, inst)
    for j, i in enumerate(inst):
        for name, z, y in (("theta_ref", np.vstack([i.z_retain, i.z_forget]), np.r_[i.y_retain, i.y_forget]),
                           ("theta_retr", i.z_retain, i.y_retain)):
            zt, yt = torch.tensor(z), torch.tensor(y)
            theta = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
            for _ in range(SMALL.fit_steps):
                loss = ob.nll_loss(ob.log_sigmoid((2 * yt - 1) * (zt @ theta)))
                (g,) = torch.autograd.grad(loss, theta)
                theta = (theta - SMALL.fit_lr * g).detach().requires_grad_(True)
            np.testing.assert_allclose(got[name][j], theta.detach().numpy(), rtol=1e-10, atol=1e-12)
            col = 0 if name == "theta_ref" else 1  # the recorded norm is the last gradient's
            np.testing.assert_allclose(got["grad_norm"][j, col], g.norm().item(), rtol=1e-6)


def test_fit_fails_loudly_when_not_converged():
    cfg = replace(SMALL, fit_steps=5, fit_max_grad_norm=1e-2)
    with pytest.raises(FitNotConverged, match="seed 3, alpha 1.0.*raise fit_steps"):
        fit_reference_and_retrained(cfg, [draw_instance(cfg, 3, 1.0)])


# ---- objectives, gradients, GD -------------------------------------------------------------------

def _problem(seed=0, k=2):
    rng = np.random.default_rng(seed)
    n_f, n_r = 30, 50
    ref_f, ref_r = rng.normal(0, 2, (k, n_f)), rng.normal(0, 2, (k, n_r))
    y_f, y_r = (rng.random((k, n_f)) < 0.7) * 1.0, (rng.random((k, n_r)) < 0.3) * 1.0
    y_i = (rng.random((k, n_f)) < 0.5) * 1.0
    return rng, ref_f, ref_r, y_f, y_r, y_i


@pytest.mark.parametrize("method", list(METHODS))
def test_logit_gradients_equal_autograd_of_the_objective(method):
    rng, ref_f, ref_r, y_f, y_r, y_i = _problem()
    spec = MethodSpec(method, 1e-3, None if METHODS[method][1] is None else 0.7)
    s_f, s_r = ref_f + rng.normal(0, 1.5, ref_f.shape), ref_r + rng.normal(0, 1.5, ref_r.shape)
    g_f, g_r = LogitGradients([spec], ref_f, ref_r, y_f, y_r, y_i)(s_f[..., None],
                                                                   s_r[..., None][..., :int(spec.uses_retain)])
    for j in range(2):
        tf, tr = (torch.tensor(x[j], requires_grad=True) for x in (s_f, s_r))
        loss = objective(spec, tf, tr, *(torch.tensor(x[j]) for x in (ref_f, ref_r, y_f, y_r, y_i)))
        a_f, a_r = torch.autograd.grad(loss, (tf, tr), allow_unused=True)
        np.testing.assert_allclose(g_f[j, :, 0], a_f.numpy(), rtol=1e-9, atol=1e-13)
        want_r = np.zeros(50) if a_r is None else a_r.numpy()
        got_r = g_r[j, :, 0] if spec.uses_retain else np.zeros(50)
        np.testing.assert_allclose(got_r, want_r, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(objective(spec, s_f[j], s_r[j], ref_f[j], ref_r[j], y_f[j], y_r[j], y_i[j]),
                                   loss.item(), rtol=1e-12)


def test_batched_unlearning_equals_autograd_gradient_descent():
    """All methods side by side for 15 steps == per-method torch GD on objective(theta)."""
    rng, *_ = _problem()
    inst = [draw_instance(SMALL, s, 1.0) for s in (7, 8)]
    theta_ref = rng.normal(0, 0.3, (2, SMALL.n_features))
    specs = [MethodSpec(m, 2e-2, None if METHODS[m][1] is None else b)
             for m, b in zip(METHODS, [None] * 4 + [0.5, 2.0, 1.0, 0.3, 3.0, 1.0, 0.8])]
    specs.sort(key=lambda s: not s.uses_retain)
    ref_f = np.stack([i.z_forget @ t for i, t in zip(inst, theta_ref)])
    ref_r = np.stack([i.z_retain @ t for i, t in zip(inst, theta_ref)])
    labels = [np.stack([getattr(i, n) for i in inst]) for n in ("y_forget", "y_retain", "y_idk")]
    grads = LogitGradients(specs, ref_f, ref_r, *labels, scale=[s.lr for s in specs])
    steps = 15
    snaps = unlearn([i.z_forget for i in inst], [i.z_retain for i in inst], theta_ref, grads, steps + 1, steps)
    for j, i in enumerate(inst):
        zf, zr = torch.tensor(i.z_forget), torch.tensor(i.z_retain)
        fixed = [torch.tensor(x[j]) for x in (ref_f, ref_r, *labels)]
        for c, spec in enumerate(specs):
            theta = torch.tensor(theta_ref[j], requires_grad=True)
            for _ in range(steps):
                (g,) = torch.autograd.grad(objective(spec, zf @ theta, zr @ theta, *fixed), theta)
                theta = (theta - spec.lr * g).detach().requires_grad_(True)
            np.testing.assert_allclose(snaps[j, 1, :, c], theta.detach().numpy(), rtol=1e-9, atol=1e-11,
                                       err_msg=spec.method)


def test_npo_gradient_tends_to_ga_as_beta_goes_to_zero():
    rng, ref_f, ref_r, y_f, y_r, y_i = _problem(1)
    s_f = ref_f[..., None] + rng.normal(0, 2, ref_f.shape)[..., None]
    specs = [MethodSpec("GA", 1.0)] + [MethodSpec("NPO", 1.0, b) for b in (1.0, 1e-2, 1e-4)]
    g_f, _ = LogitGradients(specs, ref_f, ref_r, y_f, y_r, y_i)(np.repeat(s_f, 4, -1), np.zeros((2, 50, 0)))
    gaps = [np.abs(g_f[..., c] - g_f[..., 0]).max() for c in (1, 2, 3)]
    assert gaps[0] > 1e-3 and gaps[2] < gaps[1] < gaps[0] and gaps[2] < 1e-5
    same, _ = LogitGradients(specs, ref_f, ref_r, y_f, y_r, y_i)(np.repeat(ref_f[..., None], 4, -1),
                                                                np.zeros((2, 50, 0)))
    np.testing.assert_allclose(same[..., 1], same[..., 0], rtol=1e-12)  # identical at theta_ref (W = 1)


# ---- metrics -----------------------------------------------------------------------------------------

def test_fast_primitives_match_theory_objectives():
    x = np.concatenate([np.linspace(-800, 800, 4001), [-1e6, 1e6, 0.0]])
    np.testing.assert_allclose(sigmoid_fast(x), ob.sigmoid(x), rtol=0, atol=5e-16)  # absolute: 2 ulp at 1
    np.testing.assert_allclose(softplus_fast(x), ob.softplus(x), rtol=1e-14, atol=1e-300)
    assert np.all(np.isfinite(softplus_fast(x)))


def test_binary_kl_and_distances_match_kl_categorical():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 4, 500), rng.normal(0, 4, 500)
    np.testing.assert_allclose(binary_kl(a, b), ob.kl_categorical(_rows(a), _rows(b)), rtol=1e-9, atol=1e-13)
    z = np.maximum(rng.normal(size=(300, 16)), 0)
    thetas = rng.normal(0, 2, (16, 7))
    theta_target = rng.normal(0, 2, 16)
    target = z @ theta_target
    direct = [ob.kl_categorical(_rows(target), _rows(z @ thetas[:, c])).mean() for c in range(7)]
    np.testing.assert_allclose(distances(z, thetas, target, chunk=3), direct, rtol=1e-9, atol=1e-13)
    assert distances(z, theta_target[:, None], target)[0] == pytest.approx(0, abs=1e-12)


# ---- specs, cache, CLI ---------------------------------------------------------------------------

def test_method_specs_validate_and_table1_defaults():
    assert [s.method for s in table1_specs(FIGURE_METHODS, 1.0)] == list(FIGURE_METHODS)
    assert table1_specs(["NPO"], 0.0)[0] == MethodSpec("NPO", 5e-2, 10.0)
    assert TABLE1[1.0]["DPO+RT"] == (5e-3, 0.1) and TABLE1[0.0]["GA"] == (1e-4, None)
    with pytest.raises(ValueError, match="unknown method"):
        MethodSpec("XYZ", 1e-3)
    with pytest.raises(ValueError, match="needs beta > 0"):
        MethodSpec("NPO", 1e-3, 0.0)
    with pytest.raises(ValueError, match="alpha 1 and 0"):
        table1_specs(["GA"], 0.5)


TINY = syn.Fig4Config(seeds=(1000,), alphas=(1.0,), methods=("GA", "NPO+RT"), steps=50, eval_every=25,
                      data=DataConfig(n_features=32, n_forget=40, n_retain=100, n_eval=100))


def test_results_are_cached_and_force_recomputes(tmp_path, monkeypatch):
    first = syn.fig4_results(TINY, tmp_path, workers=1)
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("*.npz")) == ["fig4", "fit"]
    calls = []
    real = infra.cache.write_npz
    # spy on the cache's writes (one per computed entry); replacing run_experiment itself would
    # change the code the key holds, a miss by design (tests/test_cache_code.py)
    monkeypatch.setattr(infra.cache, "write_npz",
                        lambda path, **a: calls.append(Path(path).name.split("-")[1]) or real(path, **a))
    again = syn.fig4_results(TINY, tmp_path, workers=1)
    assert calls == [] and np.array_equal(again["fd"], first["fd"])
    forced = syn.fig4_results(TINY, tmp_path, force=True, workers=1)
    assert calls.count("fig4") == 1
    np.testing.assert_allclose(forced["fd"], first["fd"], rtol=1e-12)
    other = syn.fig4_results(replace(TINY, steps=75), tmp_path, workers=1)  # new config, new entry
    assert other["fd"].shape[2] == 3 and calls.count("fig4") == 2


@pytest.mark.slow
def test_worker_processes_give_the_same_numbers(tmp_path):
    one = syn.run_experiment(replace(TINY, seeds=(1000, 2000)), tmp_path / "a", workers=1)
    two = syn.run_experiment(replace(TINY, seeds=(1000, 2000)), tmp_path / "b", workers=2)
    for key in ("fd", "rd", "fkl", "fit_grad_norm"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-9, atol=1e-12)


def test_summary_reports_per_seed_mean_sd_median(tmp_path):
    res = syn.fig4_results(replace(TINY, seeds=(1000, 2000)), tmp_path, workers=1)
    rows = syn.summary(res, steps=(0, 25))
    row = next(r for r in rows if r["method"] == "GA" and r["metric"] == "fd" and r["step"] == 25)
    x = res["fd"][0, :, 1, 0]
    assert row["per_seed"] == pytest.approx(list(x)) and row["median"] == pytest.approx(np.median(x))
    assert row["sd"] == pytest.approx(np.std(x, ddof=1)) and row["mean"] == pytest.approx(x.mean())


@pytest.mark.parametrize("argv, message", [
    (["--methods", "XYZ"], "unknown method 'XYZ'"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--seeds", "7", "7"], "seeds must be distinct"),
    (["--alphas", "0.5"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path):
    try:
        code = syn.main(argv + ["--results", str(tmp_path)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*"))
