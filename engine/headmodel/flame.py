"""Load a user's FLAME 2020 / 2023 model into a `HeadModelData`, without chumpy and without running code.

FLAME is licensed: the user registers at https://flame.is.tue.mpg.de, downloads it and points
this program at the unpacked folder. The program never downloads FLAME itself.

A FLAME folder holds:
- the model, one of `MODEL_FILES` (a Python-2 pickle of chumpy `Ch` objects, numpy arrays and a
  scipy sparse `J_regressor`);
- UVs: `head_template.obj` (FLAME 2020/2023 "head template mesh") or `FLAME_texture.npz`
  (the FLAME texture space download, keys `vt`, `ft`); one of them is required;
- optionally `mediapipe_landmark_embedding.npz` (FLAME's MediaPipe landmark embedding). Without it
  the model has no landmarks (L = 0): DECA's `landmark_embedding.npy` is not read, because it is
  a pickled dict and this loader never unpickles anything but the model through `_FlameUnpickler`.

The pickle is read by `_FlameUnpickler`, whose `find_class` allows only numpy's array
reconstruction, scipy sparse matrices (rebuilt from their arrays by us) and chumpy classes
(replaced by a stand-in that only keeps its state dict). Any other global, such as `os.system`,
is refused before it is called.

Example:
    >>> model = HeadModel(load_flame("~/FLAME2023"))
"""
from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.core.multiarray import _reconstruct, scalar
from numpy.core.numeric import _frombuffer

from engine.headmodel.base import HeadModelData, HeadModelError
from engine.types import JOINT_NAMES

# Looked for in this order when given a folder: the newest release first.
MODEL_FILES = ("flame2023.pkl", "flame2023_no_jaw.pkl", "generic_model.pkl", "FLAME_NEUTRAL.pkl")
OBJ_FILES = ("head_template.obj", "head_template_mesh.obj")
TEXTURE_FILE = "FLAME_texture.npz"
LANDMARK_FILE = "mediapipe_landmark_embedding.npz"
N_SHAPE = 300  # FLAME's shapedirs hold 300 identity components, then the expression components
N_JOINTS = len(JOINT_NAMES)
GET_FLAME = ("FLAME is licensed and not shipped with this program, which never downloads it: register at "
             "https://flame.is.tue.mpg.de, download FLAME 2020 or FLAME 2023 and select the unpacked folder.")


def load_flame(path: str | Path) -> HeadModelData:
    """A FLAME 2020 / 2023 folder (or its .pkl) as `HeadModelData`; HeadModelError naming file and key if unusable.

    Mapping: shapedirs[..., :300] -> shapedirs [V, 3, 300], shapedirs[..., 300:] -> exprdirs [V, 3, E]
    (unnamed), kintree_table[0] -> parents (root -1), J_regressor -> dense [5, V] float32.
    """
    model_file = _model_file(Path(path).expanduser())
    model = _read_pickle(model_file)
    v_template = _field(model, "v_template", (None, 3), model_file)
    v = len(v_template)
    faces = _field(model, "f", (None, 3), model_file).astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        raise HeadModelError(f"{model_file}: key 'f' has vertex indices outside [0, {v})")
    shapedirs = _field(model, "shapedirs", (v, 3, None), model_file)
    if shapedirs.shape[2] <= N_SHAPE:
        raise HeadModelError(f"{model_file}: key 'shapedirs' has shape {shapedirs.shape}, expected ({v}, 3, 400): "
                             f"{N_SHAPE} identity components, then the expression components")
    posedirs = _field(model, "posedirs", (v, 3, 9 * (N_JOINTS - 1)), model_file)
    j_regressor = _field(model, "J_regressor", (N_JOINTS, v), model_file)
    weights = _field(model, "weights", (v, N_JOINTS), model_file)
    parents = _parents(_field(model, "kintree_table", (2, N_JOINTS), model_file), model_file)
    uvs, uv_faces = _read_uvs(model_file.parent, faces)
    lmk_faces, lmk_bary, lmk_ids = _read_landmarks(model_file.parent, len(faces))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return HeadModelData(
        name="flame2023" if "2023" in model_file.name else "flame2020",
        v_template=f32(v_template), faces=faces, shapedirs=f32(shapedirs[..., :N_SHAPE]),
        exprdirs=f32(shapedirs[..., N_SHAPE:]), posedirs=f32(posedirs), J_regressor=f32(j_regressor),
        weights=f32(weights), parents=parents, uvs=f32(uvs), uv_faces=uv_faces,
        lmk_faces=lmk_faces, lmk_bary=f32(lmk_bary), lmk_ids=lmk_ids, expr_names=("",) * (shapedirs.shape[2] - N_SHAPE),
    )


