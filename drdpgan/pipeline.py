"""Papermill runner: execute the numbered notebooks of a profile, in order.

    python -m drdpgan.pipeline --profile cpu [--only 01 02] [--force] [--show] [--list]

For each ``notebooks/NN_name.ipynb`` it injects the profile's parameters (every name must be
declared in the notebook's ``parameters`` cell, checked for all notebooks before anything
runs), executes it with the fixed kernel ``drdpgan`` in ``notebooks/``, and writes to
``reports/<profile>/``: the executed notebook and an HTML export, ``timings.csv`` (wall
seconds per notebook), and ``metrics.json`` merged from what each notebook recorded through
:class:`drdpgan.results.Recorder`. A failing cell stops the run with the notebook's name, the
cell and the error, and a non-zero exit code.

``--force`` sets ``DRDPGAN_FORCE`` to a token of this run for the kernels, so each
:class:`~drdpgan.repro.ArtifactCache` entry is rebuilt once in the run (by the first notebook that
needs it) and reused by the later ones.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import DEFAULT_PROFILE, PROFILES_FILE, Profile, ProfileError, get_profile
from .repro import atomic_path, atomic_write_text, project_root, temporary_environ
from .results import merge_metrics

KERNEL_NAME = "drdpgan"


class PipelineError(RuntimeError):
    """A notebook failed, or the profile does not fit the notebooks."""


@dataclass
class NotebookRun:
    notebook: str
    seconds: float
    status: str  # "ok" | "failed"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks(directory: Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` of ``directory``, in order."""
    directory = directory or notebooks_dir()
    nbs = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if not p.name.endswith(".tmp.ipynb"))
    return nbs


def notebook_title(path: Path) -> str:
    """The first markdown heading of a notebook (its title), without the leading '#'."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def declared_parameters(path: Path) -> dict[str, Any]:
    """Names and default values of a notebook's ``parameters`` cell (exactly one is required)."""
    import nbformat
    import papermill as pm

    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise PipelineError(f"{path.name}: {len(tagged)} cells tagged 'parameters' (exactly one is required)")
    info = pm.inspect_notebook(str(path))
    declared = {name: spec.get("default") for name, spec in info.items()}
    check_against_library(path, declared)
    return declared


def check_against_library(path: Path, declared: dict[str, Any]) -> None:
    """A package notebook's ``parameters`` cell must repeat :mod:`drdpgan.notebook_params` exactly
    (names, order and values): the library is where the defaults live."""
    import ast

    from .notebook_params import NOTEBOOK_PARAMS, defaults

    if path.stem not in NOTEBOOK_PARAMS:
        return
    lib = defaults(path.stem)
    if list(declared) != list(lib):
        raise PipelineError(f"{path.name}: parameters {list(declared)} differ from drdpgan.notebook_params "
                            f"{list(lib)}; edit both together")
    for name, src in declared.items():
        try:
            value = ast.literal_eval(src)
        except (ValueError, SyntaxError):
            raise PipelineError(f"{path.name}: parameter {name} = {src!r} is not a literal") from None
        if value != lib[name] or type(value) is not type(lib[name]):
            raise PipelineError(f"{path.name}: parameter {name} = {value!r}, but drdpgan.notebook_params says "
                                f"{lib[name]!r}; edit both together")


def resolve_parameters(profile: Profile, nb_path: Path) -> dict[str, Any]:
    """The parameters injected into ``nb_path`` under ``profile``; unknown names are an error."""
    declared = declared_parameters(nb_path)
    params = profile.overrides_for(nb_path.stem, set(declared))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise PipelineError(
            f"profile {profile.name!r} injects parameter(s) {', '.join(unknown)} into {nb_path.name}, "
            f"whose parameters cell declares only: {', '.join(sorted(declared)) or '(none)'}"
        )
    return params


def check_profile(profile: Profile, nbs: Sequence[Path], all_nbs: Sequence[Path]) -> dict[Path, dict[str, Any]]:
    """Validate a profile against the notebooks before anything runs."""
    stems = {p.stem for p in all_nbs}
    missing = sorted(set(profile.notebooks) - stems)
    if missing:
        raise PipelineError(f"profile {profile.name!r} sets parameters for notebook(s) that do not exist: {missing}")
    declared_anywhere: set[str] = set()
    for p in all_nbs:
        declared_anywhere |= set(declared_parameters(p))
    orphans = sorted(set(profile.common) - declared_anywhere)
    if orphans:
        raise PipelineError(f"profile {profile.name!r}: common parameter(s) {orphans} are declared by no notebook")
    return {p: resolve_parameters(profile, p) for p in nbs}


