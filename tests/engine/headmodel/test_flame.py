"""Tests for engine.headmodel.flame: loading fake FLAME folders safely, and refusing bad ones.

FLAME is licensed and not on the test machine, so every test writes a small fake FLAME pickle
the way the real one is made: chumpy `Ch` objects (from fake `chumpy` modules that exist only
while the pickle is written), a scipy csc `J_regressor`, pickle protocol 2.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from smplx.lbs import lbs

from engine.headmodel.base import HeadModel, HeadModelError
from engine.headmodel.flame import load_flame
from engine.types import HeadParams

V, F, T, L = 30, 40, 45, 7  # vertices, faces, texture coordinates, landmarks
KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


class Ch:
    """What chumpy pickles for a plain `Ch`: its __dict__, the value under 'x'."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._dirty_vars: set = set()
        self._itr = None


class add:  # noqa: N801 - chumpy.ch_ops names its classes in lower case
    """A chumpy expression: its state holds operands, not a value 'x'."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


@contextlib.contextmanager
def fake_chumpy() -> Iterator[None]:
    """Modules chumpy, chumpy.ch and chumpy.ch_ops in sys.modules, only while pickling."""
    modules = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "chumpy.ch_ops")}
    for cls, module in ((Ch, "chumpy.ch"), (add, "chumpy.ch_ops")):
        setattr(modules[module], cls.__name__, cls)
    saved = {cls: cls.__module__ for cls in (Ch, add)}
    Ch.__module__, add.__module__ = "chumpy.ch", "chumpy.ch_ops"
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            del sys.modules[name]
        for cls, module in saved.items():
            cls.__module__ = module


class Py2StylePickler(pickle.Pickler):
    """Writes array bytes as latin1 text, as Python 2 did (no `_codecs.encode` global)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray:
            return NotImplemented
        func, (cls, shape, typecode), (version, shp, dtype, fortran, raw) = obj.__reduce__()
        return func, (cls, shape, typecode.decode("latin1")), (version, shp, dtype, fortran, raw.decode("latin1"))


def dump(model: dict, path: Path, style: str = "py2") -> None:
    """Pickle ``model`` as Python 2 + old scipy ("py2"), Python 3 + numpy 2 ("py3") or protocol 5 ("p5")."""
    with fake_chumpy():
        if style == "p5":
            path.write_bytes(pickle.dumps(model, protocol=5))
            return
        buffer = io.BytesIO()
        (Py2StylePickler(buffer, protocol=2) if style == "py2" else pickle.Pickler(buffer, protocol=2)).dump(model)
    data = buffer.getvalue()
    # protocol 2 names globals as text lines, so other module spellings are a plain substitution
    if style == "py2":
        data = data.replace(b"scipy.sparse._csc\n", b"scipy.sparse.csc\n")
    else:
        data = data.replace(b"numpy.core.multiarray\n", b"numpy._core.multiarray\n")
    path.write_bytes(data)


def fake_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random FLAME-layout arrays: V vertices, F faces, 300 + 100 blend shapes, 5 joints."""
    rng = np.random.default_rng(seed)
    j_regressor = rng.random((5, V)) * (rng.random((5, V)) < 0.3)
    j_regressor[:, 0] += 1e-3  # no empty row
    weights = rng.random((V, 5))
    return {
        "v_template": rng.normal(size=(V, 3)) * 0.1,
        "f": rng.integers(0, V, size=(F, 3)).astype(np.uint32),
        "shapedirs": rng.normal(size=(V, 3, 400)) * 1e-3,
        "posedirs": rng.normal(size=(V, 3, 36)) * 1e-3,
        "J_regressor": j_regressor / j_regressor.sum(1, keepdims=True),
        "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "uvs": rng.random((T, 2)).astype(np.float32),
        "uv_faces": rng.integers(0, T, size=(F, 3)),
        "lmk_faces": rng.integers(0, F, size=L),
        "lmk_bary": rng.dirichlet(np.ones(3), size=L).astype(np.float32),
    }


def write_obj(path: Path, a: dict[str, np.ndarray], faces: np.ndarray | None = None) -> None:
    faces = a["f"] if faces is None else faces
    lines = ["# fake FLAME head template"] + [f"v {x} {y} {z}" for x, y, z in a["v_template"]]
    lines += [f"vt {u:.9g} {v:.9g}" for u, v in a["uvs"]]
    lines += ["f " + " ".join(f"{v + 1}/{t + 1}" for v, t in zip(fv, ft)) for fv, ft in zip(faces, a["uv_faces"])]
    path.write_text("\n".join(lines) + "\n")


def write_flame(folder: Path, a: dict[str, np.ndarray], *, name: str = "generic_model.pkl", style: str = "py2",
                drop: tuple[str, ...] = (), replace: dict[str, Any] | None = None, obj: bool = True,
                landmarks: bool = True) -> Path:
    """A fake FLAME folder: model pickle, template OBJ, MediaPipe landmark embedding. Returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model = {
        "v_template": Ch(a["v_template"]), "f": a["f"], "shapedirs": Ch(a["shapedirs"]),
        "posedirs": a["posedirs"], "J_regressor": sp.csc_matrix(a["J_regressor"]), "weights": Ch(a["weights"]),
        "kintree_table": a["kintree_table"], "bs_style": "lbs", "bs_type": "lrotmin",
    }
    model.update(replace or {})
    dump({k: v for k, v in model.items() if k not in drop}, folder / name, style)
    if obj:
        write_obj(folder / "head_template.obj", a)
    if landmarks:
        np.savez(folder / "mediapipe_landmark_embedding.npz", lmk_face_idx=a["lmk_faces"],
                 lmk_b_coords=a["lmk_bary"], landmark_indices=np.arange(L) * 3 + 1)
    return folder