def _model_file(path: Path) -> Path:
    """The FLAME .pkl: ``path`` itself if it is a file, else the first of `MODEL_FILES` in the folder."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise HeadModelError(f"FLAME folder {path} does not exist. {GET_FLAME}")
    for name in MODEL_FILES:
        if (path / name).is_file():
            return path / name
    raise HeadModelError(f"no FLAME model in {path}: looked for {', '.join(MODEL_FILES)}. {GET_FLAME}")


# --- the restricted unpickler ------------------------------------------------------------------

class _Stub:
    """A pickled object we do not rebuild: keeps its state for `_to_array`. Subclassed per source class."""

    source = ""  # "module.name" of the class it stands in for

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChumpyStub(_Stub):
    """Stands in for a chumpy class; a plain `Ch` keeps its value under state['x']."""


class _SparseStub(_Stub):
    """Stands in for a scipy sparse matrix; `_sparse_to_dense` rebuilds it from its index arrays."""

    fmt = ""  # "csc", "csr" or "coo"


@functools.cache
def _stub_class(base: type[_Stub], source: str, fmt: str = "") -> type[_Stub]:
    """One stand-in class per pickled class name, so errors can name the original (``source``)."""
    return type(source.rsplit(".", 1)[1], (base,), {"source": source, "fmt": fmt})


def _latin1_encode(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as Python 3 writes bytes into protocol-2 pickles, limited to latin1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


# Functions and classes a pickled numpy array needs, in numpy 1.x and 2.x module spellings.
# They only build arrays and dtypes; `_reconstruct` refuses a class that is not an ndarray.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    # chumpy's Ch state holds an (empty) set of dirty variables
    ("__builtin__", "set"): set, ("builtins", "set"): set,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},  # protocol 5
}
_SPARSE_FORMATS = ("csc", "csr", "coo")


class _FlameUnpickler(pickle.Unpickler):
    """Unpickles a FLAME model, refusing every global outside the allowed arrays, matrices and chumpy stubs."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python-2 str holds raw array bytes: latin1 keeps them
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if module == "chumpy" or module.startswith("chumpy."):
            return _stub_class(_ChumpyStub, f"{module}.{name}")
        for fmt in _SPARSE_FORMATS:
            # scipy < 1.8 defined the classes in scipy.sparse.csc etc., later ones in scipy.sparse._csc
            if module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}") and name == f"{fmt}_matrix":
                return _stub_class(_SparseStub, f"{module}.{name}", fmt)
        raise HeadModelError(f"{self.path}: refusing to load global {module}.{name}; a FLAME model holds only "
                             f"arrays, so this file is damaged or not a FLAME model")


def _read_pickle(path: Path) -> dict:
    """The model file's top-level dict, its values still numpy arrays or `_Stub`s."""
    try:
        with open(path, "rb") as fh:
            model = _FlameUnpickler(fh, path).load()
    except HeadModelError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt pickle fails in many ways; each is the file's fault
        raise HeadModelError(f"cannot read FLAME model {path}: {type(e).__name__}: {e}") from e
    if not isinstance(model, dict):
        raise HeadModelError(f"{path}: expected a dict of FLAME arrays, found {type(model).__name__}")
    return model


# --- converting and checking the model's arrays -------------------------------------------------

def _field(model: dict, key: str, shape: tuple[int | None, ...], path: Path) -> np.ndarray:
    """model[key] as a finite numeric array of ``shape`` (None matches any size)."""
    if key not in model:
        raise HeadModelError(f"{path}: FLAME key {key!r} is missing")
    where = f"{path}: key {key!r}"
    arr = _to_array(model[key], where, shape)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise HeadModelError(f"{where} holds NaN or infinite values")
    return arr


