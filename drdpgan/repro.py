"""Reproducibility plumbing: seeds, deterministic kernels, project paths, atomic writes, artifact cache.

Everything that makes two runs of a notebook print the same checked numbers lives here,
so notebooks only call :func:`seed_everything` and :class:`ArtifactCache`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

# --------------------------------------------------------------------------- paths


def project_root() -> Path:
    """The checkout's root: the folder holding ``pyproject.toml`` above this package.

    ``DRDPGAN_ROOT`` overrides it (for an installed package used outside a checkout).
    """
    env = os.environ.get("DRDPGAN_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent
    for cand in (here, *here.parents):
        if (cand / "pyproject.toml").is_file() and (cand / "drdpgan").is_dir():
            return cand
    # Installed without a checkout: work in the current folder.
    return Path.cwd().resolve()


@contextlib.contextmanager
def temporary_environ(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by kernels and subprocesses) for the block, then restore them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def artifacts_root() -> Path:
    """``artifacts/``: the ignored cache of generated data and trained networks.

    ``DRDPGAN_ARTIFACTS`` overrides it: the notebook-metric test runs the smoke pipeline in a
    fresh cache of its own, so that every number in it is trained under the test's settings."""
    env = os.environ.get("DRDPGAN_ARTIFACTS")
    return Path(env).resolve() if env else project_root() / "artifacts"


def artifacts_dir(profile: str) -> Path:
    """``artifacts/<profile>/``: the cache of one profile (see :func:`artifacts_root`)."""
    return artifacts_root() / profile