def expect_error(path: Path, *words: str) -> HeadModelError:
    with pytest.raises(HeadModelError) as info:
        load_flame(path)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"
    return info.value


@pytest.mark.parametrize("style", ["py2", "py3", "p5"])
def test_loads_arrays_without_chumpy(tmp_path: Path, style: str) -> None:
    a = fake_arrays()
    data = load_flame(write_flame(tmp_path / "flame", a, style=style))
    assert "chumpy" not in sys.modules
    close = lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)  # noqa: E731 - float32 copies
    close(data.v_template, a["v_template"])
    close(data.shapedirs, a["shapedirs"][..., :300])
    close(data.exprdirs, a["shapedirs"][..., 300:])
    close(data.posedirs, a["posedirs"])
    close(data.J_regressor, a["J_regressor"])
    close(data.weights, a["weights"])
    np.testing.assert_array_equal(data.faces, a["f"])
    np.testing.assert_array_equal(data.parents, [-1, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.uvs, a["uvs"])
    np.testing.assert_array_equal(data.uv_faces, a["uv_faces"])
    np.testing.assert_array_equal(data.lmk_faces, a["lmk_faces"])
    np.testing.assert_array_equal(data.lmk_bary, a["lmk_bary"])
    np.testing.assert_array_equal(data.lmk_ids, np.arange(len(a["lmk_faces"])) * 3 + 1)   # FaceMesh indices
    assert (data.n_shape, data.n_expr, data.expr_names) == (300, 100, ("",) * 100)
    assert data.name == "flame2020"
    assert data.J_regressor.dtype == np.float32 and data.faces.dtype == np.int64


def test_head_model_poses_like_smplx_lbs(tmp_path: Path) -> None:
    a = fake_arrays(1)
    model = HeadModel(load_flame(write_flame(tmp_path / "flame", a)))
    g = torch.Generator().manual_seed(0)
    r = lambda n, s=0.2: torch.randn(2, n, generator=g) * s  # noqa: E731
    params = HeadParams(r(300, 1.0), r(100, 1.0), r(3), r(3), r(3), r(6), r(3))
    t = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    want, _ = lbs(torch.cat([params.shape, params.expr], 1), params.full_pose().reshape(2, -1),
                  t(a["v_template"]), t(a["shapedirs"]), t(a["posedirs"].reshape(-1, 36).T), t(a["J_regressor"]),
                  torch.tensor([-1, 0, 1, 1, 1]), t(a["weights"]))
    torch.testing.assert_close(model.vertices(params), want + params.translation[:, None], rtol=1e-5, atol=1e-6)
    assert model.landmarks(model.vertices(params)).shape == (2, L, 3)


@pytest.mark.parametrize("name", ["flame2023.pkl", "flame2023_no_jaw.pkl", "FLAME_NEUTRAL.pkl"])
def test_model_file_names_and_direct_path(tmp_path: Path, name: str) -> None:
    folder = write_flame(tmp_path / "flame", fake_arrays(), name=name)
    expected = "flame2023" if "2023" in name else "flame2020"
    assert load_flame(folder).name == expected
    assert load_flame(folder / name).name == expected


def test_texture_npz_uvs_and_no_landmarks(tmp_path: Path) -> None:
    a = fake_arrays()
    folder = write_flame(tmp_path / "flame", a, obj=False, landmarks=False)
    np.savez(folder / "FLAME_texture.npz", vt=a["uvs"], ft=a["uv_faces"], mean=np.zeros(3))
    data = load_flame(folder)
    np.testing.assert_array_equal(data.uvs, a["uvs"])
    np.testing.assert_array_equal(data.uv_faces, a["uv_faces"])
    assert data.lmk_faces.shape == (0,) and data.lmk_bary.shape == (0, 3)


@pytest.mark.parametrize("func", [os.system, eval])
def test_refuses_code_in_pickle(tmp_path: Path, func: Any) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"

    class Payload:
        def __reduce__(self) -> tuple:
            return func, (command,)

    folder = write_flame(tmp_path / "flame", fake_arrays(), replace={"v_template": Payload()})
    expect_error(folder, "generic_model.pkl", f".{func.__name__}", "refusing")
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(), protocol=2))  # the payload is live: a plain unpickler runs it
    assert marker.exists()


