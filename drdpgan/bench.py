"""Micro-benchmarks. ``python -m drdpgan.bench render --sizes 32 64 128``;
``python -m drdpgan.bench drdpgan --profile cpu`` writes ``reports/<profile>/bench.json``;
``python -m drdpgan.bench stylegan2-train`` times a StyleGAN2 training step in fp32 and bf16.

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


def profile_model(profile: str, resolution: int, seed: int = 0):
    """An untrained DR-DPGAN with the network sizes of ``profile`` (notebooks 02-04) at ``resolution``.

    Throughput does not depend on the weights, so nothing is trained or loaded."""
    from . import stages
    from .models.drdpgan import assemble
    from .models.identity import IdentityEncoder
    from .models.prior3d import Prior3DRegressor
    from .models.stylegan2 import StyleGAN2Generator
    from .notebook_params import identity_encoder_config, prior3d_config, stylegan2_config

    p = {stem: stages.notebook_params(stem, profile) for stem in ("01_data", "02_identity_encoder", "03_prior3d",
                                                                   "04_stylegan2")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = StyleGAN2Generator(stylegan2_config(p["01_data"], p["04_stylegan2"], resolution))
        enc = IdentityEncoder(identity_encoder_config(p["02_identity_encoder"]))
        return assemble(g, enc, Prior3DRegressor(prior3d_config(p["03_prior3d"]))).eval()


def _images_per_s(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return len(x) / best


def benchmark_drdpgan(profile: str, sizes=(64, 128), batches=(1, 32), train_batch: int = 8, repeats: int = 2,
                      train_steps: int = 2) -> dict:
    """Anonymize / recover throughput (images/s, best of ``repeats`` after a warm-up) at each size and
    batch, training steps/s (median, :func:`drdpgan.train_drdpgan.time_training_step`, fp32) at each size with
    its FLOPs (:func:`training_step_flops`) as a fraction of the measured fp32 matmul peak (:func:`matmul_peak`,
    the bf16 peak beside it), and the peak resident memory of this process (MiB), for the network sizes of
    ``profile``."""
    import os
    import platform
    import resource

    from .train_drdpgan import time_training_step

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for size in sizes:
        model = profile_model(profile, size)
        for b in batches:
            x = torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
            with torch.no_grad():
                anon = model.anonymize(x, seed=0)["images"]
                a_ips = _images_per_s(lambda v: model.anonymize(v, seed=0), x, repeats)
                r_ips = _images_per_s(lambda v: model.recover(v), anon, repeats)
            rows.append({"size": size, "batch": b, "anonymize_images_per_s": a_ips, "recover_images_per_s": r_ips})
        sec = time_training_step(model, batch_size=train_batch, n_steps=train_steps)
        flops = training_step_flops(model, train_batch)
        rows.append({"size": size, "batch": train_batch, "train_steps_per_s": 1.0 / sec, "train_sec_per_step": sec,
                     "train_images_per_s": train_batch / sec, "train_gflop_per_step": flops / 1e9,
                     "train_gflop_per_s": flops / sec / 1e9,
                     "train_fraction_of_fp32_matmul_peak": flops / sec / peaks["fp32"]})
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"profile": profile, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
            "matmul_peak_gflop_per_s": {k: v / 1e9 for k, v in peaks.items()},
            "results": rows, "peak_rss_mib": peak_kib / 1024.0}


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 3) -> float:
    """This machine's measured matmul speed (FLOP/s, best of ``repeats`` after a warm-up) for ``n x n`` matrices
    in ``dtype`` at the current thread count: the ceiling a training step's speed is compared with."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def training_step_flops(model, batch_size: int = 8, cfg=None, seed: int = 0) -> float:
    """FLOPs of one DR-DPGAN training step (generator side, judges, all backward passes; a joint step without the
    lazy R1, which 1 step in ``r1_every`` adds and which the counter cannot follow through ``autograd.grad``),
    counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions, the operations that
    dominate), on a copy of ``model``."""
    from torch.utils.flop_counter import FlopCounterMode

    from .train_drdpgan import _train_step, step_harness

    with torch.random.fork_rng(devices=[]):
        m, C, critic, opts, x, cfg = step_harness(model, batch_size, cfg, seed)
        counter = FlopCounterMode(display=False)
        with counter:
            _train_step(m, C, critic, opts, x, cfg, 1, m.cfg.extractor_noise_sigma, float(cfg.r1_gamma))
    return float(counter.get_total_flops())