def _to_array(obj: Any, where: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """A numeric numpy array from an ndarray, a chumpy stub (its 'x') or a sparse stub, checked against shape."""
    if isinstance(obj, _ChumpyStub):
        if not isinstance(obj.state, dict) or "x" not in obj.state:
            raise HeadModelError(f"{where} is a chumpy object ({obj.source}) without a stored value 'x' "
                                 f"(a computed expression); expected a plain array")
        obj = obj.state["x"]
    if isinstance(obj, _SparseStub):
        return _sparse_to_dense(obj, where, shape)  # checks the shape before allocating the dense array
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "biuf":
        kind = f"array of {obj.dtype}" if isinstance(obj, np.ndarray) else type(obj).__name__
        raise HeadModelError(f"{where} holds {kind}, expected a numeric array")
    _check_shape(obj.shape, shape, where)
    return obj


def _sparse_to_dense(stub: _SparseStub, where: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Rebuild a pickled csc/csr/coo matrix from its arrays (never through scipy's unpickling) as dense."""
    state = stub.state if isinstance(stub.state, dict) else {}
    size = state.get("_shape", state.get("shape"))  # scipy stores `_shape`; very old versions `shape`
    try:
        size = tuple(int(n) for n in size)
        _check_shape(size, shape, where)
        if stub.fmt == "coo":
            rows, cols = state["coords"] if "coords" in state else (state["row"], state["col"])
            matrix = sp.coo_matrix((state["data"], (rows, cols)), shape=size)  # checks index ranges
        else:
            matrix = getattr(sp, f"{stub.fmt}_matrix")((state["data"], state["indices"], state["indptr"]), shape=size)
            matrix.check_format(full_check=True)  # index ranges, so toarray() cannot write out of bounds
        return matrix.toarray()
    except HeadModelError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise HeadModelError(f"{where} is a malformed {stub.source}: {type(e).__name__}: {e}") from e


def _check_shape(found: tuple[int, ...], shape: tuple[int | None, ...], where: str) -> None:
    if len(found) != len(shape) or any(s is not None and s != n for s, n in zip(shape, found)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise HeadModelError(f"{where} has shape {tuple(found)}, expected {want}")


def _parents(kintree_table: np.ndarray, path: Path) -> np.ndarray:
    """parents [J] from kintree_table [2, J]: row 0 is each joint's parent, the root's a 2**32-1 sentinel."""
    parents = kintree_table[0].astype(np.int64)
    parents[0] = -1
    # smplx's lbs walks joints in order, so every parent must come before its child
    if any(not 0 <= p < j for j, p in enumerate(parents[1:], 1)):
        raise HeadModelError(f"{path}: key 'kintree_table' has parents {parents.tolist()}, "
                             f"expected each joint's parent to precede it")
    return parents


# --- UVs and landmarks from the files beside the model ------------------------------------------

def _read_uvs(folder: Path, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uvs [T, 2], uv_faces [F, 3]) from the template OBJ, else FLAME_texture.npz."""
    for name in OBJ_FILES:
        if (folder / name).is_file():
            uvs, obj_faces, uv_faces = _read_obj(folder / name)
            if obj_faces.shape != faces.shape:
                raise HeadModelError(f"{folder / name} has {len(obj_faces)} faces, the FLAME model {len(faces)}")
            # uv_faces pair with the model's faces row by row, so the OBJ must list the same triangles
            if not np.array_equal(obj_faces, faces):
                raise HeadModelError(f"{folder / name}: its faces differ from the FLAME model's 'f'; "
                                     f"use the template mesh of the same FLAME release")
            return _checked_uvs(uvs, uv_faces, folder / name)
    if (folder / TEXTURE_FILE).is_file():
        uvs, uv_faces = _read_npz(folder / TEXTURE_FILE, ("vt", "ft"))
        _check_shape(uvs.shape, (None, 2), f"{folder / TEXTURE_FILE}: key 'vt'")
        _check_shape(uv_faces.shape, (len(faces), 3), f"{folder / TEXTURE_FILE}: key 'ft'")
        return _checked_uvs(uvs, uv_faces.astype(np.int64), folder / TEXTURE_FILE)
    raise HeadModelError(f"no UVs for the FLAME model in {folder}: the avatar needs texture coordinates from "
                         f"{' or '.join(OBJ_FILES)} (FLAME's template mesh) or {TEXTURE_FILE} "
                         f"(FLAME's texture space), both at https://flame.is.tue.mpg.de")


def _checked_uvs(uvs: np.ndarray, uv_faces: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if uv_faces.size and (uv_faces.min() < 0 or uv_faces.max() >= len(uvs)):
        raise HeadModelError(f"{path}: texture-coordinate indices outside [0, {len(uvs)})")
    return uvs, uv_faces


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vt [T, 2], face vertex indices [F, 3], face vt indices [F, 3]), 0-based, from an OBJ's vt and f lines.

    Only what FLAME's template needs: triangles written `v/vt` or `v/vt/vn` with positive indices.
    """
    uvs: list[tuple[float, float]] = []
    faces: list[list[int]] = []
    uv_faces: list[list[int]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            parts = line.split()
            try:
                if parts and parts[0] == "vt":
                    uvs.append((float(parts[1]), float(parts[2])))  # an optional w is dropped
                elif parts and parts[0] == "f":
                    corners = [[int(i) - 1 for i in c.split("/")[:2]] for c in parts[1:]]
                    if len(corners) != 3 or any(len(c) != 2 or min(c) < 0 for c in corners):
                        raise ValueError("expected a triangle 'f v/vt v/vt v/vt' with positive indices")
                    faces.append([c[0] for c in corners])
                    uv_faces.append([c[1] for c in corners])
            except (ValueError, IndexError) as e:
                raise HeadModelError(f"{path} line {number}: cannot read {line.strip()!r}: {e}") from e
    return (np.array(uvs, dtype=np.float32).reshape(-1, 2), np.array(faces, dtype=np.int64).reshape(-1, 3),
            np.array(uv_faces, dtype=np.int64).reshape(-1, 3))


def _read_landmarks(folder: Path, n_faces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lmk_faces [L], lmk_bary [L, 3], lmk_ids [L]) from FLAME's MediaPipe embedding, whose
    ``landmark_indices`` name the FaceMesh point of each landmark; L = 0 when the file is absent."""
    path = folder / LANDMARK_FILE
    if not path.is_file():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64)
    lmk_faces, lmk_bary, lmk_ids = _read_npz(path, ("lmk_face_idx", "lmk_b_coords", "landmark_indices"))
    _check_shape(lmk_ids.shape, (len(lmk_faces),), f"{path}: key 'landmark_indices'")
    if lmk_ids.size and (lmk_ids.min() < 0 or lmk_ids.max() >= 478):
        raise HeadModelError(f"{path}: key 'landmark_indices' has FaceMesh indices outside [0, 478)")
    _check_shape(lmk_faces.shape, (None,), f"{path}: key 'lmk_face_idx'")
    _check_shape(lmk_bary.shape, (len(lmk_faces), 3), f"{path}: key 'lmk_b_coords'")
    if lmk_faces.size and (lmk_faces.min() < 0 or lmk_faces.max() >= n_faces):
        raise HeadModelError(f"{path}: key 'lmk_face_idx' has face indices outside [0, {n_faces})")
    return lmk_faces.astype(np.int64), lmk_bary, lmk_ids.astype(np.int64)


def _read_npz(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    """The numeric arrays ``keys`` of an .npz, read without unpickling."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise HeadModelError(f"cannot read {path}: {e}") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise HeadModelError(f"{path} is not an .npz archive")
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise HeadModelError(f"{path}: key(s) {', '.join(missing)} missing")
        try:
            arrays = [archive[k] for k in keys]
        except ValueError as e:  # object arrays would need pickle, which allow_pickle=False refuses
            raise HeadModelError(f"cannot read {path}: {e}") from e
    for key, arr in zip(keys, arrays):
        if arr.dtype.kind not in "biuf":
            raise HeadModelError(f"{path}: key {key!r} holds {arr.dtype}, expected numbers")
    return arrays
