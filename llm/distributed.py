"""Process groups and sharding for multi-process training under ``torchrun`` or ``accelerate launch``.

    torchrun --nproc-per-node 2 -m llm unlearn --model runs/target --forget forget10 ...
    torchrun --nproc-per-node 2 -m llm unlearn ... --strategy fsdp      # FSDP2: shard the model
    accelerate launch --config_file configs/fsdp.yaml -m llm unlearn ...  # same, through accelerate

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process and every
helper is a no-op. The backend is NCCL on GPUs and gloo on CPU. Two strategies: ``ddp`` keeps a
whole model, its gradients and AdamW state on every process (torch DDP); ``fsdp`` shards all three
over the processes with PyTorch's FSDP2 (``fully_shard`` on each decoder layer and on the root),
so each process holds 1/N of them plus the layer being computed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "STRATEGIES", "launched", "launch_hint", "default_strategy", "setup", "all_mean",
           "barrier", "teardown", "decoder_layers", "shard", "is_sharded", "to_float",
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


def to_float(t) -> float:
    """A scalar tensor or DTensor (FSDP's clipped grad norm) as a Python float."""
    return float(t.full_tensor() if hasattr(t, "full_tensor") else t)


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
