"""``grid_agreement`` (llm/evaluate/quantize.py): how far an unlearned model sits from its target on
the int4 grid, the quantity the quantization attack's argument is about."""
from __future__ import annotations

import pytest
import torch

from llm.evaluate.quantize import QuantizeError, grid_agreement, quantize_weight


class _TwoLinears(torch.nn.Module):
    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.up = torch.nn.Linear(a.shape[1], a.shape[0], bias=False)
        self.down = torch.nn.Linear(b.shape[1], b.shape[0], bias=False)
        self.lm_head = torch.nn.Linear(4, 4, bias=False)   # kept by quantization: never compared
        with torch.no_grad():
            self.up.weight.copy_(a)
            self.down.weight.copy_(b)


def _grid(rows, cols, seed):
    """Integer codes in [-6, 6] with +-7 at each group of 8's first column: scale 1 per group."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-6, 7, (rows, cols), generator=g).double()
    q[:, ::8] = 7.0
    return q


def test_codes_and_moves_are_counted_against_the_reference_step():
    a, b = _grid(4, 16, 0), _grid(3, 20, 1)       # 20 columns: a short last group of 4
    ref = _TwoLinears(a.float(), b.float())
    # move every non-absmax weight of `up` by 0.3 of a step (same code) and of `down` by 0.7
    # (next code): codes equal on `up`'s 64 and on `down`'s absmax columns only
    da, db = torch.full_like(a, 0.3), torch.full_like(b, -0.7)
    da[:, ::8] = db[:, ::8] = 0.0
    model = _TwoLinears((a + da).float(), (b + db).float())
    r = grid_agreement(model, ref, "int4", 8)
    n_down_kept = 3 * 3                            # columns 0, 8, 16 of `down`
    assert r["weights"] == 64 + 60
    assert r["codes_equal"] == pytest.approx((64 + n_down_kept) / 124)
    assert r["under_half_step"] == pytest.approx((64 + n_down_kept) / 124)
    moves = torch.cat([da.abs().flatten(), db.abs().flatten()]).double()
    assert r["move_steps_median"] == pytest.approx(float(moves.median()), abs=1e-6)
    assert r["move_steps_median"] == pytest.approx(0.3, abs=1e-6)


def test_a_model_against_itself_agrees_everywhere_and_its_quantized_self_too():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(8, 40, generator=g), torch.randn(5, 24, generator=g)
    ref = _TwoLinears(a, b)
    r = grid_agreement(ref, ref, "int4", 16)
    assert (r["codes_equal"], r["under_half_step"], r["move_steps_median"]) == (1.0, 1.0, 0.0)
    # rounding moves a weight by at most half a step and keeps its code
    q = _TwoLinears(quantize_weight(a, 4, 16), quantize_weight(b, 4, 16))
    rq = grid_agreement(q, ref, "int4", 16)
    assert rq["codes_equal"] == 1.0 and 0 < rq["move_steps_median"] <= 0.5


def test_different_architectures_and_bad_schemes_are_refused():
    a = _grid(4, 16, 0).float()
    with pytest.raises(QuantizeError, match="different linear layers"):
        grid_agreement(_TwoLinears(a, a), torch.nn.Sequential(torch.nn.Linear(16, 4)))
    with pytest.raises(QuantizeError, match="shapes differ"):
        grid_agreement(_TwoLinears(a, a), _TwoLinears(a, a[:, :8]))
    with pytest.raises(QuantizeError):
        grid_agreement(_TwoLinears(a, a), _TwoLinears(a, a), "int3")


def test_lower_median_is_torch_median_held_one_chunk_at_a_time():
    """The three-pass median grid_agreement uses (memory of one layer on a 7B model) equals
    torch.median (the lower median) exactly, with few bins so that many values share a bin."""
    from llm.evaluate.quantize import _lower_median
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 10, 1001, 5000):
        chunks = [torch.rand(k, generator=g, dtype=torch.float64) * 3 for k in (n // 3, 0, n - n // 3)]
        every = torch.cat(chunks)
        assert _lower_median(lambda: iter(chunks), n, float(every.max()), bins=16) == float(every.median())
    ties = [torch.zeros(5, dtype=torch.float64), torch.tensor([0.5, 0.5, 2.0], dtype=torch.float64)]
    assert _lower_median(lambda: iter(ties), 8, 2.0, bins=4) == 0.0
