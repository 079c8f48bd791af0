"""Pipeline profiles (``smoke``, ``cpu``, ``lfw``, ``paper``): loaded from ``profiles.yaml``.

A profile is a full set of notebook parameters: each notebook's ``parameters`` cell gives the
defaults (the ``smoke`` profile is exactly those defaults) and the profile overrides some of
them. :func:`resolve_parameters` returns the full, validated set for one notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")
DEFAULT_PROFILE = "cpu"


class ProfileError(ValueError):
    """A profile that does not exist or does not fit the notebooks."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    common: dict[str, Any] = field(default_factory=dict)
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def overrides_for(self, notebook: str, declared: set[str] | None = None) -> dict[str, Any]:
        """Parameters injected into ``notebook`` (its stem): profile name, common, own overrides."""
        params: dict[str, Any] = {"profile": self.name}
        for k, v in self.common.items():
            if declared is None or k in declared:
                params[k] = v
        params.update(self.notebooks.get(notebook, {}))
        return params


def load_profiles(path: str | Path = PROFILES_FILE) -> dict[str, Profile]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping of profile names")
    profiles = {}
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise ProfileError(f"{path}: profile {name!r} must be a mapping")
        unknown = set(body) - {"description", "common", "notebooks"}
        if unknown:
            raise ProfileError(f"{path}: profile {name!r} has unknown fields {sorted(unknown)}")
        nbs = body.get("notebooks") or {}
        for nb, params in nbs.items():
            if not isinstance(params, dict):
                raise ProfileError(f"{path}: profile {name!r}, notebook {nb!r}: parameters must be a mapping")
        profiles[name] = Profile(
            name=name,
            description=" ".join(str(body.get("description", "")).split()),
            common=dict(body.get("common") or {}),
            notebooks={k: dict(v) for k, v in nbs.items()},
        )
    return profiles


def get_profile(name: str, path: str | Path = PROFILES_FILE) -> Profile:
    profiles = load_profiles(path)
    if name not in profiles:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(profiles)}")
    return profiles[name]
