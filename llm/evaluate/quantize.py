"""Round-to-nearest, group-wise absmax weight quantization (the quantization attack), in pure torch.

    from llm.evaluate.quantize import quantize_model
    stats = quantize_model(model, "int4", group_size=128)   # in place: quantize, then dequantize

"Catastrophic Failure of LLM Unlearning via Quantization" (Zhang et al. 2024) shows that an
unlearned model quantized to 4 bits can answer what it had forgotten again: unlearning with a small
learning rate moves each weight by less than half a quantization step, so rounding the unlearned
and the target weights lands on the same grid point. This module is the plain form of the common
4-bit schemes: every ``nn.Linear`` weight of the transformer blocks is cut, along its input
dimension, into groups of ``group_size`` values; each group gets the symmetric scale
``s = absmax / qmax`` (qmax = 127 for int8, 7 for int4) and each value becomes ``s * round(w / s)``
(ties to even, torch.round). The model keeps its dtype: the weights are quantized and dequantized
in place (simulated quantization), so every evaluation code path runs unchanged. The output head
is kept, as GPTQ / AWQ keep it (and in the tiny preset it is tied to the input embedding, which
a quantized head would silently change too). Computed in float64, so a weight already on the
grid with a power-of-two scale comes back bit for bit.
"""
from __future__ import annotations

import torch

__all__ = ["SCHEMES", "DEFAULT_GROUP_SIZE", "QuantizeError", "check_scheme", "quantize_weight",
           "quantize_model", "grid_agreement"]

#: scheme -> bits
SCHEMES = {"int8": 8, "int4": 4}
DEFAULT_GROUP_SIZE = 128
KEPT = ("lm_head",)  # module names left in full precision


class QuantizeError(ValueError):
    """A user-fixable quantization option; one line naming the fix."""


def check_scheme(scheme: str, group_size: int) -> int:
    """Bits of ``scheme``; QuantizeError for an unknown scheme or a group size below 1."""
    if scheme not in SCHEMES:
        raise QuantizeError(f"unknown --quantize {scheme!r}; use {' or '.join(SCHEMES)}")
    if group_size < 1:
        raise QuantizeError(f"--group-size must be >= 1 (got {group_size})")
    return SCHEMES[scheme]


