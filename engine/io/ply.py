"""Standard 3D Gaussian Splatting point clouds (``.ply``), for exchange with other viewers.

The layout is the one written by the original 3DGS code (``GaussianModel.save_ply``):
binary little-endian, one ``vertex`` element with float32 properties, in this order::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..44  opacity  scale_0..2  rot_0..3

Values are pre-activation, as 3DGS stores them: ``f_dc = (rgb - 0.5) / C0`` (degree-0
spherical harmonic), ``opacity = logit(alpha)``, ``scale = log(scale)``, ``rot`` the wxyz
quaternion (``rot_0 = w``). Normals are zero, and ``f_rest`` (the 45 coefficients of SH
degrees 1-3) are zero because our Gaussians have no view-dependent colour; when reading a
file that has them, they are ignored.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyParseError

from engine.atomic import atomic_write
from engine.io.errors import AvatarFileError
from engine.types import Gaussians

SH_C0 = 0.28209479177387814  # degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
N_SH_REST = 45               # 3 colours x (16 - 1) coefficients of SH degree 3
OPACITY_EPS = 1e-6           # opacities are clamped to [eps, 1 - eps] so the logit is finite

PLY_PROPERTIES: tuple[str, ...] = (
    "x", "y", "z", "nx", "ny", "nz",
    "f_dc_0", "f_dc_1", "f_dc_2",
    *(f"f_rest_{i}" for i in range(N_SH_REST)),
    "opacity", "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)
# What read_ply needs; normals and f_rest are optional.
REQUIRED_PROPERTIES: tuple[str, ...] = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)


def export_ply(gaussians: Gaussians, path: str | os.PathLike) -> None:
    """Write ``gaussians`` as a standard 3DGS ``.ply`` (see the module docstring), atomically."""
    # Activations are inverted in float64 so that the float32 file round-trips to ~1e-7.
    g = {name: getattr(gaussians, name).detach().cpu().to(torch.float64).numpy()
         for name in ("means", "quats", "scales", "opacities", "colors")}
    values = {
        **_columns(("x", "y", "z"), g["means"]),
        **_columns(_numbered("f_dc", 3), (g["colors"] - 0.5) / SH_C0),
        "opacity": _logit(np.clip(g["opacities"], OPACITY_EPS, 1 - OPACITY_EPS)),
        **_columns(_numbered("scale", 3), np.log(g["scales"])),
        **_columns(_numbered("rot", 4), g["quats"]),  # wxyz: rot_0 = w
    }
    vertex = np.zeros(len(gaussians), dtype=[(name, "<f4") for name in PLY_PROPERTIES])
    for name, v in values.items():
        vertex[name] = v
    # Normals and f_rest stay zero.

    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    with atomic_write(path) as f:
        ply.write(f)


def read_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS ``.ply`` into world-space Gaussians (activations applied).

    Normals and ``f_rest`` may be absent. Quaternions are normalised and colours clamped to
    [0, 1], as the 3DGS renderer does. Raises :class:`AvatarFileError` if the file is not a
    PLY, is truncated, or lacks the ``vertex`` element or one of its required properties.
    """
    vertex = _read_vertex(path)
    col = lambda *names: np.stack([vertex[n].astype(np.float64) for n in names], axis=1)  # noqa: E731
    means = col("x", "y", "z")                                          # [N, 3]
    colors = np.clip(col(*_numbered("f_dc", 3)) * SH_C0 + 0.5, 0, 1)     # [N, 3]
    opacities = 1 / (1 + np.exp(-vertex["opacity"].astype(np.float64)))  # [N]
    scales = np.exp(col(*_numbered("scale", 3)))                         # [N, 3]
    quats = torch.nn.functional.normalize(torch.from_numpy(col(*_numbered("rot", 4))), dim=1)  # [N, 4]
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return Gaussians(f32(means), f32(quats), f32(scales), f32(opacities), f32(colors))


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_HEADER_END = b"end_header\n"


def _binary_vertex(path: str | os.PathLike) -> np.ndarray | None:
    """The vertex element of a binary PLY whose first element is ``vertex`` with scalar
    properties (every 3DGS file), read in one block: 62K Gaussians in milliseconds, where
    plyfile's per-value reader took ~12 s. None for any other layout (ASCII, lists, another
    element first), which plyfile reads. A vertex count the file cannot hold is refused from
    the header, before anything is allocated."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(_HEADER_END)
    if not head.startswith(b"ply\n") or end < 0:
        return None
    try:
        lines = [ln.split() for ln in head[:end].decode("ascii").splitlines()[1:]]
    except UnicodeDecodeError:
        return None
    lines = [ln for ln in lines if ln and ln[0] not in ("comment", "obj_info")]
    if not lines or lines[0][:1] != ["format"] or len(lines[0]) < 2:
        return None
    order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(lines[0][1])
    if order is None or len(lines) < 2 or lines[1][:2] != ["element", "vertex"] or len(lines[1]) != 3:
        return None
    try:
        n = int(lines[1][2])
    except ValueError:
        return None
    fields = []
    for ln in lines[2:]:
        if ln[0] == "element":
            break
        if ln[0] != "property" or len(ln) != 3 or ln[1] not in _PLY_TYPES:
            return None                         # a list property or something unusual
        fields.append((ln[2], order + _PLY_TYPES[ln[1]]))
    try:
        dtype = np.dtype(fields)
    except (TypeError, ValueError):             # duplicate names
        return None
    offset = end + len(_HEADER_END)
    held = os.path.getsize(path) - offset
    if n < 0 or n * dtype.itemsize > held:
        raise AvatarFileError(path, f"truncated or lying header: {n:,} vertices need {max(n, 0) * dtype.itemsize:,} "
                                    f"bytes, the file holds {held:,}")
    return np.fromfile(path, dtype=dtype, count=n, offset=offset)


def _read_vertex(path: str | os.PathLike) -> np.ndarray:
    """The ``vertex`` element's structured array, with every required property present."""
    data = _binary_vertex(path)
    if data is None:
        try:
            with open(path, "rb") as f:
                # mmap=False: the data is read (and its length checked) now, not lazily later.
                ply = PlyData.read(f, mmap=False)
        except (PlyParseError, ValueError, EOFError) as e:  # UnicodeDecodeError is a ValueError
            raise AvatarFileError(path, f"not a valid PLY file or truncated ({e})") from None
        except MemoryError:
            raise AvatarFileError(path, "its header declares more data than memory holds") from None
        if "vertex" not in ply:
            raise AvatarFileError(path, "missing element vertex")
        data = ply["vertex"].data
    missing = [name for name in REQUIRED_PROPERTIES if name not in (data.dtype.names or ())]
    if missing:
        raise AvatarFileError(path, f"missing property {', '.join(missing)} in element vertex")
    return data


def _columns(names: tuple[str, ...], a: np.ndarray) -> dict[str, np.ndarray]:
    """Name the columns of ``a`` [N, len(names)]."""
    return {name: a[:, i] for i, name in enumerate(names)}


def _numbered(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}_{i}" for i in range(n))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)
