"""Seeds, atomic writes, the artifact cache and the metrics recorder."""

from __future__ import annotations

import json

import pytest
import torch

from drdpgan.repro import ArtifactCache, atomic_path, atomic_write_json, config_hash, seed_everything
from drdpgan.results import METRIC_KEYS, Recorder, documented_key, merge_metrics


def test_seed_everything_repeats_draws():
    seed_everything(3)
    a = torch.randn(5)
    g = seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=seed_everything(3)))


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_cache_builds_once_and_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("DRDPGAN_FORCE", raising=False)
    cache = ArtifactCache("t", root=tmp_path)
    calls = []

    def build(d):
        calls.append(1)
        (d / "f.txt").write_text("ok")

    p1 = cache.get("a", {"k": 1}, build, verbose=False)
    p2 = cache.get("a", {"k": 1}, build, verbose=False)
    assert p1 == p2 and len(calls) == 1 and (p1 / "f.txt").read_text() == "ok"

    def broken(d):
        (d / "f.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get("b", {"k": 1}, broken, verbose=False)
    assert not cache.exists("b", {"k": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [p1.name]

    monkeypatch.setenv("DRDPGAN_FORCE", "run-1")  # as the runner sets it for each kernel of a run
    ArtifactCache("t", root=tmp_path).get("a", {"k": 1}, build, verbose=False)
    ArtifactCache("t", root=tmp_path).get("a", {"k": 1}, build, verbose=False)  # a later notebook: reused
    assert len(calls) == 2
    monkeypatch.setenv("DRDPGAN_FORCE", "run-2")  # the next forced run rebuilds again
    ArtifactCache("t", root=tmp_path).get("a", {"k": 1}, build, verbose=False)
    assert len(calls) == 3


def test_recorder_refuses_undocumented_and_nonfinite(tmp_path, monkeypatch):
    monkeypatch.setenv("DRDPGAN_RUN_DIR", str(tmp_path))
    rec = Recorder("99_test", "smoke")
    rec.record("rec.psnr", 30.123456, digits=2)
    rec.record("ablation.7.rec_cos", 0.5)
    with pytest.raises(KeyError, match="rec.pnsr"):
        rec.record("rec.pnsr", 1.0)
    with pytest.raises(ValueError):
        rec.record("rec.mae", float("nan"))
    assert json.loads((tmp_path / "metrics" / "99_test.json").read_text()) == {
        "rec.psnr": 30.12, "ablation.7.rec_cos": 0.5}
    assert merge_metrics(tmp_path) == {"rec.psnr": 30.12, "ablation.7.rec_cos": 0.5}


def test_metric_keys_documented():
    assert documented_key("ablation.12.cls_acc_recovered") == "ablation.<n>.cls_acc_recovered"
    assert documented_key("ablation.x.rec_cos") is None
    assert all(desc for desc in METRIC_KEYS.values())


def test_generator_benchmark_returns_positive_ms():
    from drdpgan.bench import benchmark_generator

    ms = benchmark_generator(32, 16, 16, batch_size=2, repeats=1)
    assert ms > 0


def test_save_table_markdown_rounds_and_csv_keeps_digits(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    from drdpgan.results import save_table

    monkeypatch.setenv("DRDPGAN_RUN_DIR", str(tmp_path))
    df = pd.DataFrame({"key": ["a", "b"], "value": [0.123456789, float("nan")], "n": [3, 4],
                       "f32": np.array([1.23456789e-5, 2.0], dtype=np.float32)})
    csv, md = save_table(df, "t", "smoke")
    lines = md.read_text().splitlines()
    assert lines[0] == "| key | value | n | f32 |"
    assert lines[2] == "| a | 0.1235 | 3 | 1.235e-05 |"
    assert lines[3] == "| b |  | 4 | 2 |"
    assert pd.read_csv(csv)["value"][0] == pytest.approx(0.123456789, abs=1e-12)


def test_artifacts_env_moves_cache_and_notebook_run_dir(tmp_path, monkeypatch):
    from drdpgan.repro import artifacts_dir
    from drdpgan.results import run_dir

    monkeypatch.delenv("DRDPGAN_RUN_DIR", raising=False)
    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(tmp_path / "cache"))
    assert artifacts_dir("smoke") == (tmp_path / "cache" / "smoke").resolve()
    assert run_dir("smoke") == (tmp_path / "cache" / "smoke" / "notebook_runs").resolve()


def test_stylegan2_train_benchmark_times_both_precisions():
    from drdpgan.bench import benchmark_stylegan2_train

    for prec in ("fp32", "bf16"):
        assert 0 < benchmark_stylegan2_train(prec, resolution=16, width=16, batch_size=4, steps=2) < 60


def test_auto_precision_is_bf16_only_on_bf16_hardware(monkeypatch, tmp_path):
    import drdpgan.repro as repro

    cpuinfo = tmp_path / "cpuinfo"
    real_path = repro.Path

    def fake_path(p, *rest):
        return real_path(cpuinfo) if str(p) == "/proc/cpuinfo" else real_path(p, *rest)

    monkeypatch.setattr(repro, "Path", fake_path)
    for flags, expected in (("fpu avx avx2 fma", "fp32"), ("avx2 avx512f avx512_bf16", "bf16"),
                            ("avx2 amx_bf16 amx_tile", "bf16")):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        repro.bf16_is_fast.cache_clear()
        assert repro.resolve_precision("auto", "cpu") == expected, flags
        assert repro.resolve_precision("fp32", "cpu") == "fp32" and repro.resolve_precision("bf16", "cpu") == "bf16"
    repro.bf16_is_fast.cache_clear()
    with pytest.raises(ValueError, match="precision must be 'fp32', 'bf16' or 'auto'"):
        repro.resolve_precision("fp16")
    assert repro.resolve_precision("auto", "meta") == "fp32"  # no bf16 hardware known off the CPU and CUDA


def test_cpu_setting_names_the_model_the_kernel_flags_and_the_caps(monkeypatch, tmp_path):
    import drdpgan.repro as repro

    cpuinfo = tmp_path / "cpuinfo"
    real_path = repro.Path
    monkeypatch.setattr(repro, "Path", lambda p, *rest: real_path(cpuinfo) if str(p) == "/proc/cpuinfo"
                        else real_path(p, *rest))
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some Xeon(R) 8480\nflags\t\t: fpu avx2 amx_bf16 amx_tile sse\n"
                       "processor\t: 1\nmodel name\t: Some Xeon(R) 8480\nflags\t\t: fpu avx2 amx_bf16 amx_tile sse\n")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    got = repro.cpu_setting()
    assert got["cpu"] == "Some Xeon(R) 8480" and got["flags"] == ["avx2", "amx_tile", "amx_bf16"]
    assert got["ATEN_CPU_CAPABILITY"] == "avx2" and got["ONEDNN_MAX_CPU_ISA"] == ""
    assert got["threads"] == torch.get_num_threads() and got["torch"] == torch.__version__
    json.dumps(got)  # stored in the metric reference as it is
    cpuinfo.unlink()  # no /proc/cpuinfo (another OS): the platform's name, no flags
    assert repro.cpu_setting()["flags"] == [] and repro.cpu_setting()["cpu"]


def test_the_pretraining_recipes_pick_their_precision_by_hardware():
    from drdpgan.pretrain import STYLEGAN2_RECIPES
    from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES

    assert {cfg.precision for cfg in STYLEGAN2_RECIPES.values()} == {"auto"}
    for r in DRDPGAN_RECIPES.values():
        assert {p.precision for p in (*r["earlier_phases"], r["train"])} == {"auto"}
