"""Presets: versioned JSON files in ``presets/<kind>/<name>.json`` (``"schema": 1``).

Presets hold values only. Unknown keys are an error, so a typo never passes silently.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from engine.io.errors import AvatarFileError

PRESET_ROOT = Path(__file__).resolve().parents[2] / "presets"
EXPRESSION_KEYS = {"schema", "description", "weights"}
CAMERA_KEYS = {"schema", "description", "yaw", "pitch", "distance", "fov_y"}


def user_preset_dir(kind: str) -> Path:
    """Where presets people save go: ``$XDG_CONFIG_HOME/spatialavatar/presets/<kind>``."""
    import os

    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "spatialavatar" / "presets" / kind


def bundled_names(kind: str) -> list[str]:
    """Names of the presets of a kind that ship with the program."""
    return sorted(p.stem for p in (PRESET_ROOT / kind).glob("*.json"))


def preset_names(kind: str) -> list[str]:
    """Names of the presets of a kind (e.g. "expressions"): bundled ones, then saved ones."""
    bundled = bundled_names(kind)
    saved = sorted(p.stem for p in user_preset_dir(kind).glob("*.json") if p.stem not in bundled)
    return bundled + saved


def _preset_path(kind: str, name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".json":
        return path
    for folder in (PRESET_ROOT / kind, user_preset_dir(kind)):
        if (folder / f"{name_or_path}.json").exists():
            return folder / f"{name_or_path}.json"
    raise ValueError(f"no {kind.rstrip('s')} preset {name_or_path!r}; known: {', '.join(preset_names(kind))}")


def _finite(v) -> bool:
    """A JSON number that is finite (Python's json reads NaN and Infinity; true is no number)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_preset(path: Path, keys: set[str]) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        why = e.strerror.lower() if isinstance(e, OSError) and e.strerror else str(e)
        raise AvatarFileError(path, f"not a readable preset ({why})") from None
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise AvatarFileError(path, f"unknown preset schema {data.get('schema') if isinstance(data, dict) else None!r} (expected 1)")
    unknown = set(data) - keys
    if unknown:
        raise AvatarFileError(path, f"unknown key(s) {', '.join(sorted(unknown))}")
    return data


def load_expression_preset(name_or_path: str | Path) -> dict[str, float]:
    """The weights of an expression preset (bundled or saved, by name) or of a preset file (by path)."""
    path = _preset_path("expressions", name_or_path)
    weights = _read_preset(path, EXPRESSION_KEYS).get("weights", {})
    if not isinstance(weights, dict) or not all(_finite(v) for v in weights.values()):
        raise AvatarFileError(path, "'weights' must map expression names to finite numbers")
    return {str(k): float(v) for k, v in weights.items()}


def save_expression_preset(name: str, weights: dict[str, float], description: str = "",
                           folder: Path | None = None) -> Path:
    """Save ``weights`` (zeros dropped) as a preset people can pick by ``name``; returns its path.
    A bundled preset's name cannot be reused."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", name):
        raise ValueError(f"preset name {name!r}: use 1-64 letters, digits, '_' or '-'")
    if (PRESET_ROOT / "expressions" / f"{name}.json").exists():
        raise ValueError(f"{name!r} is a bundled preset; pick another name")
    from engine.atomic import atomic_write

    path = (folder or user_preset_dir("expressions")) / f"{name}.json"
    data = {"schema": 1, "description": description,
            "weights": {k: round(float(v), 4) for k, v in sorted(weights.items()) if abs(v) > 1e-4}}
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=1).encode())
    return path


def load_camera_preset(name_or_path: str | Path) -> dict[str, float]:
    """A camera preset: ``yaw``, ``pitch`` (degrees), ``distance`` (metres), ``fov_y`` (degrees)."""
    path = _preset_path("cameras", name_or_path)
    data = _read_preset(path, CAMERA_KEYS)
    out = {k: data[k] for k in ("yaw", "pitch", "distance", "fov_y") if k in data}
    if not all(_finite(v) for v in out.values()):
        raise AvatarFileError(path, "camera values must be finite numbers")
    return {k: float(v) for k, v in out.items()}
