"""Tests for engine.io.ply: the exact 3DGS layout, value round trip, rejection of bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from engine.io import AvatarFileError, export_ply, read_ply
from engine.types import Gaussians

C0 = 0.28209479177387814
EXPECTED_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(45)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)
N = 64


def make_gaussians(n: int = N, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1)  # [N, 4]
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 0.1,
        quats=quats,
        scales=torch.exp(torch.empty(n, 3).uniform_(-6, -2, generator=g)),
        opacities=torch.empty(n).uniform_(0.01, 0.99, generator=g),
        colors=torch.rand(n, 3, generator=g),
    )


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Gaussians, Path]:
    g = make_gaussians()
    path = tmp_path / "points.ply"
    export_ply(g, path)
    return g, path


def expect_error(path: Path, *words: str) -> None:
    with pytest.raises(AvatarFileError) as info:
        read_ply(path)
    assert path.name in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_property_names_order_and_types(exported) -> None:
    _, path = exported
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    assert [el.name for el in ply.elements] == ["vertex"]
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == EXPECTED_PROPERTIES
    assert all(p.val_dtype.endswith("f4") for p in vertex.properties)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")


def test_values_are_stored_pre_activation(exported) -> None:
    g, path = exported
    v = PlyData.read(str(path))["vertex"]
    col = lambda *names: np.stack([v[n] for n in names], axis=1)  # noqa: E731
    np.testing.assert_allclose(col("x", "y", "z"), g.means.numpy(), atol=1e-7)
    np.testing.assert_allclose(col("f_dc_0", "f_dc_1", "f_dc_2"), (g.colors.numpy() - 0.5) / C0, atol=1e-6)
    p = g.opacities.double().numpy()
    np.testing.assert_allclose(v["opacity"], np.log(p / (1 - p)), atol=1e-5)
    np.testing.assert_allclose(col("scale_0", "scale_1", "scale_2"), np.log(g.scales.numpy()), atol=1e-5)
    np.testing.assert_allclose(col("rot_0", "rot_1", "rot_2", "rot_3"), g.quats.numpy(), atol=1e-7)  # rot_0 = w
    assert not col("nx", "ny", "nz").any()
    assert not col(*(f"f_rest_{i}" for i in range(45))).any()


def test_values_round_trip_after_activation(exported) -> None:
    g, path = exported
    back = read_ply(path)
    assert len(back) == N
    for name in ("means", "quats", "scales", "opacities", "colors"):
        got = getattr(back, name)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, getattr(g, name), atol=1e-6, rtol=0, msg=name)


def test_extreme_opacities_are_clamped_to_finite_logits(tmp_path: Path) -> None:
    g = make_gaussians(n=2)
    g = Gaussians(g.means, g.quats, g.scales, torch.tensor([0.0, 1.0]), g.colors)
    export_ply(g, tmp_path / "x.ply")
    logits = PlyData.read(str(tmp_path / "x.ply"))["vertex"]["opacity"]
    assert np.isfinite(logits).all()
    back = read_ply(tmp_path / "x.ply").opacities
    torch.testing.assert_close(back, torch.tensor([0.0, 1.0]), atol=2e-6, rtol=0)  # clamped to [1e-6, 1 - 1e-6]


def test_readable_with_3dgs_loader_logic(exported) -> None:
    """The parsing of gaussian-splatting's GaussianModel.load_ply (SH degree 3)."""
    g, path = exported
    plydata = PlyData.read(str(path))
    xyz = np.stack((np.asarray(plydata.elements[0]["x"]), np.asarray(plydata.elements[0]["y"]),
                    np.asarray(plydata.elements[0]["z"])), axis=1)
    opacities = np.asarray(plydata.elements[0]["opacity"])[..., np.newaxis]
    features_dc = np.zeros((xyz.shape[0], 3, 1))
    for i in range(3):
        features_dc[:, i, 0] = np.asarray(plydata.elements[0][f"f_dc_{i}"])
    extra_f_names = [p.name for p in plydata.elements[0].properties if p.name.startswith("f_rest_")]
    extra_f_names = sorted(extra_f_names, key=lambda x: int(x.split("_")[-1]))
    assert len(extra_f_names) == 3 * (3 + 1) ** 2 - 3
    features_extra = np.zeros((xyz.shape[0], len(extra_f_names)))
    for idx, attr_name in enumerate(extra_f_names):
        features_extra[:, idx] = np.asarray(plydata.elements[0][attr_name])
    features_extra = features_extra.reshape((features_extra.shape[0], 3, (3 + 1) ** 2 - 1))
    scale_names = sorted([p.name for p in plydata.elements[0].properties if p.name.startswith("scale_")],
                         key=lambda x: int(x.split("_")[-1]))
    scales = np.stack([np.asarray(plydata.elements[0][n]) for n in scale_names], axis=1)
    rot_names = sorted([p.name for p in plydata.elements[0].properties if p.name.startswith("rot")],
                       key=lambda x: int(x.split("_")[-1]))
    rots = np.stack([np.asarray(plydata.elements[0][n]) for n in rot_names], axis=1)

    assert xyz.shape == (N, 3) and opacities.shape == (N, 1) and scales.shape == (N, 3) and rots.shape == (N, 4)
    colors = features_dc[:, :, 0] * C0 + 0.5  # 3DGS's SH degree-0 colour
    np.testing.assert_allclose(colors, g.colors.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.exp(scales), g.scales.numpy(), rtol=1e-6)