def reports_dir(profile: str) -> Path:
    """``reports/<profile>/``: executed notebooks, tables, figures, metrics of a pipeline run."""
    return project_root() / "reports" / profile


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (present on the project's machines, optional elsewhere)."""
    return project_root().parent / "shared" / "data"


# --------------------------------------------------------------------------- determinism


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; switch torch to deterministic algorithms.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants an explicit one.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def make_generator(seed: int) -> torch.Generator:
    """An explicit CPU ``torch.Generator`` seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def step_seed(seed: int, step: int, stream: int) -> int:
    """A distinct non-negative 63-bit seed per (run seed, step, stream), a function of those alone (so a resumed
    run draws what an uninterrupted one would). DR-DPGAN's training (:mod:`drdpgan.objective`): 0 fake identity,
    1 Eq. 13 noise, 2 dropout, 3 a keyed model's carrier bits, 4 the sharing distortion; StyleGAN2's
    (:mod:`drdpgan.train_stylegan2`): 5 the mirrored reals."""
    h = hashlib.sha256(f"drdpgan-train/{seed}/{step}/{stream}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------- precision


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 autocast runs on bf16 hardware on this machine's ``device_type``: a CUDA GPU that
    supports it, or a CPU whose flags (Linux ``/proc/cpuinfo``) include ``avx512_bf16`` or ``amx_bf16``.
    Without them torch emulates bf16 arithmetic, slower than fp32 by far: a DR-DPGAN pretraining step
    (batch 8, 2 threads) took 82 s in bf16 against 3.0 s in fp32 on an AVX2 AMD EPYC, while on the
    AVX-512 BF16 EPYC of earlier sessions bf16 was the faster (1.05 against 1.65 s/step)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    flags = _cpuinfo()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpuinfo() -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of this machine's first CPU from Linux ``/proc/cpuinfo`` (``("", {})`` elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", frozenset()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return (model.group(1).strip() if model else ""), frozenset(flags.group(1).split() if flags else ())


#: The CPU features that change which kernels torch and oneDNN run (and so the last digits of a trained number).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_setting() -> dict[str, Any]:
    """What decides the arithmetic of a CPU run here: the CPU model, its kernel-relevant flags, torch's
    thread count and version, and the environment variables that cap the kernels' instruction set."""
    model, flags = _cpuinfo()
    return {"cpu": model or platform.processor() or platform.machine(),
            "flags": [f for f in KERNEL_FLAGS if f in flags],
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            **{v: os.environ.get(v, "") for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")}}


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """A trainer's ``precision`` setting as the arithmetic it runs: ``"fp32"`` and ``"bf16"`` as given,
    ``"auto"`` bf16 where :func:`bf16_is_fast` on ``device``, else fp32 (the pretraining recipes' setting:
    the same recipe runs at the faster one on each machine, and ``provenance.jsonl`` records which)."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(torch.device(device).type) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    return precision


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A reader never sees a half-written file, and a crash leaves the old file intact. The file gets
    the permissions of a plainly created one (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, numpy and torch scalars -> plain JSON types."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    return obj


def config_hash(config: Any, length: int = 12) -> str:
    """A stable short hash of a JSON-able config (dict order does not matter)."""
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


# --------------------------------------------------------------------------- artifact cache


def force_rebuild_requested() -> bool:
    """True when the pipeline runner was called with ``--force`` (``DRDPGAN_FORCE`` set to a run token)."""
    return os.environ.get("DRDPGAN_FORCE", "") not in ("", "0", "false", "False")


def force_token() -> str:
    """The token of the current forced run: artifacts built under it are fresh, not rebuilt again."""
    return os.environ.get("DRDPGAN_FORCE", "") if force_rebuild_requested() else ""


class ArtifactCache:
    """Generated data and trained networks under ``artifacts/<profile>/<name>-<confighash>/``.

    ``get(name, config, build)`` returns the folder of a finished artifact, building it first
    when it is missing (or when ``--force`` was given to the runner). ``build(tmpdir)`` writes
    its files into a fresh temporary folder; only when it returns is that folder renamed into
    place next to a ``config.json``, so an interrupted build never leaves a half artifact that
    a later run would trust.
    """

    def __init__(self, profile: str, root: str | os.PathLike | None = None):
        self.profile = profile
        self.root = Path(root) if root is not None else artifacts_dir(profile)
        self._forced: set[str] = set()

    def path(self, name: str, config: Any) -> Path:
        return self.root / f"{name}-{config_hash(config)}"

    def exists(self, name: str, config: Any) -> bool:
        return (self.path(name, config) / "config.json").is_file()

    @staticmethod
    def _built_under(final: Path) -> str:
        try:
            return json.loads((final / "config.json").read_text()).get("force_token", "")
        except (OSError, json.JSONDecodeError):
            return ""

    def get(
        self,
        name: str,
        config: Any,
        build: Callable[[Path], Any],
        force: bool | None = None,
        verbose: bool = True,
    ) -> Path:
        final = self.path(name, config)
        token = force_token()
        if force is None:
            # --force rebuilds each artifact once per pipeline run (the runner's token), not on
            # every access or in every notebook that uses it.
            force = bool(token) and str(final) not in self._forced and self._built_under(final) != token
        if (final / "config.json").is_file() and not force:
            if verbose:
                print(f"[cache] {name}: reusing {final.relative_to(self.root.parent.parent)}")
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.root))
        t0 = time.perf_counter()
        try:
            if verbose:
                print(f"[cache] {name}: building ({'forced' if force else 'missing'})")
            build(tmp)
            atomic_write_json(tmp / "config.json", {"name": name, "config": config, "force_token": token})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._forced.add(str(final))
        if verbose:
            print(f"[cache] {name}: built in {time.perf_counter() - t0:.1f} s")
        return final


@torch.no_grad()
def batched(fn, *tensors: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``fn`` over aligned slices of ``tensors`` (first dimension) in batches, without gradients;
    the outputs (tensors, or anything ``torch.as_tensor`` takes) concatenated along dimension 0."""
    n = len(tensors[0])
    outs = [torch.as_tensor(fn(*(t[i:i + batch_size] for t in tensors))) for i in range(0, n, batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)
