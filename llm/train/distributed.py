"""Process groups and sharding for multi-process training under ``torchrun`` or ``accelerate launch``.

    torchrun --nproc-per-node 2 -m llm unlearn --model runs/target --forget forget10 ...
    torchrun --nproc-per-node 2 -m llm unlearn ... --strategy fsdp      # FSDP2: shard the model
    accelerate launch --config_file configs/fsdp.yaml -m llm unlearn ...  # same, through accelerate

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process and every
helper is a no-op. The backend is NCCL on GPUs and gloo on CPU. Two strategies: ``ddp`` keeps a
whole model, its gradients and AdamW state on every process (torch DDP); ``fsdp`` shards all three
over the processes with PyTorch's FSDP2 (``fully_shard`` on each decoder layer and on the root),
so each process holds 1/N of them plus the layer being computed.

In a training run (llm/train/loop.py), --strategy fsdp shards the model before anything runs on it: the
reference log-probs are computed once on the sharded model (all ranks take part), a live reference
is a second sharded copy, gradients are reduce-scattered once per optimizer step and clipped by the
norm of the whole gradient (squares summed over the shards in float64), evaluation runs on the
sharded model on every rank in lockstep, --resume reloads sharded checkpoints
(torch.distributed.checkpoint), and the final model is gathered once into one Hugging Face folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "STRATEGIES", "launched", "launch_hint", "default_strategy", "setup", "all_mean",
           "barrier", "teardown", "decoder_layers", "shard", "is_sharded", "reshard", "clip_grad_norm",
           "RankedStages"]

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False      # this setup() joined the group, so its teardown() leaves it

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True under torchrun / accelerate launch (they describe the process group in the environment)."""
    return "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def launch_hint(command: str) -> str:
    return (f"--strategy fsdp needs a process group: launch with torchrun --nproc-per-node N -m llm "
            f"{command} ... (or accelerate launch --config_file configs/fsdp.yaml -m llm {command} ...)")


def default_strategy() -> str:
    """fsdp when ``accelerate launch`` was given an FSDP config, else ddp."""
    return "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else "ddp"


def setup(device: str = "auto", group: bool = False, timeout_s: float | None = None) -> Dist:
    """Join the process group the launcher describes (if any) and pick this rank's device.

    ``group`` joins even a one-process launch (FSDP needs a group to shard over); ``timeout_s``
    bounds how long a rank waits for the others (the pipeline's ranks wait out rank 0's evaluations)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = (world > 1 or (group and launched())) and not dist.is_initialized()
    if owns:
        import datetime
        kw = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", **kw)
    return Dist(rank=rank, world=world, local_rank=local, device=dev, owns_group=owns)


def all_mean(values: list[float], d: Dist) -> list[float]:
    """Mean of each value over ranks (float64 on the wire)."""
    if d.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return (t / d.world).tolist()


def barrier(d: Dist | None = None) -> None:
    """Wait for every rank (``d`` None: whatever group this process has joined, if any)."""
    if (d.world > 1) if d is not None else (dist.is_initialized() and dist.get_world_size() > 1):
        dist.barrier()


def teardown(d: Dist) -> None:
    """Leave the group if ``d``'s setup joined it (a caller that joined first keeps it)."""
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# ---- FSDP2 ---------------------------------------------------------------------------------------

