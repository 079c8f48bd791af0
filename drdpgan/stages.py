"""What each notebook produces, findable from any later notebook.

A notebook that trains or generates something calls a function of this module with its own
parameters; a later notebook calls the same function with the parameters the earlier notebook
would have under the same profile (:func:`notebook_params`). Both land on the same
:class:`~drdpgan.repro.ArtifactCache` entry (keyed by the config), so a notebook opened on its own
either finds what the earlier one built or builds it, with a progress bar.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import get_profile
from .repro import project_root


@lru_cache(maxsize=None)
def _declared_defaults(nb_path: str) -> dict[str, Any]:
    import papermill as pm

    out = {}
    for name, spec in pm.inspect_notebook(nb_path).items():
        src = spec.get("default")
        try:
            out[name] = ast.literal_eval(src)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{nb_path}: parameter {name} = {src!r} is not a literal") from e
    return out


def notebook_path(stem: str) -> Path:
    p = project_root() / "notebooks" / f"{stem}.ipynb"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such notebook")
    return p


def notebook_params(stem: str, profile: str) -> dict[str, Any]:
    """The full parameters notebook ``stem`` runs with under ``profile`` (its defaults + overrides)."""
    defaults = dict(_declared_defaults(str(notebook_path(stem))))
    overrides = get_profile(profile).overrides_for(stem, set(defaults))
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"profile {profile!r} sets {sorted(unknown)} not declared by {stem}.ipynb")
    defaults.update(overrides)
    return defaults