def quantize_weight(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """``w`` [out, in] rounded to its group-wise absmax grid, same shape and dtype.

    Groups run along the input dimension; a last group shorter than ``group_size`` is its own
    group (zero padding does not change an absmax). An all-zero group stays zero."""
    codes, scale = _codes(w, bits, group_size)
    rows, cols = w.shape
    return (codes * scale).reshape(rows, -1)[:, :cols].to(w.dtype)


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """``w`` [out, in] in float64 as [out, groups, g], the last group zero-padded."""
    rows, cols = w.shape
    g = min(group_size, cols)
    return torch.nn.functional.pad(w.detach().double(), (0, (-cols) % g)).reshape(rows, -1, g)


def _codes(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer codes round(w / s) in [-qmax, qmax] of each group and its scale s (both float64,
    grouped as ``_groups``)."""
    qmax = 2 ** (bits - 1) - 1
    x = _groups(w, group_size)
    scale = x.abs().amax(-1, keepdim=True) / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(torch.round(x / safe), -qmax, qmax), scale


@torch.no_grad()
def quantize_model(model: torch.nn.Module, scheme: str = "int4",
                   group_size: int = DEFAULT_GROUP_SIZE) -> dict:
    """Quantize-dequantize every linear weight of ``model`` in place (the head excepted);
    return {"scheme", "bits", "group_size", "layers", "weights", "max_abs_change",
    "rel_change"} (rel_change: ||W_q - W|| / ||W|| over all quantized weights)."""
    bits = check_scheme(scheme, group_size)
    layers = n = 0
    max_change = diff2 = norm2 = 0.0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.split(".")[-1] in KEPT:
            continue
        w = module.weight
        q = quantize_weight(w, bits, group_size)
        d = (q.double() - w.double())
        max_change = max(max_change, float(d.abs().max()))
        diff2 += float((d ** 2).sum())
        norm2 += float((w.double() ** 2).sum())
        w.copy_(q)
        layers += 1
        n += w.numel()
    if layers == 0:
        raise QuantizeError("the model has no linear layers to quantize")
    return {"scheme": scheme, "bits": bits, "group_size": group_size, "layers": layers,
            "weights": n, "max_abs_change": max_change,
            "rel_change": (diff2 / norm2) ** 0.5 if norm2 else 0.0}


def _quantized_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.split(".")[-1] not in KEPT}


@torch.no_grad()
def grid_agreement(model: torch.nn.Module, reference: torch.nn.Module, scheme: str = "int4",
                   group_size: int = DEFAULT_GROUP_SIZE) -> dict:
    """How far ``model`` (an unlearned one) sits from ``reference`` (its target) on the quantization
    grid, over the weights ``quantize_model`` rounds: {"scheme", "group_size", "weights",
    "codes_equal": the fraction whose integer code round(w / s) is the reference's (each model
    with its own group scale, as quantizing each would give), "move_steps_median": the (lower)
    median of |w - w_ref| / s_ref, "under_half_step": the fraction moved by less than half the
    reference's step}. Where codes are equal the quantization attack gives back the target's
    value up to the difference of the two group scales; a move under half a step is what its
    paper's argument assumes of every weight. Layer by layer, in three passes (counts, a
    histogram, the median's bin), so memory stays one layer's, also on a 7B model."""
    bits = check_scheme(scheme, group_size)
    ours, theirs = _quantized_linears(model), _quantized_linears(reference)
    if ours.keys() != theirs.keys():
        raise QuantizeError("the two models have different linear layers; compare an unlearned model "
                            "with the target it was unlearned from")

    def layers(count_codes: bool = True):
        """(codes equal (0 unless ``count_codes``), |w - w_ref| / s_ref of the real weights) per layer."""
        for name, module in ours.items():
            w, ref = module.weight, theirs[name].weight
            if w.shape != ref.shape:
                raise QuantizeError(f"{name}: weight shapes differ ({tuple(w.shape)} vs {tuple(ref.shape)})")
            ref_codes, ref_scale = _codes(ref, bits, group_size)
            real = _groups(torch.ones_like(w), group_size).bool()  # not the zero padding
            equal = int((_codes(w, bits, group_size)[0] == ref_codes)[real].sum()) if count_codes else 0
            step = torch.where(ref_scale > 0, ref_scale, torch.ones_like(ref_scale))
            yield equal, ((_groups(w, group_size) - _groups(ref, group_size)).abs() / step)[real]

    equal = n = under = 0
    top = 0.0
    for eq, moves in layers():
        equal, n, under = equal + eq, n + moves.numel(), under + int((moves < 0.5).sum())
        top = max(top, float(moves.max())) if moves.numel() else top
    if n == 0:
        raise QuantizeError("the model has no linear layers to quantize")
    return {"scheme": scheme, "group_size": group_size, "weights": n, "codes_equal": equal / n,
            "move_steps_median": _lower_median(lambda: (m for _, m in layers(count_codes=False)), n, top),
            "under_half_step": under / n}


def _lower_median(chunks, n: int, top: float, bins: int = 4096) -> float:
    """The lower median (torch.median's) of the values ``chunks()`` yields (1-D, in [0, top], n in
    all), exactly, holding one chunk at a time: count the values per bin, then sort only the bin
    the median falls in."""
    if top == 0.0:
        return 0.0
    rank = (n - 1) // 2

    def bin_of(v):
        return torch.clamp(torch.floor(v * (bins / top)), 0, bins - 1).long()

    counts = torch.zeros(bins, dtype=torch.long)
    for v in chunks():
        counts += torch.bincount(bin_of(v).cpu(), minlength=bins)
    before = torch.cumsum(counts, 0) - counts
    k = int(torch.nonzero((before <= rank) & (rank < before + counts))[0])
    inside = torch.cat([v[bin_of(v) == k].cpu() for v in chunks()])
    return float(torch.sort(inside).values[rank - int(before[k])])