def benchmark_generator(resolution: int, w_dim: int, channel_max: int, batch_size: int = 8, repeats: int = 3) -> float:
    """CPU milliseconds per image of a StyleGAN2 generator forward pass (z -> image), best of
    ``repeats`` after a warm-up; process CPU time, so with one thread it is the idle-core cost."""
    from .models.stylegan2 import StyleGAN2Config, StyleGAN2Generator

    G = StyleGAN2Generator(StyleGAN2Config(resolution=resolution, z_dim=w_dim, w_dim=w_dim,
                                           channel_max=channel_max)).eval()
    z = torch.randn(batch_size, w_dim, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.no_grad():
        G(z)
        for _ in range(max(1, repeats)):
            t0 = time.process_time()
            G(z)
            best = min(best, time.process_time() - t0)
    return 1000.0 * best / batch_size


def benchmark_stylegan2_train(precision: str = "fp32", resolution: int = 64, width: int = 128, batch_size: int = 16,
                              steps: int = 16) -> float:
    """Wall seconds per StyleGAN2 training step (G step, D step, one lazy R1 step per 16, EMA) under
    ``precision`` ("fp32" | "bf16"), measured over ``steps`` steps after ``steps + 1`` warm-up steps,
    with the trainer itself on a few rendered world faces (speed does not depend on the images)."""
    import csv
    import tempfile
    from pathlib import Path

    from .data.datasets import SyntheticFaceDataset
    from .data.world import WorldConfig
    from .models.stylegan2 import StyleGAN2Config
    from .train_stylegan2 import TrainConfig, train_stylegan2

    gcfg = StyleGAN2Config(resolution=resolution, z_dim=width, w_dim=width, channel_max=width)
    tcfg = TrainConfig(steps=2 * steps + 1, batch_size=batch_size, log_every=steps, sample_every=0,
                       checkpoint_every=0, metric_every=-1, seed=0, precision=precision)
    with tempfile.TemporaryDirectory() as out:
        faces = SyntheticFaceDataset(WorldConfig(seed=0, image_size=resolution), range(max(8, batch_size // 2)), 8,
                                     progress=False)
        train_stylegan2(faces, gcfg, tcfg, out, progress=False)
        with open(Path(out) / "losses.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    return float(rows[1]["sec_per_step"])


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
    g = sub.add_parser("generator", help="StyleGAN2 forward CPU-ms per image (1 thread by default)")
    g.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    g.add_argument("--widths", type=int, nargs="+", default=[128, 512], help="w_dim = channel_max values")
    g.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("stylegan2-train", help="StyleGAN2 training step, fp32 vs bf16 autocast")
    t.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    t.add_argument("--size", type=int, default=64)
    t.add_argument("--width", type=int, default=128, help="w_dim = channel_max (the cpu profile's 128)")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--steps", type=int, default=16, help="timed steps (after as many warm-up steps)")
    t.add_argument("--threads", type=int, default=None)
    d = sub.add_parser("drdpgan", help="anonymize/recover throughput, training speed, peak memory -> bench.json")
    d.add_argument("--profile", default="cpu")
    d.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    d.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    d.add_argument("--repeats", type=int, default=2)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--out", default=None, help="default: reports/<profile>/bench.json")
    args = ap.parse_args(argv)
    if args.cmd == "generator":
        torch.set_num_threads(args.threads)
        for size in args.sizes:
            for w in args.widths:
                ms = benchmark_generator(size, w, w)
                print(f"StyleGAN2 {size} px, w_dim = channel_max = {w}: {ms:.1f} CPU-ms per image "
                      f"(batch 8, {args.threads} thread(s))")
        return
    if args.cmd == "stylegan2-train":
        if args.threads:
            torch.set_num_threads(args.threads)
        for prec in args.precisions:
            sec = benchmark_stylegan2_train(prec, args.size, args.width, args.batch_size, args.steps)
            print(f"StyleGAN2 training step, {args.size} px, width {args.width}, batch {args.batch_size}, {prec}, "
                  f"{torch.get_num_threads()} thread(s): {sec:.3f} s/step ({args.batch_size / sec:.1f} images/s)")
        return
    if args.cmd == "drdpgan":
        import json

        from .repro import atomic_write_json, reports_dir

        if args.threads:
            torch.set_num_threads(args.threads)
        res = benchmark_drdpgan(args.profile, tuple(args.sizes), tuple(args.batches), repeats=args.repeats)
        out = args.out or reports_dir(args.profile) / "bench.json"
        atomic_write_json(out, res)
        print(json.dumps(res, indent=1))
        print(f"written to {out}")
        return
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
