"""torchrun support: process-group setup, and gathering embeddings across ranks with gradients.

The FNAC losses compare every pair of a batch (contrastive negatives, FNS/TNE adjacencies), so under data
parallelism each rank gathers v and a from all ranks and computes the loss on the GLOBAL batch. The official
code does not (each GPU sees only its local batch); this is the documented deviation in docs/METHOD.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from fnac.errors import FnacError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class DeviceError(FnacError, ValueError):
    """The device asked for is not there."""


def resolve_device(name: str | None) -> str:
    """ "cpu" or "cuda" for `name` ("cpu", "cuda", or "auto"/None: CUDA when torch sees it). Asking for CUDA
    where torch sees none is a DeviceError, never a silent CPU run."""
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for, but torch sees no CUDA device")
    return name


def setup(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on GPU).

    Without torchrun's variables (or with WORLD_SIZE=1) this is a single process and nothing is initialised.
    `device`: "cpu", "cuda" or None (CUDA when available).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=timedelta(minutes=30),  # rank 0 writes checkpoints while the others wait
            **({"device_id": dev} if use_cuda else {}),
        )
    return DistInfo(rank, world_size, local_rank, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's local batch size (they may differ when samples fail to decode)."""
    if not dist.is_initialized():
        return [n]
    local = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands every rank the SUM over ranks of the gradient for its own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([g.contiguous() for g in grads])  # [W, n, ...]
        if dist.get_backend() == "nccl":
            mine = torch.empty_like(stacked[0])
            dist.reduce_scatter_tensor(mine, stacked)
            return mine
        dist.all_reduce(stacked)  # gloo has no reduce_scatter
        return stacked[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate `x` [n_r, ...] of every rank r along dim 0, in rank order, keeping gradients.

    Backward sums the incoming gradients across ranks, so with every rank computing the same global loss and
    DDP averaging parameter gradients, the update equals a single process's update on the concatenated batch.
    Unequal sizes (samples that failed to decode) are padded and stripped.
    """
    if not dist.is_initialized() or len(sizes) == 1:
        return x
    largest = max(sizes)
    if x.shape[0] < largest:
        x = torch.cat([x, x.new_zeros((largest - x.shape[0], *x.shape[1:]))])
    parts = _GatherWithGrad.apply(x)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


def all_gather_objects(obj):
    """List of `obj` from every rank (picklable objects), in rank order."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