@pytest.mark.parametrize("key", KEYS)
def test_missing_key(tmp_path: Path, key: str) -> None:
    expect_error(write_flame(tmp_path / "flame", fake_arrays(), drop=(key,)), "generic_model.pkl", repr(key))


@pytest.mark.parametrize(("key", "value", "found", "expected"), [
    ("posedirs", np.zeros((V, 3, 35)), "(30, 3, 35)", "(30, 3, 36)"),
    ("J_regressor", sp.csc_matrix(np.ones((4, V))), "(4, 30)", "(5, 30)"),
    ("weights", Ch(np.ones((V, 4))), "(30, 4)", "(30, 5)"),
    ("shapedirs", Ch(np.zeros((V, 3, 300))), "(30, 3, 300)", "(30, 3, 400)"),
])
def test_wrong_shape(tmp_path: Path, key: str, value: Any, found: str, expected: str) -> None:
    folder = write_flame(tmp_path / "flame", fake_arrays(), replace={key: value})
    expect_error(folder, "generic_model.pkl", repr(key), found, expected)


def test_chumpy_expression_without_value(tmp_path: Path) -> None:
    folder = write_flame(tmp_path / "flame", fake_arrays(), replace={"weights": add(Ch(np.ones((V, 5))), 1)})
    expect_error(folder, "generic_model.pkl", "'weights'", "chumpy.ch_ops.add", "'x'")


def test_missing_model_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", "generic_model.pkl", "flame2023.pkl", "https://flame.is.tue.mpg.de")


def test_missing_uvs(tmp_path: Path) -> None:
    folder = write_flame(tmp_path / "flame", fake_arrays(), obj=False)
    expect_error(folder, "head_template.obj", "FLAME_texture.npz")


def test_obj_with_other_faces(tmp_path: Path) -> None:
    a = fake_arrays()
    folder = write_flame(tmp_path / "flame", a)
    write_obj(folder / "head_template.obj", a, faces=a["f"][:-1])
    expect_error(folder, "head_template.obj", f"{F - 1} faces", f"model {F}")
    write_obj(folder / "head_template.obj", a, faces=a["f"][::-1])
    expect_error(folder, "head_template.obj", "'f'")


def test_corrupt_pickle(tmp_path: Path) -> None:
    folder = write_flame(tmp_path / "flame", fake_arrays())
    path = folder / "generic_model.pkl"
    path.write_bytes(path.read_bytes()[:500])
    expect_error(folder, "generic_model.pkl", "cannot read")


@pytest.mark.parametrize("fmt", ["csr", "coo"])
def test_other_sparse_formats(tmp_path: Path, fmt: str) -> None:
    a = fake_arrays()
    matrix = getattr(sp, f"{fmt}_matrix")(a["J_regressor"])
    data = load_flame(write_flame(tmp_path / "flame", a, replace={"J_regressor": matrix}))
    np.testing.assert_allclose(data.J_regressor, a["J_regressor"], rtol=1e-6)


def test_sparse_indices_out_of_range(tmp_path: Path) -> None:
    matrix = sp.csc_matrix(fake_arrays()["J_regressor"])
    matrix.indices[0] = 999  # would make a dense conversion write outside the array
    folder = write_flame(tmp_path / "flame", fake_arrays(), replace={"J_regressor": matrix})
    expect_error(folder, "generic_model.pkl", "'J_regressor'", "malformed")
