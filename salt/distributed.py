"""This process's place in a ``torchrun`` job: the process group, its device, and decisions
every rank takes together."""

from __future__ import annotations

import os

import attrs
import torch
import torch.distributed as dist


@attrs.frozen
class DistInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_spec: str) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device_spec != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(
            f"train.device {spec!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "train.device asks for CUDA but torch sees no GPU; run `salt doctor` to see why, "
                "or pass --device cpu"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def agree(finite: torch.Tensor, stop: bool, info: DistInfo) -> tuple[bool, bool]:
    """``(finite on every rank, stop asked on any rank)`` for one optimizer step, with one
    host-device synchronisation (and, under torchrun, one all-reduce). ``finite`` is a
    0-dim bool tensor on the step's device; ``stop`` whether this process got a signal."""
    flags = torch.stack([~finite, torch.zeros_like(finite) | stop]).to(torch.int32)
    if info.enabled:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    bad, stop_any = flags.tolist()  # the step's one synchronisation
    return not bad, bool(stop_any)


def leave_process_group() -> int:
    """Leave the ``torchrun`` process group if this process joined one; its rank (0 alone)."""
    if not dist.is_initialized():
        return 0
    rank = dist.get_rank()
    dist.destroy_process_group()
    return rank


def agreed(info: DistInfo, decide):
    """``decide()`` on rank 0 alone; every process gets its result, or its error (the other
    ranks as a RuntimeError naming rank 0), so no rank waits for one that failed."""
    if not info.enabled:
        return decide()
    from salt.io import first_line

    box: list = [None]
    if info.main:
        try:
            box[0] = decide()
        except Exception as err:  # every rank must hear of it, or the others wait forever
            box[0] = err
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], Exception):
        if info.main:
            raise box[0]
        raise RuntimeError(f"stopped on rank 0: {first_line(box[0])}")
    return box[0]