def test_reads_minimal_file_without_normals_or_f_rest(tmp_path: Path) -> None:
    g = make_gaussians(n=5)
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    columns = np.concatenate([g.means, (g.colors - 0.5) / C0, torch.logit(g.opacities)[:, None],
                              g.scales.log(), g.quats * 2], axis=1)  # unnormalised quats are fine
    vertex = np.zeros(5, dtype=[(n, "<f4") for n in names])
    for i, n in enumerate(names):
        vertex[n] = columns[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "min.ply"))
    back = read_ply(tmp_path / "min.ply")
    torch.testing.assert_close(back.quats, g.quats, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.colors, g.colors, atol=1e-6, rtol=0)


def test_missing_property_is_rejected(tmp_path: Path) -> None:
    vertex = np.zeros(3, dtype=[(n, "<f4") for n in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity")])
    path = tmp_path / "partial.ply"
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    expect_error(path, "missing property", "scale_0", "rot_3")


def test_missing_vertex_element_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "faces.ply"
    PlyData([PlyElement.describe(np.zeros(2, dtype=[("a", "<f4")]), "face")]).write(str(path))
    expect_error(path, "vertex")


def test_truncated_file_is_rejected(exported) -> None:
    _, path = exported
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path)


@pytest.mark.parametrize("content", [b"hello, not a ply\n", b"", b"\x89PNG\r\n\x1a\n" + bytes(range(256))],
                         ids=["text", "empty", "binary"])
def test_non_ply_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.ply"
    path.write_bytes(content)
    expect_error(path)


def test_export_replaces_existing_file_atomically(exported, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = exported
    before = path.read_bytes()

    def crash(self, stream):
        stream.write(b"ply\n")
        raise OSError("disk full")

    monkeypatch.setattr(PlyData, "write", crash)
    with pytest.raises(OSError):
        export_ply(make_gaussians(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_3dgs_file_is_read_in_one_block_and_other_layouts_alike(exported, tmp_path: Path, monkeypatch) -> None:
    """Binary files are read without plyfile's per-value loop (~12 s for 62K Gaussians before);
    big-endian and ASCII files (plyfile's reader) give the same Gaussians."""
    import engine.io.ply as ply_module

    g, path = exported
    ascii_path, big_path = tmp_path / "a.ply", tmp_path / "b.ply"
    data = PlyData.read(str(path))
    PlyData(data.elements, text=True).write(str(ascii_path))
    PlyData(data.elements, byte_order=">").write(str(big_path))
    want = read_ply(path)
    for other in (ascii_path, big_path):
        back = read_ply(other)
        for name in ("means", "quats", "scales", "opacities", "colors"):
            torch.testing.assert_close(getattr(back, name), getattr(want, name), atol=1e-6, rtol=1e-6)

    def no_plyfile(*a, **k):
        raise AssertionError("plyfile's reader was used for a binary 3DGS file")

    monkeypatch.setattr(ply_module.PlyData, "read", no_plyfile)
    assert len(read_ply(path).means) == len(g.means)


def test_a_lying_vertex_count_is_refused_before_allocating(exported, tmp_path: Path) -> None:
    """A header promising 10^12 vertices was an uncaught MemoryError."""
    import tracemalloc

    _, path = exported
    data = path.read_bytes()
    end = data.index(b"end_header\n")
    head = data[:end].replace(f"element vertex {len(exported[0].means)}".encode(), b"element vertex 1000000000000")
    liar = tmp_path / "liar.ply"
    liar.write_bytes(head + data[end:])
    tracemalloc.start()
    expect_error(liar, "1,000,000,000,000 vertices need")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 << 20
