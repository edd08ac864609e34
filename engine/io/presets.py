"""Presets: versioned JSON files in ``presets/<kind>/<name>.json`` (``"schema": 1``).

Presets hold values only. Unknown keys are an error, so a typo never passes silently.
"""
from __future__ import annotations

import json
from pathlib import Path

from engine.io.errors import AvatarFileError

PRESET_ROOT = Path(__file__).resolve().parents[2] / "presets"
EXPRESSION_KEYS = {"schema", "description", "weights"}


def preset_names(kind: str) -> list[str]:
    """Names of the bundled presets of a kind (e.g. "expressions")."""
    return sorted(p.stem for p in (PRESET_ROOT / kind).glob("*.json"))


def load_expression_preset(name_or_path: str | Path) -> dict[str, float]:
    """The weights of a bundled expression preset (by name) or of a preset file (by path)."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PRESET_ROOT / "expressions" / f"{name_or_path}.json"
        if not path.exists():
            raise ValueError(f"no expression preset {name_or_path!r}; bundled: {', '.join(preset_names('expressions'))}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AvatarFileError(path, f"not a readable preset ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise AvatarFileError(path, f"unknown preset schema {data.get('schema') if isinstance(data, dict) else None!r} (expected 1)")
    unknown = set(data) - EXPRESSION_KEYS
    if unknown:
        raise AvatarFileError(path, f"unknown key(s) {', '.join(sorted(unknown))}")
    weights = data.get("weights", {})
    if not isinstance(weights, dict) or not all(isinstance(v, (int, float)) for v in weights.values()):
        raise AvatarFileError(path, "'weights' must map expression names to numbers")
    return {str(k): float(v) for k, v in weights.items()}
