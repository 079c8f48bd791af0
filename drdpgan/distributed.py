"""Data-parallel training under ``torchrun`` (issue 18): one global batch split over the processes.

    torchrun --nproc_per_node=2 -m drdpgan.pretrain drdpgan --profile cpu       (gloo on CPUs, nccl on GPUs)
    torchrun --nproc_per_node=2 -m drdpgan.pretrain stylegan2 --profile cpu
    torchrun --nproc_per_node=2 -m drdpgan.pretrain identity --profile cpu     (and evaluator, prior3d)

Every process builds the same networks from the same seeds, reads the same global batch of the sampler and
keeps its own contiguous rows of it (:func:`shard_rows`); the per-sample random draws are made for the whole
global batch and sliced the same way (DR-DPGAN: fake identity noise, carrier bits, Eq. 13 noise, in
:func:`drdpgan.objective.generator_objective`; StyleGAN2: latents, and through :func:`draw_rows` its noise inputs
and DiffAugment; the priors' loop: flips and shifts, through :func:`draw_rows`).
After each backward pass the gradients are averaged over the processes (:func:`average_gradients`, one
flattened all-reduce per optimiser), so every process takes the same optimiser step: with equal shards the
average of the shards' mean losses is the global batch's mean loss, and the step is the single-process step
up to the batch statistics of the layers that look across a batch (E_P's BatchNorm, C's minibatch standard
deviation), which see the shard. The learning rates of Sec. 4.1.2 therefore stay those of the configured global
batch, whatever the number of processes, and a checkpoint (written by rank 0; the sampler position is counted
in global batches) resumes under any world size that divides the batch.

Why not the ``DistributedDataParallel`` wrapper: its gradient hooks are armed by the wrapper's own
``forward``, and one DR-DPGAN step calls the networks through several methods and passes (anonymize,
cover, recover, E_P, the judges); NVIDIA's StyleGAN2-ADA / StyleGAN3 training loops average gradients
with one all-reduce for the same reason. Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment)
everything here is the identity and costs nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "world_size", "rank", "is_main", "shard_rows", "average_gradients",
           "average_scalars", "broadcast_parameters", "barrier", "shutdown", "main_first", "sharded_draws", "draw_rows"]

#: (global batch, this process's rows) while :func:`sharded_draws` is active
_SHARD: ContextVar[tuple[int, slice] | None] = ContextVar("drdpgan_shard", default=None)


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment): gloo on the CPU,
    nccl on CUDA (each process on ``cuda:LOCAL_RANK``). Returns True when running distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the one that logs, evaluates and writes checkpoints."""
    return rank() == 0


def shard_rows(global_batch: int) -> slice:
    """This process's contiguous rows of a global batch of ``global_batch`` samples (all of them alone).

    Raises ``ValueError`` when the world size does not divide the batch: unequal shards would weigh samples
    unequally in the averaged gradient."""
    w = world_size()
    if global_batch % w:
        raise ValueError(f"the global batch of {global_batch} does not split over {w} processes; "
                         f"use a world size that divides it")
    n = global_batch // w
    return slice(rank() * n, (rank() + 1) * n)


def _flat_all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over the processes, in place (one all-reduce); a parameter with no gradient on this
    process counts as zero, so every process agrees on which tensors take part."""
    if world_size() == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if params:
        _flat_all_reduce_mean([p.grad for p in params])


def average_scalars(values: Mapping[str, float]) -> dict[str, float]:
    """The mean over the processes of each logged number (every process must pass the same keys; NaN stays NaN)."""
    if world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_parameters(*modules: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process (after building or loading, so the replicas agree)."""
    if world_size() == 1:
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group at the end of a run: a barrier, so that no process tears its gloo communicator down
    while a peer is still inside a collective or still writing (rank 0 writes last), then
    ``destroy_process_group``. A no-op outside torchrun. (A worker that skipped both aborted once in the tests with
    "terminate called without an active exception"; torch also warns about a group never destroyed.)"""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (building caches, recording provenance); the others run it after, reading
    what rank 0 wrote."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


@contextlib.contextmanager
def sharded_draws(global_batch: int, rows: slice | None) -> Iterator[None]:
    """Inside, :func:`draw_rows` makes per-sample random draws for the whole ``global_batch`` and keeps ``rows``
    (the StyleGAN2 trainer's noise inputs and DiffAugment parameters); ``rows=None`` changes nothing."""
    token = _SHARD.set(None if rows is None else (global_batch, rows))
    try:
        yield
    finally:
        _SHARD.reset(token)


def draw_rows(draw: Callable[[int], torch.Tensor], batch: int) -> torch.Tensor:
    """``draw(n)`` makes a per-sample draw of ``n`` rows from an explicit generator; returns this process's
    ``batch`` rows of the global batch's draw inside :func:`sharded_draws`, else ``draw(batch)``."""
    shard = _SHARD.get()
    if shard is None:
        return draw(batch)
    n, rows = shard
    if rows.stop - rows.start != batch:
        raise ValueError(f"a shard of {rows.stop - rows.start} rows, drawing for {batch}")
    return draw(n)[rows]