def ensure_kernel(name: str = KERNEL_NAME) -> None:
    """Install the ``drdpgan`` kernel spec for this Python when it is missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if name in KernelSpecManager().find_kernel_specs():
        return
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    print(f"installed Jupyter kernel {name!r} for {sys.executable}")


HTML_CSS = "notebook.css"


def _shared_asset(reports: Path, name: str, text: str) -> None:
    path = reports / name
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def _export_html(executed: Path, html_path: Path) -> None:
    """``executed`` -> ``html_path`` (nbconvert's lab template). What the template puts in every
    page's ``<head>`` (some 7,300 lines of stylesheets and 450 lines of inline scripts, the same for
    every notebook of every profile) goes once into ``reports/`` (``notebook.css``,
    ``notebook-<hash>.js``), which the HTML files in ``reports/<profile>/`` link to. The MathJax
    configuration stays inline (MathJax reads it from the page)."""
    import hashlib
    import re

    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    head_end = body.find("</head>")
    head, rest = (body[:head_end], body[head_end:]) if head_end >= 0 else ("", body)
    reports = html_path.parent.parent
    styles = re.findall(r"<style[^>]*>(.*?)</style>", head, flags=re.S)
    if styles:
        _shared_asset(reports, HTML_CSS, "\n".join(x.strip() for x in styles) + "\n")
        head = re.sub(r"\s*<style[^>]*>.*?</style>", "", head, flags=re.S)
        head += f'<link rel="stylesheet" href="../{HTML_CSS}">\n'

    def external(m: re.Match) -> str:
        attrs, code = m.group(1), m.group(2)
        if "src=" in attrs or "text/x-mathjax-config" in attrs or not code.strip():
            return m.group(0)
        name = f"notebook-{hashlib.sha256(code.encode()).hexdigest()[:8]}.js"
        _shared_asset(reports, name, code.strip() + "\n")
        return f'<script{attrs} src="../{name}"></script>'

    head = re.sub(r"<script([^>]*)>(.*?)</script>", external, head, flags=re.S)
    atomic_write_text(html_path, head + rest)


def _write_timings(path: Path, runs: Sequence[NotebookRun]) -> None:
    """Update ``timings.csv``: rows of this run replace rows of the same notebooks."""
    rows: dict[str, dict[str, str]] = {}
    if path.exists():
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                rows[r["notebook"]] = r
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for r in runs:
        rows[r.notebook] = {"notebook": r.notebook, "seconds": f"{r.seconds:.1f}", "status": r.status, "finished": stamp}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["notebook", "seconds", "status", "finished"], lineterminator="\n")
    w.writeheader()
    for k in sorted(rows):
        w.writerow(rows[k])
    atomic_write_text(path, buf.getvalue())


def _relative_papermill_paths(path: Path, source: Path, final: Path) -> None:
    """Papermill records absolute input/output paths; keep them relative to the project root."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key, value in (("input_path", source), ("output_path", final)):
        try:
            meta[key] = str(Path(value).resolve().relative_to(project_root()))
        except ValueError:
            meta[key] = Path(value).name
    nbformat.write(nb, path)


def _source_cell_index(err, injected: bool) -> int:
    """Index of the failing cell in the source notebook (papermill counts its injected cell)."""
    idx = int(getattr(err, "cell_index", -1))
    return idx - 1 if injected and idx > 0 else idx


