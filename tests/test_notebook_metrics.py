"""The smoke run's trained numbers against ``tests/smoke_metrics_reference.json``, key by key.

nbval checks only portable notebook outputs; this test is where trained numbers are regression
tested. The smoke run is the one nbval just made in this session (``make test`` runs the notebooks
first, in the session's fresh artifact cache: see the root ``conftest.py``); when the session did
not execute every notebook (this file run alone, as CI does a second time under other kernels), it
runs the smoke notebooks itself through the pipeline runner with a fresh cache. Either way every
network is trained under this process's settings (thread count, kernel ISA), and each reference key
is compared within its tolerance. Each tolerance is SPREAD_FACTOR times the spread measured across
four machine settings (1 or 2 threads, AVX-512 or ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2`` kernels) and is recorded with that spread and a reason;
``python -m drdpgan.metric_reference`` rebuilds the reference.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from drdpgan.metric_reference import FRACTION_RESOLUTION, SPREAD_FACTOR, compare, load_reference, run_smoke
from drdpgan.pipeline import list_notebooks
from drdpgan.results import documented_key, merge_metrics, run_dir

COMPARED, EXCLUDED = load_reference()


def _recording_notebooks() -> list[str]:
    """Stems of the numbered notebooks that record metrics (they create a ``Recorder``)."""
    return [p.stem for p in list_notebooks() if f'Recorder(\\"{p.stem}\\"' in p.read_text()]


def _metrics_of_this_session() -> dict | None:
    """The metrics nbval's kernels recorded in this session's new cache (root ``conftest.py``), when
    every recording notebook ran."""
    cache = os.environ.get("DRDPGAN_TEST_SESSION_CACHE")
    if not cache or os.environ.get("DRDPGAN_ARTIFACTS") != cache:
        return None
    folder = run_dir("smoke")
    if not all((folder / "metrics" / f"{stem}.json").is_file() for stem in _recording_notebooks()):
        return None
    return merge_metrics(folder)


@pytest.fixture(scope="module")
def smoke_metrics(tmp_path_factory):
    return _metrics_of_this_session() or run_smoke(tmp_path_factory.mktemp("smoke-metrics"))


def test_recording_notebooks_found():
    assert len(_recording_notebooks()) >= 10


def test_reference_is_well_formed():
    """Every reference key is documented, every tolerance is positive, covers the measured spread
    and stays within SPREAD_FACTOR x spread or the key's floor, and none reaches a chance value or
    the value of an untrained network recorded with the key (a tolerance that passes an untrained
    model is a defect)."""
    assert COMPARED, "the reference compares no key"
    assert not set(COMPARED) & set(EXCLUDED)
    for key, tol in COMPARED.items():
        assert documented_key(key), key
        assert tol.abs_tol > 0 and math.isfinite(tol.value), key
        assert tol.abs_tol >= tol.spread, f"{key}: tolerance {tol.abs_tol} below the measured spread {tol.spread}"
        floor = FRACTION_RESOLUTION.get(key, (1e-6 * max(1.0, abs(tol.value)),))[0]
        assert tol.abs_tol <= max(SPREAD_FACTOR * tol.spread, floor) * (1 + 1e-9), f"{key}: tolerance wider than the rule"
        for source, v in (tol.untrained or {}).items():
            assert abs(tol.value - v) > tol.abs_tol, f"{key}: tolerance reaches the untrained value {v} ({source})"
    for key, why in EXCLUDED.items():
        assert documented_key(key) and why.strip(), key


def test_every_recorded_key_is_compared_or_excluded(smoke_metrics):
    """A new metric of the smoke run must be classified: compared with a tolerance, or excluded with a reason."""
    unclassified = sorted(set(smoke_metrics) - set(COMPARED) - set(EXCLUDED))
    assert not unclassified, f"add these keys to tests/smoke_metrics_reference.json: {unclassified}"


@pytest.mark.parametrize("key", sorted(COMPARED))
def test_smoke_metric_within_tolerance(smoke_metrics, key):
    problems = compare(smoke_metrics, {key: COMPARED[key]})
    assert not problems, problems[0]


def test_compare_flags_missing_and_out_of_tolerance():
    from drdpgan.metric_reference import Tolerance

    ref = {"a": Tolerance(1.0, 0.1, 0.03, "3 x spread"), "b": Tolerance(0.5, 0.01, 0.0, "x"), "c": Tolerance(0, 1, 0, "x")}
    problems = compare({"a": 1.05, "b": 0.52, "c": float("nan")}, ref)
    assert [p.split(":")[0] for p in problems] == ["b", "c"]
    assert compare({"a": 0.95}, {"a": ref["a"]}) == []
    assert compare({}, {"a": ref["a"]}) == ["a: not recorded by the smoke run"]


def test_bad_reference_file_is_named(tmp_path):
    bad = tmp_path / "ref.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="ref.json"):
        load_reference(bad)
    bad.write_text(json.dumps({"compared": {"k": {"value": 1}}, "excluded": {}}))
    with pytest.raises(ValueError, match=r"ref.json: key 'k' lacks \['abs_tol', 'spread', 'why'\]"):
        load_reference(bad)
