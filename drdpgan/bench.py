"""Micro-benchmarks. ``python -m drdpgan.bench render --sizes 32 64 128``.

Rendering speed of the synthetic face world (images per second, batched, CPU). The number
depends on how busy the machine is: on a shared box other processes inflate every torch op;
``--threads 1`` is often faster than 2 when the cores are contended.
"""

from __future__ import annotations

import argparse
import time

import torch


def benchmark_render(size: int = 64, n_images: int = 512, batch_size: int = 128, seed: int = 0,
                     warmup: bool = True, repeats: int = 1, config=None, clock: str = "wall") -> float:
    """Images per second rendering ``n_images`` distinct items of a default world at ``size`` px.

    Items are ``(identity i % 1000, sample i)``; batches of ``batch_size`` go through
    :meth:`FaceWorld.render`. One small warm-up batch is not timed. With ``repeats > 1`` the
    best of the repeats is returned (least disturbed by other processes).
    ``clock="cpu"`` divides by this process's CPU time instead of wall time: with one torch
    thread that is the speed on an otherwise idle core, whatever else the machine is doing.
    """
    timer = time.process_time if clock == "cpu" else time.perf_counter
    from .data.world import FaceWorld, WorldConfig

    world = FaceWorld(config or WorldConfig(seed=seed))
    idx = torch.arange(n_images)
    ids, smp = idx % min(1000, world.config.n_identities), idx
    if warmup:
        world.render(ids[: min(8, n_images)], smp[: min(8, n_images)], size)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = timer()
        for s in range(0, n_images, batch_size):
            world.render(ids[s:s + batch_size], smp[s:s + batch_size], size)
        best = min(best, timer() - t0)
    return n_images / best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m drdpgan.bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="synthetic face world rendering speed")
    r.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    r.add_argument("--n-images", type=int, default=512)
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--repeats", type=int, default=2)
    r.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    r.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or process CPU time (= idle-core speed with --threads 1)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cmd == "render":
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{args.n_images} images, batch {args.batch_size}, best of {args.repeats}, {args.clock} clock")
        for size in args.sizes:
            ips = benchmark_render(size, args.n_images, args.batch_size, repeats=args.repeats, clock=args.clock)
            print(f"render {size:4d} px: {ips:8.1f} images/s")


if __name__ == "__main__":
    main()
