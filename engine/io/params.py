"""Head-model parameter sequences as ``.npz``, with the key names of VHAP's ``flame_param.npz``.

Keys (float32; B frames, S identity and E expression coefficients):

==============  =========  ========================
key             shape      HeadParams field
==============  =========  ========================
``rotation``    [B, 3]     rotation (axis-angle)
``translation`` [B, 3]     translation (metres)
``neck_pose``   [B, 3]     neck
``jaw_pose``    [B, 3]     jaw
``eyes_pose``   [B, 6]     eyes (left | right)
``shape``       [S]        shape, shared by all frames
``expr``        [B, E]     expr
==============  =========  ========================

``shape`` is stored once, as [S], when every frame has the same identity (always the case
for a tracked sequence of one subject, and what VHAP writes); otherwise the full [B, S] is
stored. :func:`load_params` accepts both and always returns [B, S]. Any other array in the
file (VHAP's ``static_offset``, or ``K``, ``image_size``, ``timestep_id``, ... passed to
:func:`save_params`) is returned untouched in a dict.
"""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np
import torch

from engine.atomic import atomic_write
from engine.io.errors import AvatarFileError
from engine.types import HeadParams

# npz key -> HeadParams field
KEY_TO_FIELD: dict[str, str] = {
    "rotation": "rotation", "translation": "translation", "neck_pose": "neck",
    "jaw_pose": "jaw", "eyes_pose": "eyes", "shape": "shape", "expr": "expr",
}
# Width of each per-frame [B, W] key; None = any width (S or E).
_WIDTH: dict[str, int | None] = {
    "rotation": 3, "translation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "shape": None, "expr": None,
}


def save_params(params: HeadParams, path: str | os.PathLike, **extra_arrays: np.ndarray | torch.Tensor) -> None:
    """Write ``params`` (and any ``extra_arrays``, e.g. ``K=...``) to an ``.npz``, atomically.

    Raises ValueError if an extra array reuses a parameter key or holds Python objects
    (those would need pickle, which :func:`load_params` refuses).
    """
    arrays = {key: _float32(getattr(params, field)) for key, field in KEY_TO_FIELD.items()}
    shape = arrays["shape"]  # [B, S]
    if len(shape) > 0 and (shape == shape[:1]).all():
        arrays["shape"] = shape[0]  # [S]
    for name, value in extra_arrays.items():
        if name in KEY_TO_FIELD:
            raise ValueError(f"extra array {name!r} clashes with a head-parameter key")
        a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if a.dtype.hasobject:
            raise ValueError(f"extra array {name!r} holds Python objects; only plain numeric/str arrays can be saved")
        arrays[name] = a
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_params(path: str | os.PathLike) -> tuple[HeadParams, dict[str, np.ndarray]]:
    """Read an ``.npz`` written by :func:`save_params` (or VHAP's ``flame_param.npz``).

    Returns the parameters (float32, ``shape`` expanded to [B, S]) and every other array by
    key. Raises :class:`AvatarFileError` if the file is not an .npz, is damaged, lacks a key
    or has an array of the wrong shape.
    """
    arrays = _read_npz(path)
    b = _batch_size(arrays, path)
    for key, width in _WIDTH.items():
        a = arrays[key]
        frames_ok = (a.ndim == 2 and a.shape[0] == b) or (key == "shape" and a.ndim == 1)
        if not frames_ok or width is not None and a.shape[-1] != width:
            want = f"[{b}, {width or '*'}]" + (" or [S]" if key == "shape" else "")
            raise AvatarFileError(path, f"wrong shape for {key}: got {list(a.shape)}, expected {want}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise AvatarFileError(path, f"wrong dtype for {key}: {a.dtype} is not numeric")

    tensors = {field: torch.from_numpy(arrays[key].astype(np.float32)) for key, field in KEY_TO_FIELD.items()}
    if tensors["shape"].dim() == 1:
        tensors["shape"] = tensors["shape"].expand(b, -1).clone()  # [S] -> [B, S]
    extras = {key: a for key, a in arrays.items() if key not in KEY_TO_FIELD}
    return HeadParams(**tensors), extras


def _float32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path``, read eagerly so damage shows up here."""
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = _npz_arrays(loaded) if isinstance(loaded, np.lib.npyio.NpzFile) else None
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise AvatarFileError(path, f"not an .npz archive, or truncated or damaged ({e})") from None
    if arrays is None:
        raise AvatarFileError(path, "a single .npy array, not an .npz archive")
    missing = [key for key in KEY_TO_FIELD if key not in arrays]
    if missing:
        raise AvatarFileError(path, f"missing key {', '.join(missing)}")
    return arrays


def _npz_arrays(npz: np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    with npz:
        return {key: npz[key] for key in npz.files}


def _batch_size(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> int:
    """Number of frames B, from ``rotation`` [B, 3]."""
    rotation = arrays["rotation"]
    if rotation.ndim != 2:
        raise AvatarFileError(path, f"wrong shape for rotation: got {list(rotation.shape)}, expected [B, 3]")
    return rotation.shape[0]
