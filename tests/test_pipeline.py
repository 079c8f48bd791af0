"""The Papermill runner: parameter checks, failing cells, timings, metrics, cache reuse, --force."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from drdpgan.config import load_profiles
from drdpgan.pipeline import (
    PipelineError,
    check_profile,
    declared_parameters,
    list_notebooks,
    main,
    run_pipeline,
)


def make_notebook(path: Path, params: str, body: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {path.stem} title"))
    p = nbformat.v4.new_code_cell(textwrap.dedent(params))
    p.metadata["tags"] = ["parameters"]
    nb.cells.append(p)
    nb.cells.extend(nbformat.v4.new_code_cell(textwrap.dedent(b)) for b in body)
    nb.metadata["kernelspec"] = {"name": "drdpgan", "display_name": "drdpgan", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    make_notebook(
        nbs / "01_first.ipynb",
        'profile = "smoke"\nvalue = 1.5\ncache_root = ""\nsleep_s = 0.0',
        [
            """
            import time
            from pathlib import Path
            from drdpgan.repro import ArtifactCache
            from drdpgan.results import Recorder
            rec = Recorder("01_first", profile)
            def build(d):
                time.sleep(sleep_s)
                (d / "payload.txt").write_text(str(value))
            path = ArtifactCache(profile, root=cache_root).get("thing", {"value": value}, build)
            rec.record("pipeline.smoke_check", float((path / "payload.txt").read_text()) * 2)
            """
        ],
    )
    make_notebook(nbs / "02_second.ipynb", 'profile = "smoke"\nboom = False', ["x = 1", "assert not boom, 'asked to fail'",
                   "import os\nassert os.environ.get('DRDPGAN_HEADLESS') == '1', 'the runner must draw static figures'"])
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        textwrap.dedent(
            f"""
            smoke:
              description: defaults
              notebooks:
                01_first:
                  cache_root: "{tmp_path / 'artifacts'}"
            slow:
              description: a slow cache build
              common:
                value: 4.0
              notebooks:
                01_first:
                  cache_root: "{tmp_path / 'artifacts'}"
                  sleep_s: 4.0
            typo:
              description: misspelt parameter
              notebooks:
                01_first:
                  valeu: 3
            failing:
              description: second notebook raises
              notebooks:
                01_first:
                  cache_root: "{tmp_path / 'artifacts'}"
                02_second:
                  boom: true
            """
        )
    )
    return tmp_path


def run(project, profile, **kw):
    return run_pipeline(
        profile, nb_dir=project / "notebooks", out_root=project / "reports",
        profiles_file=project / "profiles.yaml", html=kw.pop("html", False), progress=False, **kw,
    )


def timings(project, profile):
    with (project / "reports" / profile / "timings.csv").open() as f:
        return {r["notebook"]: r for r in csv.DictReader(f)}


def test_declared_parameters_reads_the_tagged_cell(project):
    assert declared_parameters(project / "notebooks" / "02_second.ipynb") == {"profile": '"smoke"', "boom": "False"}


def test_unknown_parameter_fails_before_running(project):
    with pytest.raises(PipelineError, match=r"valeu.*01_first\.ipynb"):
        run(project, "typo")
    assert not (project / "reports" / "typo").exists()


def test_success_writes_metrics_timings_and_notebooks(project, monkeypatch):
    monkeypatch.delenv("DRDPGAN_HEADLESS", raising=False)  # the runner itself makes the kernels headless
    runs = run(project, "smoke", html=True)
    assert [r.status for r in runs] == ["ok", "ok"]
    out = project / "reports" / "smoke"
    assert json.loads((out / "metrics.json").read_text()) == {"pipeline.smoke_check": 3.0}
    assert set(timings(project, "smoke")) == {"01_first", "02_second"}
    assert (out / "01_first.ipynb").exists() and (out / "02_second.html").exists()


def test_failing_cell_names_notebook_and_cell(project, capsys):
    with pytest.raises(PipelineError, match=r"02_second\.ipynb failed in cell 3 .*AssertionError: asked to fail"):
        run(project, "failing")
    t = timings(project, "failing")
    assert t["01_first"]["status"] == "ok" and t["02_second"]["status"] == "failed"
    # The metrics of the notebook that finished are kept.
    assert json.loads((project / "reports" / "failing" / "metrics.json").read_text()) == {"pipeline.smoke_check": 3.0}
    # The executed notebook with the traceback is kept for the reader.
    executed = nbformat.read(project / "reports" / "failing" / "02_second.ipynb", as_version=4)
    assert any(o.get("ename") == "AssertionError" for c in executed.cells for o in c.get("outputs", []))


def test_second_run_reuses_cache_and_force_rebuilds(project):
    def payload_mtime():
        (payload,) = (project / "artifacts").glob("thing-*/payload.txt")
        return payload.stat().st_mtime_ns

    run(project, "slow", only=["01"])
    first, built = float(timings(project, "slow")["01_first"]["seconds"]), payload_mtime()
    run(project, "slow", only=["01"])
    second, reused = float(timings(project, "slow")["01_first"]["seconds"]), payload_mtime()
    run(project, "slow", only=["01"], force=True)
    forced, rebuilt = float(timings(project, "slow")["01_first"]["seconds"]), payload_mtime()
    assert reused == built and rebuilt > built
    # The 4 s build shows in the timings (margins allow for kernel start-up jitter).
    assert second < first - 2.0, (first, second)
    assert forced > second + 2.0, (second, forced)
    assert json.loads((project / "reports" / "slow" / "metrics.json").read_text()) == {"pipeline.smoke_check": 8.0}


def test_only_rejects_unknown_notebook(project):
    with pytest.raises(PipelineError, match="--only names no notebook"):
        run(project, "smoke", only=["07"])


def test_cli_exit_code_and_message(project, capsys, monkeypatch):
    import drdpgan.pipeline as pl

    monkeypatch.setattr(pl, "notebooks_dir", lambda: project / "notebooks")
    monkeypatch.setattr(pl, "PROFILES_FILE", project / "profiles.yaml")
    assert main(["--profile", "nonexistent"]) == 1
    assert "unknown profile" in capsys.readouterr().err


def test_repository_profiles_fit_the_repository_notebooks():
    """Every profile of drdpgan/profiles.yaml injects only declared parameters into existing notebooks."""
    nbs = list_notebooks()
    assert nbs, "no notebooks found"
    profiles = load_profiles()
    assert {"smoke", "cpu", "lfw", "paper"} <= set(profiles)
    assert profiles["smoke"].notebooks == {} and profiles["smoke"].common == {}, "smoke = the notebooks' defaults"
    for prof in profiles.values():
        check_profile(prof, nbs, nbs)


def test_every_notebook_has_one_parameters_cell_with_profile_smoke():
    for nb in list_notebooks():
        params = declared_parameters(nb)
        assert params.get("profile") == '"smoke"', nb.name


def test_papermill_sees_every_parameter_assigned_in_the_parameters_cell():
    """Papermill silently drops a parameter it cannot parse (e.g. '=' in a trailing comment);
    the runner's checks would then miss it, so every assigned name must be seen."""
    import ast

    for nb in list_notebooks():
        cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
        assert list(declared_parameters(nb)) == assigned, nb.name


def test_html_export_links_one_shared_stylesheet(tmp_path):
    import nbformat

    from drdpgan.pipeline import HTML_CSS, _export_html

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# hello"), nbformat.v4.new_code_cell("1 + 1")])
    prof = tmp_path / "smoke"  # reports/<profile>/
    prof.mkdir()
    src = prof / "01_x.ipynb"
    nbformat.write(nb, src)
    _export_html(src, prof / "01_x.html")
    _export_html(src, prof / "02_y.html")
    html = (prof / "01_x.html").read_text()
    assert "<style" not in html.split("</head>")[0]
    assert f'<link rel="stylesheet" href="../{HTML_CSS}">' in html
    assert "hello" in html
    assert len((tmp_path / HTML_CSS).read_text()) > 1000  # one stylesheet for every profile
    assert not (prof / HTML_CSS).exists()
    head = html.split("</head>")[0]
    scripts = sorted(tmp_path.glob("notebook-*.js"))
    assert scripts and all(f'src="../{js.name}"' in head for js in scripts)  # inline head scripts shared
    assert (prof / "02_y.html").read_text().split("</head>")[0] == head  # every page links the same files
