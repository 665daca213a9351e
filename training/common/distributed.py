"""Multi-process training under `torchrun`: process-group set-up and teardown from its env vars, the
backend (nccl on CUDA, gloo on CPU), batch sharding, gradient and result reduction, rank-0-only writes.
Outside torchrun (or with WORLD_SIZE=1) every helper is a no-op and training runs exactly as one process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from training.common.device import resolve_device
from training.common.errors import ConfigError, LLMRecError

log = logging.getLogger(__name__)

TIMEOUT = timedelta(minutes=30)  # a rank stuck longer than this in a collective fails instead of hanging


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run and the device it computes on."""

    rank: int
    world: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank: from the process group, else torchrun's RANK, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def is_main() -> bool:
    """True on the one process that logs, shows progress and writes files."""
    return rank() == 0


def _rank_device(device: str, world: int, local_rank: int) -> str:
    resolved = resolve_device(device)
    if world == 1 or resolved == "cpu":
        return resolved
    if resolved != "cuda":
        raise ConfigError(
            f"--device {device!r} under torchrun: pass cuda or auto; each rank uses cuda:LOCAL_RANK"
        )
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices here")
    return f"cuda:{local_rank}"


def _init_group(device: str, world: int, this_rank: int) -> None:
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} unset; launch with torchrun")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, init_method="env://", world_size=world, rank=this_rank, timeout=TIMEOUT)
    log.info("rank %d/%d joined the %s process group on %s", this_rank, world, backend, device)


@contextmanager
def session(device: str) -> Iterator[DistInfo]:
    """Join torchrun's process group (if WORLD_SIZE > 1 and none is joined yet) for the duration; yields
    this rank and its device. Ranks other than 0 log warnings only. Leaves a group it did not create."""
    world, this_rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", this_rank)
    if dist.is_available() and dist.is_initialized():
        world, this_rank = dist.get_world_size(), dist.get_rank()
    elif world < 1 or not 0 <= this_rank < world:
        raise ConfigError(f"RANK={this_rank} and WORLD_SIZE={world} are inconsistent")
    info = DistInfo(this_rank, world, local_rank, _rank_device(device, world, local_rank))
    created = world > 1 and not dist.is_initialized()
    if created:
        _init_group(info.device, world, this_rank)
    quiet = logging.getLogger("training")
    level = quiet.level
    if not info.is_main:
        quiet.setLevel(logging.WARNING)
    try:
        yield info
    finally:
        quiet.setLevel(level)
        if created:
            dist.destroy_process_group()


def shard_sizes(n: int, world: int | None = None) -> list[int]:
    """Rows of a global batch of n per rank (contiguous, in rank order); the first n % world get one more."""
    world = world_size() if world is None else world
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def shard(n: int) -> slice:
    """This rank's contiguous rows of a global batch of n."""
    sizes = shard_sizes(n)
    start = sum(sizes[: rank()])
    return slice(start, start + sizes[rank()])


def rank_seed(seed: int) -> int:
    """A seed for this rank's own randomness (e.g. dropout): `seed` itself on one process."""
    if world_size() == 1:
        return seed
    return int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])


def _comm_device(fallback: torch.device) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return fallback if fallback.type == "cpu" else torch.device("cpu")


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so replicas start identical by construction."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def all_reduce_grads(
    params: Sequence[nn.Parameter], extra: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Sum the gradients (and `extra`, e.g. loss shares) over ranks in one collective. Each rank's loss
    must be its share of the global-batch loss, so the sum is the one-process gradient. A parameter
    without a gradient on every rank keeps none (Adam then skips it, as on one process)."""
    if world_size() == 1:
        return extra
    device = params[0].device
    flags = torch.tensor([p.grad is not None for p in params], dtype=params[0].dtype, device=device)
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    tail = [] if extra is None else [extra.detach().reshape(-1).to(device, params[0].dtype)]
    flat = torch.cat([*grads, flags, *tail])
    reduced = flat.to(_comm_device(device))
    dist.all_reduce(reduced)
    flat = reduced.to(device)
    n_grads = sum(g.numel() for g in grads)
    offset = 0
    for p, present in zip(params, flat[n_grads : n_grads + len(params)].tolist(), strict=True):
        p.grad = flat[offset : offset + p.numel()].view_as(p) if present else None
        offset += p.numel()
    return None if extra is None else flat[n_grads + len(params) :].view_as(extra).to(extra.dtype)


def gather_with_grad(x: torch.Tensor, n: int) -> torch.Tensor:
    """(n, ...) rows of every rank in rank order; this rank's rows keep their autograd graph, the others
    are constants. A loss over all rows, backpropagated on each rank and summed, gives the full gradient."""
    if world_size() == 1:
        return x
    sizes, width = shard_sizes(n), max(shard_sizes(n))
    comm = _comm_device(x.device)
    padded = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=comm)
    padded[: len(x)] = x.detach().to(comm)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    rows = [p[:s].to(x.device) for p, s in zip(parts, sizes, strict=True)]
    rows[rank()] = x
    return torch.cat(rows)


def all_gather_rows(local: np.ndarray, n: int) -> np.ndarray:
    """Every rank's rows of a global batch of n (each rank holds its `shard(n)`), on every rank."""
    if world_size() == 1:
        return local
    return gather_with_grad(torch.from_numpy(np.ascontiguousarray(local)), n).numpy()


def all_reduce_array(array: np.ndarray) -> np.ndarray:
    """Element-wise sum over ranks (exact when each element is non-zero on at most one rank)."""
    if world_size() == 1:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_comm_device(torch.device("cpu")))
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any (e.g. a time budget one rank's clock ran past)."""
    if world_size() == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=_comm_device(torch.device("cpu")))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def on_main(write: Callable[[], None]) -> None:
    """Run `write` on rank 0 only; every rank returns once it is done, and every rank raises if it failed."""
    error: Exception | None = None
    if is_main():
        try:
            write()
        except Exception as err:  # re-raised below, after the other ranks have been told
            error = err
    failed = any_rank(error is not None)
    if error is not None:
        raise error
    if failed:
        raise LLMRecError("rank 0 failed to write its output; see its error")
