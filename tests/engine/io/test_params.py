"""Tests for engine.io.params: VHAP-style .npz round trip, extras, rejection of bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.io import AvatarFileError, load_params, save_params
from engine.types import HeadParams

B, S, E = 7, 50, 20
VHAP_KEYS = {"rotation", "translation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr"}


def make_params(shared_shape: bool = True, seed: int = 0) -> HeadParams:
    g = torch.Generator().manual_seed(seed)
    r = lambda *size: torch.randn(*size, generator=g)  # noqa: E731
    shape = r(1, S).expand(B, S).clone() if shared_shape else r(B, S)
    return HeadParams(shape, r(B, E), r(B, 3), r(B, 3), r(B, 3), r(B, 6), r(B, 3))


def assert_params_equal(a: HeadParams, b: HeadParams) -> None:
    for field in ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype == torch.float32 and torch.equal(x, y), field


def expect_error(path: Path, *words: str) -> None:
    with pytest.raises(AvatarFileError) as info:
        load_params(path)
    assert path.name in str(info.value)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("shared_shape", [True, False])
def test_round_trip_is_exact(tmp_path: Path, shared_shape: bool) -> None:
    params = make_params(shared_shape)
    save_params(params, tmp_path / "p.npz")
    loaded, extras = load_params(tmp_path / "p.npz")
    assert_params_equal(params, loaded)
    assert extras == {}


def test_file_uses_vhap_keys_and_stores_shared_shape_once(tmp_path: Path) -> None:
    save_params(make_params(shared_shape=True), tmp_path / "shared.npz")
    save_params(make_params(shared_shape=False), tmp_path / "per_frame.npz")
    with np.load(tmp_path / "shared.npz") as shared, np.load(tmp_path / "per_frame.npz") as per_frame:
        assert set(shared.files) == VHAP_KEYS
        assert shared["shape"].shape == (S,) and per_frame["shape"].shape == (B, S)
        assert shared["eyes_pose"].shape == (B, 6) and shared["expr"].dtype == np.float32


def test_extra_arrays_round_trip(tmp_path: Path) -> None:
    extras = {
        "K": np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32),
        "image_size": np.array([512, 512]),
        "bbox": torch.tensor([[10.0, 20.0, 300.0, 310.0]]),
        "timestep_id": np.array([f"{i:05d}" for i in range(B)]),
    }
    save_params(make_params(), tmp_path / "p.npz", **extras)
    _, loaded = load_params(tmp_path / "p.npz")
    assert set(loaded) == set(extras)
    for name, value in extras.items():
        expected = value.numpy() if isinstance(value, torch.Tensor) else value
        assert loaded[name].dtype == expected.dtype and np.array_equal(loaded[name], expected), name


def test_reads_vhap_file(tmp_path: Path) -> None:
    """A file as VHAP writes it: float64 is fine, shape is [S], static_offset is an extra."""
    rng = np.random.default_rng(1)
    arrays = {"rotation": rng.normal(size=(B, 3)), "translation": rng.normal(size=(B, 3)),
              "neck_pose": rng.normal(size=(B, 3)), "jaw_pose": rng.normal(size=(B, 3)),
              "eyes_pose": rng.normal(size=(B, 6)), "shape": rng.normal(size=S), "expr": rng.normal(size=(B, E)),
              "static_offset": np.zeros((1, 10, 3), np.float32)}
    np.savez(tmp_path / "flame_param.npz", **arrays)
    params, extras = load_params(tmp_path / "flame_param.npz")
    assert params.batch_size == B and params.shape.shape == (B, S) and params.jaw.dtype == torch.float32
    assert torch.equal(params.shape[3], torch.from_numpy(arrays["shape"].astype(np.float32)))
    assert torch.equal(params.eyes, torch.from_numpy(arrays["eyes_pose"].astype(np.float32)))
    assert set(extras) == {"static_offset"}


def test_extra_clashing_with_parameter_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expr"):
        save_params(make_params(), tmp_path / "p.npz", expr=np.zeros(3))
    assert not (tmp_path / "p.npz").exists()


def test_missing_key_is_rejected(tmp_path: Path) -> None:
    params = make_params()
    arrays = {"rotation": params.rotation, "translation": params.translation, "neck_pose": params.neck,
              "eyes_pose": params.eyes, "shape": params.shape[0], "expr": params.expr}
    np.savez(tmp_path / "nojaw.npz", **{k: v.numpy() for k, v in arrays.items()})
    expect_error(tmp_path / "nojaw.npz", "missing key jaw_pose")


def test_wrong_shape_is_rejected(tmp_path: Path) -> None:
    save_params(make_params(), tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as f:
        arrays = dict(f)
    arrays["eyes_pose"] = arrays["eyes_pose"][:, :3]
    np.savez(tmp_path / "bad.npz", **arrays)
    expect_error(tmp_path / "bad.npz", "wrong shape for eyes_pose")
    arrays["eyes_pose"] = np.zeros((B + 1, 6), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    expect_error(tmp_path / "bad.npz", "wrong shape for eyes_pose")


@pytest.mark.parametrize("content", [b"not an npz at all\n", b""], ids=["text", "empty"])
def test_non_npz_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "params.npz"
    path.write_bytes(content)
    expect_error(path)


def test_single_npy_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "params.npy"
    np.save(path, np.zeros(3))
    expect_error(path, "not an .npz")


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    save_params(make_params(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path)


def test_failed_save_leaves_existing_file_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.npz"
    save_params(make_params(), path)
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        save_params(make_params(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
