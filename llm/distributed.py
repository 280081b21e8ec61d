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
           "barrier", "teardown", "decoder_layers", "shard", "is_sharded", "to_float"]

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

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


def setup(device: str = "auto", group: bool = False) -> Dist:
    """Join the process group the launcher describes (if any) and pick this rank's device.

    ``group`` joins even a one-process launch (FSDP needs a group to shard over)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if (world > 1 or (group and launched())) and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=rank, world=world, local_rank=local, device=dev)


def all_mean(values: list[float], d: Dist) -> list[float]:
    """Mean of each value over ranks (float64 on the wire)."""
    if d.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return (t / d.world).tolist()


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def teardown(d: Dist) -> None:
    if dist.is_initialized():
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
