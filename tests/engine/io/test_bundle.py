"""Tests for engine.io.bundle: bit-exact round trip, atomic save, rejection of damaged files."""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from engine.io import AvatarFileError, load_avatar, save_avatar
from engine.io import bundle
from engine.residual import state_shapes
from engine.types import UV_MAP_CHANNELS, Avatar, UVGaussians

R = 16


def make_avatar(seed: int = 0, thumbnail: bool = True) -> Avatar:
    """A random R x R avatar; invalid texels carry zeros, as UVGaussians promises."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(R, R, generator=g) > 0.4                                   # [R, R]
    maps = {name: torch.randn(c, R, R, generator=g) * valid for name, c in UV_MAP_CHANNELS.items()}
    image = np.random.default_rng(seed).integers(0, 256, (12, 20, 3), dtype=np.uint8) if thumbnail else None
    metadata = {"generator": "test", "source": ["a.png", "b.png"], "nested": {"fov": 14.5, "n": 3, "ok": True}}
    return Avatar(UVGaussians(**maps, valid=valid), "openhead-1", torch.randn(50, generator=g), metadata, image)


def assert_same(a: Avatar, b: Avatar) -> None:
    for name in (*UV_MAP_CHANNELS, "valid"):
        x, y = getattr(a.gaussians, name), getattr(b.gaussians, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert torch.equal(a.shape, b.shape) and a.shape.dtype == b.shape.dtype
    assert a.head_model == b.head_model
    assert a.metadata == b.metadata
    if a.thumbnail is None:
        assert b.thumbnail is None
    else:
        assert b.thumbnail.dtype == np.uint8 and np.array_equal(a.thumbnail, b.thumbnail)


def rewrite(src: Path, dst: Path, drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None) -> None:
    """Copy the bundle ``src`` to ``dst`` without the ``drop`` entries and with ``replace``d ones."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            if name not in drop:
                zout.writestr(name, replace.get(name, zin.read(name)))


def edit_manifest(src: Path, dst: Path, **changes) -> None:
    with zipfile.ZipFile(src) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest.update(changes)
    rewrite(src, dst, replace={"manifest.json": json.dumps(manifest).encode()})


def expect_error(path: Path, *words: str) -> AvatarFileError:
    """load_avatar(path) must raise AvatarFileError naming the file and containing ``words``."""
    with pytest.raises(AvatarFileError) as info:
        load_avatar(path)
    message = str(info.value)
    assert path.name in message
    for word in words:
        assert word in message
    return info.value


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "head.savatar"
    save_avatar(make_avatar(), path)
    return path


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("thumbnail", [True, False])
def test_round_trip_is_bit_exact(tmp_path: Path, thumbnail: bool) -> None:
    avatar = make_avatar(thumbnail=thumbnail)
    save_avatar(avatar, tmp_path / "a.savatar")
    loaded = load_avatar(tmp_path / "a.savatar")
    assert_same(avatar, loaded)
    assert loaded.gaussians.color.dtype == torch.float32 and loaded.gaussians.valid.dtype == torch.bool


def test_manifest_describes_every_array(saved: Path) -> None:
    with zipfile.ZipFile(saved) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        names = set(zf.namelist())
    assert manifest["format"] == "spatialavatar-bundle" and manifest["schema"] == 1
    assert manifest["head_model"] == "openhead-1" and manifest["resolution"] == R
    assert set(manifest["arrays"]) == {*UV_MAP_CHANNELS, "valid", "shape"}
    color, valid, shape = (manifest["arrays"][n] for n in ("color", "valid", "shape"))
    assert (color["dtype"], color["shape"]) == ("float32", [3, R, R])
    assert (valid["dtype"], valid["shape"]) == ("bool", [R, R])
    assert (shape["dtype"], shape["shape"]) == ("float32", [50])
    assert all(len(spec["sha256"]) == 64 for spec in manifest["arrays"].values())
    assert {f"maps/{n}.npy" for n in UV_MAP_CHANNELS} | {"valid.npy", "shape.npy", "thumbnail.png"} < names


def test_saving_twice_gives_identical_bytes(tmp_path: Path) -> None:
    save_avatar(make_avatar(), tmp_path / "a.savatar")
    save_avatar(make_avatar(), tmp_path / "b.savatar")
    assert (tmp_path / "a.savatar").read_bytes() == (tmp_path / "b.savatar").read_bytes()


def test_save_overwrites_with_new_avatar(saved: Path) -> None:
    other = make_avatar(seed=1, thumbnail=False)
    save_avatar(other, saved)
    assert_same(other, load_avatar(saved))


# ----------------------------------------------------------------------------- damaged files


