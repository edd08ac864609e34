"""Hostile and broken inputs through the real commands, each in a child process: one clear line
naming the file and the problem, exit code 1, no traceback, an existing output untouched, and
bounded memory (the table at the end of the run gives each case's peak and seconds). Every input
is made here; nothing from shared data."""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import pytest

def rewritten(src: Path, dst: Path, replace: dict[str, bytes] | None = None, manifest: dict | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            data = (replace or {}).get(name, zin.read(name))
            if name == "manifest.json" and manifest:
                data = json.dumps({**json.loads(data), **manifest}).encode()
            zout.writestr(name, data)
    return dst


def test_render_with_a_nan_expression_weight(cli, kept, earlier):
    out = cli("render", "--expr", "jawOpen=nan", "--out", kept)
    out.assert_one_clear_line("jawOpen", "not a finite number")
    assert kept.read_bytes() == earlier


def test_render_with_a_nan_preset(cli, kept, tmp_path, earlier):
    preset = tmp_path / "odd.json"
    preset.write_text('{"schema": 1, "weights": {"jawOpen": NaN}}')
    out = cli("render", "--preset", preset, "--out", kept)
    out.assert_one_clear_line("odd.json", "finite numbers")
    assert kept.read_bytes() == earlier


def test_render_a_bundle_holding_nan(cli, kept, bundle, tmp_path, earlier):
    from engine.io import load_avatar, save_avatar

    a = load_avatar(bundle)
    color = a.gaussians.color.clone()
    color[:, 100, 100] = float("nan")
    bad = tmp_path / "nan.savatar"
    save_avatar(dataclasses.replace(a, gaussians=dataclasses.replace(a.gaussians, color=color)), bad)
    out = cli("render", "--avatar", bad, "--out", kept)
    out.assert_one_clear_line("nan.savatar", "NaN or infinite")
    assert kept.read_bytes() == earlier


def test_render_a_zip_bomb_bundle(cli, kept, bundle, tmp_path, earlier):
    bomb = rewritten(bundle, tmp_path / "bomb.savatar", replace={"maps/color.npy": bytes(1 << 30)})
    assert bomb.stat().st_size < 3 << 20                  # 1 GiB of zeros packs into about a megabyte
    out = cli("render", "--avatar", bomb, "--out", kept)
    out.assert_one_clear_line("bomb.savatar", "claims 1,073,741,824 bytes")
    assert out.peak_mb < 1500 and kept.read_bytes() == earlier


def test_render_a_bundle_claiming_a_huge_resolution(cli, kept, bundle, tmp_path):
    big = rewritten(bundle, tmp_path / "big.savatar", manifest={"resolution": 16384})
    out = cli("render", "--avatar", big, "--out", kept)
    out.assert_one_clear_line("big.savatar", "resolution must be from 1 to 1024")
    assert out.peak_mb < 1500


def test_refine_with_a_preset_of_wrong_types(cli, tmp_path):
    preset = tmp_path / "mine.json"
    preset.write_text('{"schema": 1, "iterations": "many"}')
    out = cli("refine", tmp_path / "any.mp4", "--preset", preset, "--out", tmp_path / "r.savatar")
    out.assert_one_clear_line("mine.json", "iterations must be int")


def test_refine_into_a_folder_that_cannot_be_made(cli, tmp_path):
    """Checked before minutes of tracking: a torch.save failure surfaced only at the first checkpoint."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = cli("refine", tmp_path / "any.mp4", "--out", blocker / "r.savatar")
    out.assert_one_clear_line("r.savatar", "cannot be written")
    assert out.seconds < 60


def test_render_with_a_flame_pkl_that_carries_code(cli, kept, earlier, tmp_path, payload, marker):
    """FLAME is read with a restricted unpickler: a payload is refused, never run."""
    import pickle

    evil = tmp_path / "flame2023.pkl"
    evil.write_bytes(pickle.dumps({"v_template": payload}))
    out = cli("render", "--head-model", evil, "--out", kept)
    out.assert_one_clear_line("flame2023.pkl")
    assert not marker.exists() and kept.read_bytes() == earlier


@pytest.mark.parametrize("size", ["0", "100000"])
def test_render_at_an_impossible_size(cli, kept, size, earlier):
    out = cli("render", "--size", size, "--out", kept)
    out.assert_one_clear_line(f"--size {size}", "16 to 8192")
    assert kept.read_bytes() == earlier


def test_render_a_bundle_with_an_encrypted_entry(cli, kept, bundle, tmp_path, earlier):
    data = bytearray(bundle.read_bytes())
    pos = 0
    while (pos := data.find(b"PK", pos)) != -1:             # set the encryption flag everywhere
        if data[pos + 2:pos + 4] == b"\x03\x04":
            data[pos + 6] |= 1
        elif data[pos + 2:pos + 4] == b"\x01\x02":
            data[pos + 8] |= 1
        pos += 2
    odd = tmp_path / "locked.savatar"
    odd.write_bytes(bytes(data))
    out = cli("render", "--avatar", odd, "--out", kept)
    out.assert_one_clear_line("locked.savatar")
    assert kept.read_bytes() == earlier


def test_build_from_a_png_claiming_20000_squared(cli, tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    out = cli("build", huge, "--out", tmp_path / "a.savatar")
    out.assert_one_clear_line("huge.png", "400 megapixels")
    assert out.peak_mb < 1500 and not (tmp_path / "a.savatar").exists()


def test_build_from_text_named_png(cli, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    out = cli("build", fake, "--out", tmp_path / "a.savatar")
    out.assert_one_clear_line("notes.png")


def test_export_a_bundle_into_a_folder_that_cannot_be_made(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = cli("export", "--avatar", "plain", "--bundle", blocker / "x.savatar")
    out.assert_one_clear_line("x.savatar")


def test_the_peak_memory_is_the_childs_own(cli):
    """The bounds above read the child's peak; a large test process must not leak into it."""
    ballast = bytearray(1200 << 20)
    ballast[::4096] = b"\1" * len(ballast[::4096])      # touch every page: 1.2 GB resident here
    out = cli("--help")
    assert out.code == 0 and 0 < out.peak_mb < 900, out
    del ballast
