"""The smoke run's trained numbers against ``tests/smoke_metrics_reference.json``, key by key.

nbval checks only portable notebook outputs; this test is where trained numbers are regression
tested. The smoke run is the one nbval just made in this session (``make test`` runs the notebooks
first, in the session's fresh artifact cache: see the root ``conftest.py``); when the session did
not execute every notebook (this file run alone, as CI does a second time under other kernels), it
runs the smoke notebooks itself through the pipeline runner with a fresh cache. Either way every
network is trained under this process's settings (thread count, kernel ISA), and each reference key
is compared within its tolerance. The tolerances are rebuilt from the observations stored in the
reference (smoke runs under several machine settings, and values other machines printed) by
``python -m drdpgan.metric_reference rebuild``: SPREAD_FACTOR times the spread of the observed
range, at least a floor per kind of key; a failing key names the setting it ran under so that its
value can be stored with ``python -m drdpgan.metric_reference observe``.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from drdpgan.metric_reference import (SPREAD_FACTOR, UNTRAINED_FILE, compare, load_observations, load_reference, rebuild,
                                      run_smoke, tolerance_floor)
from drdpgan.repro import cpu_setting
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
        floor = tolerance_floor(key, tol.value)
        assert tol.abs_tol <= max(SPREAD_FACTOR * tol.spread, floor) * (1 + 1e-9), f"{key}: tolerance wider than the rule"
        for source, v in (tol.untrained or {}).items():
            assert abs(tol.value - v) > tol.abs_tol, f"{key}: tolerance reaches the untrained value {v} ({source})"
    for key, why in EXCLUDED.items():
        assert documented_key(key) and why.strip(), key


def test_stored_tolerances_are_the_rebuild_of_the_stored_observations():
    """No tolerance is edited by hand: the reference's compared and excluded keys are exactly what
    ``rebuild`` derives from its observations (``python -m drdpgan.metric_reference rebuild``)."""
    observations = load_observations()
    assert any(o["complete"] for o in observations)
    compared, excluded = rebuild(observations, json.loads(UNTRAINED_FILE.read_text()))
    assert set(compared) == set(COMPARED) and excluded == EXCLUDED
    for key, spec in compared.items():
        tol = COMPARED[key]
        assert (spec["value"], spec["abs_tol"], spec["spread"], spec["why"]) == (tol.value, tol.abs_tol, tol.spread,
                                                                                tol.why), key


def test_partial_observations_widen_their_keys_and_are_checked():
    """A partial observation (a few keys another machine printed) widens only its keys' ranges and can
    push a key out of comparison when the wider tolerance reaches an untrained value; observations that
    disagree on their keys, name unknown keys or hold no range are refused."""
    runs = [{"name": "a", "complete": True, "setting": "s", "values": {"identity.roc_auc": [0.70, 0.70],
                                                                      "identity.verif_acc": [0.60, 0.61]}},
            {"name": "b", "complete": True, "setting": "s", "values": {"identity.roc_auc": [0.70, 0.702],
                                                                      "identity.verif_acc": [0.60, 0.60]}}]
    untrained = {"lr0": {"applies_to": ["identity."], "metrics": {"identity.roc_auc": 0.5}}}
    compared, _ = rebuild(runs, untrained)
    assert compared["identity.roc_auc"]["value"] == pytest.approx(0.701)
    assert compared["identity.roc_auc"]["abs_tol"] == pytest.approx(0.004)
    assert compared["identity.verif_acc"]["abs_tol"] == pytest.approx(0.02)
    far = {"name": "c", "complete": False, "setting": "other CPU", "values": {"identity.roc_auc": [0.8, 0.8]}}
    compared, excluded = rebuild(runs + [far], untrained)
    assert compared["identity.roc_auc"]["spread"] == pytest.approx(0.1)
    assert compared["identity.verif_acc"]["abs_tol"] == pytest.approx(0.02)
    wide = {**far, "values": {"identity.roc_auc": [0.55, 0.55]}}
    compared, excluded = rebuild(runs + [wide], untrained)
    assert "identity.roc_auc" not in compared and "0.5 (lr0)" in excluded["identity.roc_auc"]
    tiny = {**far, "values": {"identity.roc_auc": [0.70001, 0.70001]}}
    compared, _ = rebuild(runs[:1] + [tiny], untrained)  # moved less than the floor: the floor holds
    assert compared["identity.roc_auc"]["abs_tol"] == pytest.approx(tolerance_floor("identity.roc_auc", 0.700005))
    with pytest.raises(ValueError, match="'c' names keys no smoke run records"):
        rebuild(runs + [{**far, "values": {"not.a_key": [1, 1]}}], untrained)
    with pytest.raises(ValueError, match="'b' records other keys"):
        rebuild([runs[0], {**runs[1], "values": {"identity.roc_auc": [0.7, 0.7]}}], untrained)
    with pytest.raises(ValueError, match="at least one complete observation"):
        rebuild([far], untrained)
    with pytest.raises(ValueError, match="not a range"):
        rebuild(runs + [{**far, "values": {"identity.roc_auc": [0.8, 0.7]}}], untrained)


def test_every_recorded_key_is_compared_or_excluded(smoke_metrics):
    """A new metric of the smoke run must be classified: compared with a tolerance, or excluded with a reason."""
    unclassified = sorted(set(smoke_metrics) - set(COMPARED) - set(EXCLUDED))
    assert not unclassified, f"add these keys to tests/smoke_metrics_reference.json: {unclassified}"


@pytest.mark.parametrize("key", sorted(COMPARED))
def test_smoke_metric_within_tolerance(smoke_metrics, key):
    problems = compare(smoke_metrics, {key: COMPARED[key]})
    assert not problems, f"{problems[0]}; ran under {json.dumps(cpu_setting())}"


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


def test_observe_and_add_store_observations_and_rebuild(tmp_path, monkeypatch, capsys):
    """The CLI keeps what it is given: ``observe`` a partial observation, ``add`` a whole run with its
    setting; bad values, a run folder without its files and a name stored already are refused by name."""
    from drdpgan import metric_reference as mr

    ref = tmp_path / "ref.json"
    ref.write_text(mr.REFERENCE_FILE.read_text())
    monkeypatch.setattr(mr, "REFERENCE_FILE", ref)
    assert mr.main(["observe", "new-cpu", "a CPU", "identity.roc_auc=0.6194"]) == 0
    stored = json.loads(ref.read_text())
    assert stored["observations"][-1] == {"name": "new-cpu", "complete": False, "setting": "a CPU",
                                          "values": {"identity.roc_auc": [0.6194, 0.6194]}}
    assert stored["compared"]["identity.roc_auc"]["spread"] > COMPARED["identity.roc_auc"].spread
    assert mr.main(["observe", "new-cpu", "a CPU", "identity.roc_auc=0.6194"]) == 2
    assert "stored already" in capsys.readouterr().err
    assert mr.main(["observe", "x", "a CPU", "identity.roc_auc=abc"]) == 2
    assert "'identity.roc_auc=abc': expected KEY=VALUE" in capsys.readouterr().err
    run = tmp_path / "run1"
    (run / "reports" / "smoke").mkdir(parents=True)
    assert mr.main(["add", str(run)]) == 2
    assert "run1/reports/smoke/metrics.json: missing" in capsys.readouterr().err
    first = next(o for o in stored["observations"] if o["complete"])["values"]
    recorded = {k: (v[0] if v else 0.0) for k, v in first.items()}  # the keys a smoke run records, at the low end
    (run / "reports" / "smoke" / "metrics.json").write_text(json.dumps(recorded))
    assert mr.main(["add", str(run)]) == 2
    assert "run1/setting.json: missing" in capsys.readouterr().err
    (run / "setting.json").write_text(json.dumps(cpu_setting()))
    assert mr.main(["add", str(run)]) == 0
    added = json.loads(ref.read_text())["observations"][-1]
    assert added["name"] == "run1" and added["complete"] and added["setting"] == cpu_setting()
    assert added["values"]["identity.roc_auc"] == [recorded["identity.roc_auc"]] * 2
    del recorded["identity.roc_auc"]
    run2 = tmp_path / "run2"
    (run2 / "reports" / "smoke").mkdir(parents=True)
    (run2 / "reports" / "smoke" / "metrics.json").write_text(json.dumps(recorded))
    (run2 / "setting.json").write_text(json.dumps(cpu_setting()))
    assert mr.main(["add", str(run2)]) == 2
    assert "records other keys" in capsys.readouterr().err
    assert mr.main(["add", "--fresh", str(run2)]) == 0  # anew: only this run is observed
    assert [o["name"] for o in json.loads(ref.read_text())["observations"]] == ["run2"]