def run_pipeline(
    profile_name: str = DEFAULT_PROFILE,
    only: Sequence[str] | None = None,
    force: bool = False,
    nb_dir: Path | None = None,
    out_root: Path | None = None,
    profiles_file: Path = PROFILES_FILE,
    kernel_name: str = KERNEL_NAME,
    html: bool = True,
    progress: bool = True,
) -> list[NotebookRun]:
    """Run the profile's notebooks; raise :class:`PipelineError` naming the notebook and cell on failure."""
    import papermill as pm
    from tqdm.auto import tqdm

    nb_dir = Path(nb_dir or notebooks_dir())
    profile = get_profile(profile_name, profiles_file)
    all_nbs = list_notebooks(nb_dir)
    if not all_nbs:
        raise PipelineError(f"no numbered notebooks (NN_name.ipynb) in {nb_dir}")
    nbs = all_nbs
    if only:
        wanted = {str(o).zfill(2) if str(o).isdigit() else str(o) for o in only}
        nbs = [p for p in all_nbs if p.stem[:2] in wanted or p.stem in wanted]
        unknown = wanted - {p.stem[:2] for p in nbs} - {p.stem for p in nbs}
        if unknown:
            raise PipelineError(f"--only names no notebook: {sorted(unknown)}")
    params = check_profile(profile, nbs, all_nbs)

    out_dir = Path(out_root or (project_root() / "reports")) / profile.name
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_kernel(kernel_name)

    runs: list[NotebookRun] = []
    force_token = f"run-{time.time_ns()}" if force else "0"  # one rebuild per artifact per run
    bar = tqdm(nbs, desc=f"profile {profile.name}", unit="nb", disable=not progress, file=sys.stdout)
    # static figures instead of widgets: nobody is there to move a slider, and a widget under
    # Papermill once left notebook 05 waiting forever (seen here)
    with temporary_environ(DRDPGAN_RUN_DIR=str(out_dir), DRDPGAN_FORCE=force_token, DRDPGAN_HEADLESS="1",
                           DRDPGAN_NOTEBOOK=""):
        try:
            for nb in bar:
                bar.set_postfix_str(nb.stem)
                os.environ["DRDPGAN_NOTEBOOK"] = nb.stem
                executed = out_dir / nb.name
                t0 = time.perf_counter()
                failed = None
                with atomic_path(executed) as tmp:
                    try:
                        pm.execute_notebook(
                            str(nb),
                            str(tmp),
                            parameters=params[nb],
                            kernel_name=kernel_name,
                            cwd=str(nb_dir),
                            progress_bar=False,
                            log_output=False,
                        )
                    except pm.PapermillExecutionError as e:
                        # Keep the executed notebook (with its traceback) for the reader.
                        failed = e
                    _relative_papermill_paths(tmp, nb, executed)
                seconds = time.perf_counter() - t0
                runs.append(NotebookRun(nb.stem, seconds, "failed" if failed else "ok"))
                if html:
                    _export_html(executed, out_dir / (nb.stem + ".html"))
                if failed is not None:
                    cell = _source_cell_index(failed, injected=bool(params[nb]))
                    raise PipelineError(
                        f"notebook {nb.name} failed in cell {cell} (execution count {failed.exec_count}): "
                        f"{failed.ename}: {failed.evalue}\n  executed notebook with the traceback: {executed}"
                    )
                tqdm.write(f"  {nb.stem}: {seconds:.1f} s")
        finally:
            bar.close()
            if runs:
                _write_timings(out_dir / "timings.csv", runs)
            merge_metrics(out_dir)
    return runs


def show_profile(profile_name: str, nb_dir: Path | None = None, profiles_file: Path = PROFILES_FILE) -> str:
    """The full resolved parameter set of a profile (notebook defaults + overrides), as text."""
    nb_dir = Path(nb_dir or notebooks_dir())
    profile = get_profile(profile_name, profiles_file)
    nbs = list_notebooks(nb_dir)
    params = check_profile(profile, nbs, nbs)
    lines = [f"profile {profile.name}: {profile.description}"]
    for nb in nbs:
        full = {**declared_parameters(nb), **params[nb]}
        lines.append(f"  {nb.stem}:")
        for k, v in full.items():
            mark = "*" if k in params[nb] and k != "profile" else " "
            lines.append(f"    {mark} {k} = {v}")
    lines.append("  (* = set by the profile; others are the notebook's defaults)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drdpgan.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help=f"profile name (default {DEFAULT_PROFILE})")
    ap.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (by number or stem)")
    ap.add_argument("--force", action="store_true", help="rebuild cached artifacts instead of reusing them")
    ap.add_argument("--show", action="store_true", help="print the resolved parameters and exit")
    ap.add_argument("--list", action="store_true", help="list the notebooks in order and exit")
    ap.add_argument("--no-html", action="store_true", help="skip the HTML export")
    args = ap.parse_args(argv)
    try:
        if args.list:
            for nb in list_notebooks():
                print(f"{nb.stem:28s} {notebook_title(nb)}")
            return 0
        if args.show:
            print(show_profile(args.profile))
            return 0
        t0 = time.perf_counter()
        runs = run_pipeline(args.profile, only=args.only, force=args.force, html=not args.no_html)
        out = project_root() / "reports" / args.profile
        print(f"profile {args.profile}: {len(runs)} notebook(s) in {time.perf_counter() - t0:.1f} s -> {out}")
        return 0
    except (PipelineError, ProfileError) as e:
        print(f"pipeline error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