def test_truncated_file_is_rejected(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    expect_error(saved, "truncated")


def test_flipped_byte_inside_array_entry_is_rejected(saved: Path) -> None:
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("maps/color.npy")
    # Local header: 30 fixed bytes, then the file name and extra field, then the data.
    with open(saved, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
    offset = info.header_offset + 30 + int(name_len) + int(extra_len) + info.compress_size // 2
    data = bytearray(saved.read_bytes())
    data[offset] ^= 0xFF
    saved.write_bytes(bytes(data))
    expect_error(saved, "maps/color.npy")


def test_checksum_mismatch_is_rejected(saved: Path, tmp_path: Path) -> None:
    tampered = make_avatar(seed=5).gaussians.color.numpy()
    buf = io.BytesIO()
    np.save(buf, tampered)
    bad = tmp_path / "bad.savatar"
    rewrite(saved, bad, replace={"maps/color.npy": buf.getvalue()})
    expect_error(bad, "checksum mismatch for maps/color.npy")


@pytest.mark.parametrize("entry", ["maps/opacity.npy", "valid.npy", "shape.npy", "thumbnail.png", "manifest.json"])
def test_missing_entry_is_rejected(saved: Path, tmp_path: Path, entry: str) -> None:
    bad = tmp_path / "bad.savatar"
    rewrite(saved, bad, drop=(entry,))
    expect_error(bad, f"missing entry {entry}")


def test_unknown_schema_is_rejected(saved: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.savatar"
    edit_manifest(saved, bad, schema=4)
    expect_error(bad, "unknown schema 4")


# ----------------------------------------------------------------------------- expression residual


def with_residual(avatar: Avatar, features: int = 3, hidden: int = 4, cond: int = 7) -> Avatar:
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(*shape, generator=g) for k, shape in state_shapes(features, hidden, cond, R).items()}
    return dataclasses.replace(avatar, residual=state)


def test_a_residual_round_trips_bit_exactly_as_schema_2(tmp_path: Path) -> None:
    a = with_residual(make_avatar())
    path = tmp_path / "r.savatar"
    save_avatar(a, path)
    b = load_avatar(path)
    assert_same(a, b)
    assert b.residual.keys() == a.residual.keys()
    for k, v in a.residual.items():
        assert b.residual[k].dtype == torch.float32 and torch.equal(b.residual[k], v), k
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["schema"] == 2 and manifest["residual"] == {"features": 3, "hidden": 4, "condition": 7}


def test_an_avatar_without_residual_stays_schema_1(saved: Path) -> None:
    with zipfile.ZipFile(saved) as zf:
        assert json.loads(zf.read("manifest.json"))["schema"] == 1
    assert load_avatar(saved).residual is None


def with_outer(avatar: Avatar, ro: int = 8) -> Avatar:
    g = torch.Generator().manual_seed(2)
    valid = torch.rand(ro, ro, generator=g) > 0.3
    maps = {name: torch.randn(c, ro, ro, generator=g) * valid for name, c in UV_MAP_CHANNELS.items()}
    return dataclasses.replace(avatar, outer=UVGaussians(**maps, valid=valid))


def test_an_outer_layer_round_trips_bit_exactly_as_schema_3(tmp_path: Path) -> None:
    a = with_outer(with_residual(make_avatar()))
    path = tmp_path / "o.savatar"
    save_avatar(a, path)
    b = load_avatar(path)
    assert_same(a, b)
    for name in (*UV_MAP_CHANNELS, "valid"):
        x, y = getattr(a.outer, name), getattr(b.outer, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert "outer/local_position.npy" in zf.namelist()
    assert manifest["schema"] == 3 and manifest["outer"] == {"resolution": 8}
    assert load_avatar(tmp_path / "o.savatar").residual is not None


def test_an_avatar_without_outer_layer_loads_without_one(saved: Path) -> None:
    assert load_avatar(saved).outer is None


def test_an_outer_layer_of_the_wrong_size_is_rejected(tmp_path: Path) -> None:
    path, bad = tmp_path / "o.savatar", tmp_path / "bad.savatar"
    save_avatar(with_outer(make_avatar()), path)
    edit_manifest(path, bad, outer={"resolution": 9})
    expect_error(bad, "outer/local_position.npy", "[3, 9, 9]")
    edit_manifest(path, bad, outer={"resolution": 100000})
    expect_error(bad, "'outer'")


def test_a_residual_of_the_wrong_size_is_rejected(tmp_path: Path) -> None:
    path, bad = tmp_path / "r.savatar", tmp_path / "bad.savatar"
    save_avatar(with_residual(make_avatar()), path)
    edit_manifest(path, bad, residual={"features": 5, "hidden": 4, "condition": 7})
    expect_error(bad, "residual/features.npy", "[5, 16, 16]")
    edit_manifest(path, bad, residual={"features": 3, "hidden": "4"})
    expect_error(bad, "'residual'")


def test_wrong_format_is_rejected(saved: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.savatar"
    edit_manifest(saved, bad, format="something-else")
    expect_error(bad, "something-else")


def test_shapes_inconsistent_with_resolution_are_rejected(saved: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.savatar"
    edit_manifest(saved, bad, resolution=R // 2)
    expect_error(bad, "wrong shape for maps/local_position.npy")


def test_array_disagreeing_with_its_manifest_record_is_rejected(saved: Path, tmp_path: Path) -> None:
    """A self-consistent entry (checksum updated) whose dtype the manifest misreports."""
    with zipfile.ZipFile(saved) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, R, R), dtype=np.float64))
    manifest["arrays"]["opacity"]["sha256"] = bundle._sha256(buf.getvalue())
    bad = tmp_path / "bad.savatar"
    rewrite(saved, bad, replace={"maps/opacity.npy": buf.getvalue(), "manifest.json": json.dumps(manifest).encode()})
    expect_error(bad, "wrong shape for maps/opacity.npy", "float64")


@pytest.mark.parametrize("content", [
    iio.imwrite("<bytes>", np.zeros((8, 8, 3), np.uint8), extension=".png"),
    b"just some text, not an avatar\n",
    b"",
], ids=["png", "text", "empty"])
def test_file_that_is_not_a_zip_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not_an_avatar.savatar"
    path.write_bytes(content)
    expect_error(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_avatar(tmp_path / "nope.savatar")


# ----------------------------------------------------------------------------- atomic save


def test_invalid_avatar_fails_before_touching_existing_file(saved: Path) -> None:
    before = saved.read_bytes()
    bad = Avatar(make_avatar().gaussians, "openhead-1", torch.zeros(50), {"when": object()})
    with pytest.raises(ValueError, match="metadata"):
        save_avatar(bad, saved)
    bad_thumb = Avatar(make_avatar().gaussians, "openhead-1", torch.zeros(50), {}, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="thumbnail"):
        save_avatar(bad_thumb, saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_crash_while_writing_leaves_existing_file_untouched(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()
    real_writestr = zipfile.ZipFile.writestr
    calls = []

    def failing_writestr(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_writestr(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(OSError, match="disk full"):
        save_avatar(make_avatar(seed=1), saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # temp file cleaned up


def test_a_bundle_with_nan_values_is_rejected(tmp_path: Path) -> None:
    """A NaN anywhere in the arrays rendered an invisible avatar with exit 0."""
    avatar = make_avatar()
    color = avatar.gaussians.color.clone()
    color[0, 3, 3] = float("nan")
    save_avatar(dataclasses.replace(avatar, gaussians=dataclasses.replace(avatar.gaussians, color=color)),
                tmp_path / "nan.savatar")
    expect_error(tmp_path / "nan.savatar", "maps/color.npy", "NaN or infinite")


def test_a_zip_bomb_is_refused_before_it_is_inflated(saved: Path, tmp_path: Path) -> None:
    """An entry that inflates far beyond what its array needs (1.5 MB of zeros -> 2.5 GB before)
    is refused from the size the archive states, without inflating it."""
    import tracemalloc

    bomb = tmp_path / "bomb.savatar"
    rewrite(saved, bomb, replace={"maps/color.npy": bytes(200 << 20)})          # 200 MB of zeros, ~200 KB packed
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    expect_error(bomb, "maps/color.npy", "claims 209,715,200 bytes")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 << 20


@pytest.mark.parametrize("field, value, words", [
    ("resolution", 16384, ("resolution must be from 1 to 1024", "16384")),
    ("residual", {"features": 10 ** 6, "hidden": 4, "condition": 7}, ("'residual'", "from 1 to 4096")),
])
def test_sizes_that_would_exhaust_memory_are_refused(saved: Path, tmp_path: Path, field, value, words) -> None:
    edit_manifest(saved, tmp_path / "big.savatar", **{field: value})
    expect_error(tmp_path / "big.savatar", *words)


@pytest.mark.parametrize("damage, words", [
    ("method", ("unsupported", "NotImplementedError")),
    ("encrypted", ("RuntimeError",)),
])
def test_zip_errors_beyond_bad_zip_are_one_clear_error(saved: Path, tmp_path: Path, damage: str, words) -> None:
    """An unknown compression method or the encryption flag raised NotImplementedError / RuntimeError."""
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("maps/color.npy")
    # patch the entry's local header and its central-directory record alike
    offsets = [info.header_offset]
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) != -1:
        name_len = int.from_bytes(data[pos + 28:pos + 30], "little")
        if data[pos + 46:pos + 46 + name_len] == b"maps/color.npy":
            offsets.append(pos)
        pos += 4
    assert len(offsets) == 2
    for off in offsets:
        flag_at, method_at = (off + 6, off + 8) if data[off:off + 4] == b"PK\x03\x04" else (off + 8, off + 10)
        if damage == "method":
            data[method_at:method_at + 2] = (99).to_bytes(2, "little")
        else:
            data[flag_at] |= 0x1
    (tmp_path / "odd.savatar").write_bytes(bytes(data))
    expect_error(tmp_path / "odd.savatar", *words)
