"""Avatar bundles: one ``.savatar`` file holding everything needed to animate an avatar.

Format (schema 1)
-----------------
A zip archive (entries deflate-compressed) with these entries:

``manifest.json``
    UTF-8 JSON object::

        {"format": "spatialavatar-bundle", "schema": 1,
         "head_model": "openhead-1",       # Avatar.head_model
         "resolution": R,                  # UV raster size
         "metadata": {...},                # Avatar.metadata, verbatim
         "arrays": {NAME: {"dtype": "float32", "shape": [3, R, R], "sha256": HEX}, ...},
         "thumbnail": null | {"shape": [H, W, 3], "sha256": HEX}}

    ``arrays`` lists every array below by NAME; ``sha256`` is the digest of the entry's
    bytes (the whole ``.npy`` file), so a reader can check it before parsing anything.
``maps/NAME.npy`` for NAME in local_position, rotation, log_scale, color, opacity
    The pre-activation UV maps of ``UVGaussians``, float32 ``[C, R, R]``.
``valid.npy``
    The texel mask, bool ``[R, R]``.
``shape.npy``
    The subject's identity coefficients ``Avatar.shape``, float32 ``[S]``.
``thumbnail.png`` (only if the avatar has a thumbnail)
    uint8 RGB image ``[H, W, 3]``, lossless.

Schema 2 adds a refined avatar's expression residual (`engine.residual`); an avatar without
one is still written as schema 1, so older readers open it:

``manifest.json`` ``"residual": {"features": C, "hidden": H, "condition": D}``
    The residual's sizes; its arrays are listed in ``arrays`` like the others.
``residual/NAME.npy``
    float32, NAME and shape as `engine.residual.state_shapes` gives them (``features`` is a UV
    map ``[C, R, R]``).

Schema 3 adds the outer layer (hair shell and bust, `engine.headmodel.outer`); an avatar
without one is written as schema 1 or 2 as before:

``manifest.json`` ``"outer": {"resolution": Ro}``
    The outer page's raster size; its arrays are listed in ``arrays`` like the others.
``outer/NAME.npy`` for NAME in local_position, rotation, log_scale, color, opacity, valid
    The outer page's UV maps, float32 ``[C, Ro, Ro]``, and its texel mask, bool ``[Ro, Ro]``.

Entry names are fixed by the format (not read from the manifest); other entries are
ignored, so a later schema may add entries that schema-1 readers skip.

Guarantees: :func:`save_avatar` writes atomically (an existing file is replaced only by a
complete bundle), and :func:`load_avatar` validates the manifest, every checksum, dtype and
shape before building anything, raising :class:`AvatarFileError` on any defect. A round
trip is bit-exact. Floating-point tensors are stored as float32, the engine's working
precision; metadata goes through JSON, so tuples come back as lists.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib

import imageio.v3 as iio
import numpy as np
import torch

from engine.atomic import atomic_write
from engine.io.errors import AvatarFileError
from engine.residual import state_shapes
from engine.types import UV_MAP_CHANNELS, Avatar, UVGaussians

FORMAT = "spatialavatar-bundle"
SCHEMA = 3
"""The newest schema; a file is written with the oldest schema that holds it (1: no residual,
no outer layer; 2: a residual; 3: an outer layer)."""
RESIDUAL_PREFIX = "residual/"
OUTER_PREFIX = "outer/"
SUFFIX = ".savatar"

MANIFEST_ENTRY = "manifest.json"
THUMBNAIL_ENTRY = "thumbnail.png"
MAX_RESOLUTION = 1024          # UV pages: 256 today; 1024² Gaussians would be ~15 GB of optimiser state
MAX_MANIFEST_BYTES = 16 << 20
MAX_THUMBNAIL_BYTES = 32 << 20
_NPY_HEADER_SLACK = 4096       # an .npy header is 128 bytes or a few multiples of it
# Top-level manifest fields besides format and schema, with their JSON types.
_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "head_model": str, "resolution": int, "metadata": dict, "arrays": dict, "thumbnail": (dict, type(None)),
}
# Fixed date so that saving the same avatar twice gives identical bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _entry_name(array_name: str) -> str:
    """The zip entry holding array ``array_name``."""
    return f"maps/{array_name}.npy" if array_name in UV_MAP_CHANNELS else f"{array_name}.npy"


def _schema(avatar: Avatar) -> int:
    return 3 if avatar.outer is not None else 2 if avatar.residual is not None else 1


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- saving


def save_avatar(avatar: Avatar, path: str | os.PathLike) -> None:
    """Write ``avatar`` to ``path`` as a bundle (see the module docstring), atomically.

    Raises ValueError (before touching the disk) if the metadata is not JSON-serialisable
    or the thumbnail is not a uint8 [H, W, 3] array.
    """
    g = avatar.gaussians
    arrays = {name: _float32(t) for name, t in g.maps().items()}
    arrays["valid"] = g.valid.detach().cpu().numpy()        # [R, R] bool
    arrays["shape"] = _float32(avatar.shape)                # [S]
    if avatar.residual is not None:
        arrays.update({RESIDUAL_PREFIX + k: _float32(v) for k, v in avatar.residual.items()})
    if avatar.outer is not None:
        arrays.update({OUTER_PREFIX + k: _float32(v) for k, v in avatar.outer.maps().items()})
        arrays[OUTER_PREFIX + "valid"] = avatar.outer.valid.detach().cpu().numpy()
    entries = {_entry_name(name): _npy_bytes(a) for name, a in arrays.items()}

    manifest = {
        "format": FORMAT,
        "schema": _schema(avatar),
        "head_model": avatar.head_model,
        "resolution": g.resolution,
        "metadata": avatar.metadata,
        "arrays": {
            name: {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": _sha256(entries[_entry_name(name)])}
            for name, a in arrays.items()
        },
        "thumbnail": None,
    }
    if avatar.residual is not None:
        r = avatar.residual
        manifest["residual"] = {"features": int(r["features"].shape[0]), "hidden": int(r["film_in.weight"].shape[0]),
                                "condition": int(r["film_in.weight"].shape[1])}
    if avatar.outer is not None:
        manifest["outer"] = {"resolution": avatar.outer.resolution}
    if avatar.thumbnail is not None:
        png = _png_bytes(avatar.thumbnail)
        entries[THUMBNAIL_ENTRY] = png
        manifest["thumbnail"] = {"shape": list(avatar.thumbnail.shape), "sha256": _sha256(png)}
    entries = {MANIFEST_ENTRY: _manifest_bytes(manifest), **entries}

    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data, compress_type=zipfile.ZIP_DEFLATED)


def _float32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _png_bytes(image: object) -> bytes:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        desc = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"Avatar.thumbnail must be a uint8 [H, W, 3] numpy array, got {desc}")
    return iio.imwrite("<bytes>", image, extension=".png")


def _manifest_bytes(manifest: dict) -> bytes:
    try:
        # allow_nan=False: NaN/Infinity are not JSON and other readers would reject them.
        return json.dumps(manifest, indent=2, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"Avatar.metadata must be JSON-serialisable: {e}") from e


# ----------------------------------------------------------------------------- loading


def load_avatar(path: str | os.PathLike) -> Avatar:
    """Read a bundle written by :func:`save_avatar`.

    Everything is validated before the Avatar is built; any defect (not a zip, truncated,
    missing entry, checksum mismatch, wrong dtype or shape, unknown schema) raises
    :class:`AvatarFileError` naming the file and the problem.
    """
    with _open_zip(path) as zf:
        manifest = _read_manifest(zf, path)
        specs = manifest["arrays"]
        arrays = {name: _read_array(zf, path, name, _spec(specs, name, path), *want)
                  for name, want in _expected_arrays(manifest, path).items()}
        thumbnail = _read_thumbnail(zf, path, manifest["thumbnail"])

    t = {name: torch.from_numpy(a) for name, a in arrays.items()}
    gaussians = UVGaussians(**{name: t[name] for name in UV_MAP_CHANNELS}, valid=t["valid"])
    residual = {k[len(RESIDUAL_PREFIX):]: v for k, v in t.items() if k.startswith(RESIDUAL_PREFIX)} or None
    outer = None
    if "outer" in manifest:
        outer = UVGaussians(**{name: t[OUTER_PREFIX + name] for name in UV_MAP_CHANNELS}, valid=t[OUTER_PREFIX + "valid"])
    return Avatar(gaussians, manifest["head_model"], t["shape"], manifest["metadata"], thumbnail, residual, outer)


def _open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (NotImplementedError, RuntimeError, RecursionError, ValueError, OverflowError) as e:
        raise AvatarFileError(path, f"unsupported or damaged zip archive ({type(e).__name__}: {e})") from None
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            raise AvatarFileError(path, "empty file") from None
        if head == b"PK\x03\x04":
            raise AvatarFileError(path, "truncated or damaged zip archive (no central directory)") from None
        raise AvatarFileError(path, f"not a zip archive, so not a {SUFFIX} bundle") from None


def _read_entry(zf: zipfile.ZipFile, path: str | os.PathLike, entry: str, max_bytes: int) -> bytes:
    """The bytes of ``entry``, refused before decompression when the archive says it holds more
    than ``max_bytes`` (a zip bomb; zipfile never inflates past the size the archive states);
    zip-level damage (bad CRC, bad deflate stream, an unsupported method, encryption) is an
    AvatarFileError."""
    try:
        size = zf.getinfo(entry).file_size
    except KeyError:
        raise AvatarFileError(path, f"missing entry {entry}") from None
    if size > max_bytes:
        raise AvatarFileError(path, f"entry {entry} claims {size:,} bytes, more than the {max_bytes:,} it may hold")
    try:
        return zf.read(entry)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, RecursionError,
            ValueError, OverflowError) as e:
        raise AvatarFileError(path, f"damaged or unsupported entry {entry} ({type(e).__name__}: {e})") from None


def _read_manifest(zf: zipfile.ZipFile, path: str | os.PathLike) -> dict:
    """Parse manifest.json and check its top-level fields (types, format, schema)."""
    try:
        manifest = json.loads(_read_entry(zf, path, MANIFEST_ENTRY, MAX_MANIFEST_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise AvatarFileError(path, f"{MANIFEST_ENTRY} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise AvatarFileError(path, f"not a {FORMAT} file ({MANIFEST_ENTRY} format is {found!r})")
    if manifest.get("schema") not in range(1, SCHEMA + 1):
        raise AvatarFileError(path, f"unknown schema {manifest.get('schema')!r} (this version reads schemas 1 to {SCHEMA})")
    for key, kind in _MANIFEST_FIELDS.items():
        if key not in manifest:
            raise AvatarFileError(path, f"{MANIFEST_ENTRY} has no field {key!r}")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):  # JSON true is no int
            raise AvatarFileError(path, f"{MANIFEST_ENTRY} field {key!r} has the wrong type")
    if not 0 < manifest["resolution"] <= MAX_RESOLUTION:
        raise AvatarFileError(path, f"{MANIFEST_ENTRY} resolution must be from 1 to {MAX_RESOLUTION}, "
                                    f"got {manifest['resolution']}")
    return manifest


def _expected_arrays(manifest: dict, path: str | os.PathLike) -> dict[str, tuple[str, list[int]]]:
    """(dtype, shape) of every array, as implied by the resolution and the length of ``shape``."""
    r = manifest["resolution"]
    expected = {name: ("float32", [c, r, r]) for name, c in UV_MAP_CHANNELS.items()}
    expected["valid"] = ("bool", [r, r])
    n_shape = _spec(manifest["arrays"], "shape", path)["shape"]  # [S], S is free
    if len(n_shape) != 1:
        raise AvatarFileError(path, f"wrong shape for {_entry_name('shape')}: manifest says {n_shape}, expected [S]")
    expected["shape"] = ("float32", n_shape)
    if "residual" in manifest:
        sizes = manifest["residual"]
        keys = ("features", "hidden", "condition")
        if not (isinstance(sizes, dict) and all(type(sizes.get(k)) is int and 0 < sizes[k] <= 4096 for k in keys)):
            raise AvatarFileError(path, f"{MANIFEST_ENTRY} field 'residual' must give integers from 1 to 4096 for "
                                        f"{', '.join(keys)}")
        shapes = state_shapes(sizes["features"], sizes["hidden"], sizes["condition"], r)
        expected.update({RESIDUAL_PREFIX + k: ("float32", shape) for k, shape in shapes.items()})
    if "outer" in manifest:
        sizes = manifest["outer"]
        ro = sizes.get("resolution") if isinstance(sizes, dict) else None
        if type(ro) is not int or not 0 < ro <= MAX_RESOLUTION:
            raise AvatarFileError(path, f"{MANIFEST_ENTRY} field 'outer' must give a resolution from 1 to "
                                        f"{MAX_RESOLUTION}")
        expected.update({OUTER_PREFIX + name: ("float32", [c, ro, ro]) for name, c in UV_MAP_CHANNELS.items()})
        expected[OUTER_PREFIX + "valid"] = ("bool", [ro, ro])
    return expected


def _spec(specs: dict, name: str, path: str | os.PathLike) -> dict:
    """The manifest record of array ``name``, checked to have a dtype, a shape and a sha256."""
    spec = specs.get(name)
    if not isinstance(spec, dict):
        raise AvatarFileError(path, f"{MANIFEST_ENTRY} does not describe array {name}")
    ok = (isinstance(spec.get("dtype"), str) and isinstance(spec.get("sha256"), str)
          and isinstance(spec.get("shape"), list) and all(type(d) is int and d >= 0 for d in spec["shape"]))
    if not ok:
        raise AvatarFileError(path, f"{MANIFEST_ENTRY} record of array {name} is malformed")
    return spec


def _read_array(zf: zipfile.ZipFile, path: str | os.PathLike, name: str, spec: dict,
                dtype: str, shape: list[int]) -> np.ndarray:
    """Read array ``name``; manifest, checksum and the .npy header must all agree with (dtype, shape)."""
    entry = _entry_name(name)
    if spec["dtype"] != dtype:
        raise AvatarFileError(path, f"wrong dtype for {entry}: manifest says {spec['dtype']}, expected {dtype}")
    if spec["shape"] != shape:
        raise AvatarFileError(path, f"wrong shape for {entry}: manifest says {spec['shape']}, expected {shape}")
    if name == "shape" and not 0 < shape[0] <= 10_000:
        raise AvatarFileError(path, f"wrong shape for {entry}: {shape[0]} identity coefficients")
    data = _read_entry(zf, path, entry, np.dtype(dtype).itemsize * int(np.prod(shape)) + _NPY_HEADER_SLACK)
    if _sha256(data) != spec["sha256"]:
        raise AvatarFileError(path, f"checksum mismatch for {entry}")
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise AvatarFileError(path, f"{entry} is not a valid .npy array ({e})") from None
    if a.dtype != np.dtype(dtype) or list(a.shape) != shape:
        found = f"{a.dtype} {list(a.shape)}"
        raise AvatarFileError(path, f"wrong shape for {entry}: holds {found}, expected {dtype} {shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise AvatarFileError(path, f"{entry} holds NaN or infinite values")
    return a


def _read_thumbnail(zf: zipfile.ZipFile, path: str | os.PathLike, spec: dict | None) -> np.ndarray | None:
    if spec is None:
        return None
    data = _read_entry(zf, path, THUMBNAIL_ENTRY, MAX_THUMBNAIL_BYTES)
    if _sha256(data) != spec.get("sha256"):
        raise AvatarFileError(path, f"checksum mismatch for {THUMBNAIL_ENTRY}")
    try:
        image = iio.imread(data, extension=".png")
    except Exception as e:  # the PNG decoder's exception types are plugin-specific
        raise AvatarFileError(path, f"{THUMBNAIL_ENTRY} is not a valid PNG ({e})") from None
    if image.dtype != np.uint8 or list(image.shape) != spec.get("shape"):
        found, want = f"{image.dtype} {list(image.shape)}", f"uint8 {spec.get('shape')}"
        raise AvatarFileError(path, f"wrong shape for {THUMBNAIL_ENTRY}: holds {found}, expected {want}")
    return image