def decoder_layers(model) -> list[torch.nn.Module]:
    """The transformer blocks: modules whose class a Hugging Face model lists in _no_split_modules."""
    names = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(model, d: Dist, precision: str = "fp32", cpu_offload: bool = False):
    """FSDP2 in place: ``fully_shard`` each decoder layer, then the root (embeddings, norm, head).

    bf16-mixed computes and reduces gradients in bf16 while the sharded fp32 master weights and
    AdamW state stay fp32 (FSDP's MixedPrecisionPolicy; no autocast needed); ``cpu_offload`` keeps
    the sharded parameters, gradients and optimizer state in CPU memory."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(d.device.type, (dist.get_world_size(),))
    kw = {"mesh": mesh}
    if precision == "bf16-mixed":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
    if cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy()
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} lists no decoder layers (_no_split_modules) to shard")
    for layer in layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    return model


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def reshard(model) -> None:
    """Put every FSDP2 module of ``model`` back in its sharded state, parameters as DTensor shards.

    Why: FSDP2 does not reshard the root after its forward (backward would gather it again at
    once), so a forward without a backward (the reference pass under no_grad, an evaluation) leaves
    the root's parameters (embeddings, final norm, head) registered as plain unsharded tensors until
    the next backward. Whatever collects ``model.parameters()`` in that state (the optimizer, the
    gradient clip) holds tensors whose gradients FSDP never fills: those weights silently stop
    training and drop out of the clipped norm. Collect parameters only after this call."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
    plain = [n for n, p in model.named_parameters() if not isinstance(p, DTensor)]
    if plain:  # an invariant, not a user error: FSDP owns every parameter once sharded
        raise RuntimeError(f"FSDP left {len(plain)} parameters unsharded after reshard(), e.g. {plain[0]}")


def clip_grad_norm(params, max_norm: float) -> float:
    """The L2 norm of all of ``params``' gradients (logged as grad_norm); with ``max_norm`` > 0 the
    gradients are then scaled as torch.nn.utils.clip_grad_norm_ does (by max_norm / (norm + 1e-6)
    when that is below 1).

    The sum of squares is taken in float64: in float32 its rounding depends on the order of the
    sum, which differs between one process and FSDP's shards (3e-6 apart at identical gradients
    on the tiny model), and the clip carried that into every update. FSDP2 gradients are DTensor
    shards: each rank sums its own shards and an all-reduce adds the ranks, so every rank clips by
    the norm of the whole gradient. DDP gradients are already averaged: each rank's own copy."""
    from torch.distributed.tensor import DTensor
    grads = [p.grad for p in params if p.grad is not None]
    squares, mesh = [], None
    for g in grads:
        if isinstance(g, DTensor):
            mesh, g = g.device_mesh, g.to_local()
        for part in g.detach().reshape(-1).split(1 << 24):  # bounds the float64 copy to 128 MB
            squares.append(torch.linalg.vector_norm(part, dtype=torch.float64).square())
    total = torch.stack(squares).sum() if squares else torch.zeros((), dtype=torch.float64)
    if mesh is not None:
        total = total.to(mesh.device_type)
        dist.all_reduce(total, group=mesh.get_group())
    norm = float(total) ** 0.5
    coef = max_norm / (norm + 1e-6)
    if max_norm > 0 and not coef >= 1.0:  # a NaN norm scales by NaN, as torch's clip does
        for g in grads:
            g.mul_(coef)
    return norm


# ---- multi-stage programs (the pipeline) -------------------------------------------------------

def _broadcast(obj=None):
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class RankedStages:
    """A stage runner (infra.stages.Stages: ``run(name, config, inputs, fn, code) -> dict``) for a
    launched process group.

    Rank 0 runs it as usual (it decides skip or run, writes the folder and the marker); the other
    ranks learn the outcome by broadcast and run ``fn`` themselves only for ``collective`` stages,
    i.e. training, whose FSDP/DDP steps need every rank. One process: the runner unchanged."""

    def __init__(self, stages):
        self.stages = stages

    def run(self, name: str, config: dict, inputs: list, fn, code=None, collective: bool = False) -> dict:
        code = fn if code is None else code  # hash the stage's own code, not the wrapper below
        if not (dist.is_initialized() and dist.get_world_size() > 1):
            return self.stages.run(name, config, inputs, fn, code=code)
        if dist.get_rank() == 0:
            def announced(path):
                _broadcast(("run", path))
                return fn(path)
            result = self.stages.run(name, config, inputs, announced, code=code)
            _broadcast(("done", result))
            return result
        message = _broadcast()
        if message[0] == "run":
            if collective:
                fn(message[1])
            message = _broadcast()
        return message[1]
