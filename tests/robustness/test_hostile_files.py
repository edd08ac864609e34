"""More hostile and broken inputs, one kind of file at a time, through the real commands: images
and videos, avatar bundles, tracking .npz, network .pt, FLAME files, presets, command-line values
and outputs. Each case: exit 1, one clear line naming the file (or flag) and the problem, no
traceback, no code from a file run, and the user's earlier output untouched."""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

def rewritten(src: Path, dst: Path, replace: dict[str, bytes | None] | None = None, resum: bool = False) -> Path:
    """``src`` with entries replaced (None: left out); with ``resum`` the manifest's checksums
    are made to match the new entries, so that what lies behind the checksum check is reached."""
    import hashlib

    replace = dict(replace or {})
    if resum:
        m = manifest_of(src)
        for name, data in replace.items():
            key = name.removeprefix("maps/").removesuffix(".npy")
            if data is not None and key in m["arrays"]:
                m["arrays"][key]["sha256"] = hashlib.sha256(data).hexdigest()
        replace["manifest.json"] = json.dumps(m).encode()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            data = replace.get(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
    return dst


def manifest_of(src: Path) -> dict:
    with zipfile.ZipFile(src) as z:
        return json.loads(z.read("manifest.json"))


def npy(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


# --- images ------------------------------------------------------------------------------------

def test_build_from_an_empty_jpeg(cli, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cli("build", empty, "--out", tmp_path / "a.savatar").assert_one_clear_line("empty.jpg")
    assert not (tmp_path / "a.savatar").exists()


def test_build_from_a_truncated_jpeg(cli, tmp_path):
    import cv2

    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data.tobytes()[:200])
    cli("build", cut, "--out", tmp_path / "a.savatar").assert_one_clear_line("cut.jpg")


def test_build_from_a_portrait_without_a_face(cli, tmp_path):
    import cv2

    grey = tmp_path / "wall.png"
    cv2.imwrite(str(grey), np.full((256, 256, 3), 128, np.uint8))
    cli("build", grey, "--out", tmp_path / "a.savatar").assert_one_clear_line("wall.png", "face")


def test_build_from_a_missing_portrait(cli, tmp_path):
    cli("build", tmp_path / "nobody.jpg", "--out", tmp_path / "a.savatar").assert_one_clear_line("nobody.jpg")


def test_build_from_a_folder(cli, tmp_path):
    (tmp_path / "photos").mkdir()
    cli("build", tmp_path / "photos", "--out", tmp_path / "a.savatar").assert_one_clear_line("photos")


def test_build_from_five_portraits(cli, tmp_path):
    import cv2

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"p{i}.png")
        cv2.imwrite(str(paths[-1]), np.full((64, 64, 3), 128, np.uint8))
    cli("build", *paths, "--out", tmp_path / "a.savatar").assert_one_clear_line("5")


# --- videos ------------------------------------------------------------------------------------

def test_refine_a_missing_video(cli, tmp_path):
    cli("refine", tmp_path / "gone.mp4", "--out", tmp_path / "r.savatar").assert_one_clear_line("gone.mp4")


def test_refine_a_text_file_named_mp4(cli, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all")
    out = cli("refine", fake, "--out", tmp_path / "r.savatar")
    out.assert_one_clear_line("notes.mp4")
    assert not (tmp_path / "r.savatar").exists()


def test_refine_an_empty_mp4(cli, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cli("refine", empty, "--out", tmp_path / "r.savatar").assert_one_clear_line("empty.mp4")


def test_refine_a_video_without_a_face(cli, tmp_path):
    from engine.io.media import write_video

    wall = tmp_path / "wall.mp4"
    write_video(wall, [np.full((128, 128, 3), 100, np.uint8)] * 12, 25.0)
    out = cli("refine", wall, "--out", tmp_path / "r.savatar", "--preset", "fast")
    out.assert_one_clear_line("wall.mp4", "face")


def test_track_a_text_file_named_mp4_is_reported_and_skipped(cli, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all")
    out = cli("track", fake, "--out", tmp_path / "track")
    assert "Traceback" not in out.stderr and "notes.mp4" in out.stderr + out.last_line
    assert out.code != 0                                    # nothing was tracked: not a success


def test_drive_from_a_text_file_named_mp4(cli, tmp_path):
    fake = tmp_path / "driver.mp4"
    fake.write_text("not a video at all")
    out = cli("drive", "--video", fake, "--out", tmp_path / "d.mp4")
    out.assert_one_clear_line("driver.mp4")
    assert not (tmp_path / "d.mp4").exists()


# --- avatar bundles ----------------------------------------------------------------------------

def test_render_a_missing_bundle(cli, kept, tmp_path, earlier):
    cli("render", "--avatar", tmp_path / "gone.savatar", "--out", kept).assert_one_clear_line("gone.savatar")
    assert kept.read_bytes() == earlier


def test_render_a_truncated_bundle(cli, kept, bundle, tmp_path, earlier):
    cut = tmp_path / "cut.savatar"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    cli("render", "--avatar", cut, "--out", kept).assert_one_clear_line("cut.savatar")
    assert kept.read_bytes() == earlier


def test_render_a_bundle_whose_manifest_is_not_json(cli, kept, bundle, tmp_path, earlier):
    odd = rewritten(bundle, tmp_path / "odd.savatar", {"manifest.json": b"{not json"})
    cli("render", "--avatar", odd, "--out", kept).assert_one_clear_line("odd.savatar", "manifest.json")
    assert kept.read_bytes() == earlier


def test_render_a_bundle_of_a_future_schema(cli, kept, bundle, tmp_path):
    m = {**manifest_of(bundle), "schema": 99}
    odd = rewritten(bundle, tmp_path / "future.savatar", {"manifest.json": json.dumps(m).encode()})
    cli("render", "--avatar", odd, "--out", kept).assert_one_clear_line("future.savatar", "99")


def test_render_a_bundle_missing_an_entry(cli, kept, bundle, tmp_path):
    odd = rewritten(bundle, tmp_path / "holed.savatar", {"maps/color.npy": None})
    cli("render", "--avatar", odd, "--out", kept).assert_one_clear_line("holed.savatar", "color")


def test_render_a_bundle_with_a_map_of_the_wrong_shape(cli, kept, bundle, tmp_path):
    odd = rewritten(bundle, tmp_path / "warped.savatar", {"maps/color.npy": npy(np.zeros((3, 8, 8), np.float32))},
                    resum=True)
    cli("render", "--avatar", odd, "--out", kept).assert_one_clear_line("warped.savatar", "color")


def test_render_a_bundle_whose_array_carries_a_pickle(cli, kept, bundle, tmp_path, payload, marker, earlier):
    evil = np.array([payload], dtype=object)
    odd = rewritten(bundle, tmp_path / "evil.savatar", {"maps/color.npy": npy(evil, allow_pickle=True)}, resum=True)
    cli("render", "--avatar", odd, "--out", kept).assert_one_clear_line("evil.savatar")
    assert not marker.exists() and kept.read_bytes() == earlier


def test_render_a_bundle_made_for_another_head_model(cli, kept, bundle, tmp_path):
    m = {**manifest_of(bundle), "head_model": "FLAME2023"}
    odd = rewritten(bundle, tmp_path / "flame.savatar", {"manifest.json": json.dumps(m).encode()})
    out = cli("render", "--avatar", odd, "--out", kept)
    out.assert_one_clear_line("flame.savatar", "FLAME2023", "--head-model")


def test_render_a_text_file_named_savatar(cli, kept, tmp_path):
    fake = tmp_path / "notes.savatar"
    fake.write_text("hello")
    cli("render", "--avatar", fake, "--out", kept).assert_one_clear_line("notes.savatar")


# --- tracking .npz -----------------------------------------------------------------------------

def _a_video(tmp_path) -> Path:
    from engine.io.media import write_video

    v = tmp_path / "clip.mp4"
    write_video(v, [np.full((64, 64, 3), 100, np.uint8)] * 4, 25.0)
    return v


def test_refine_with_a_text_file_as_tracking(cli, tmp_path, bundle):
    fake = tmp_path / "t.npz"
    fake.write_text("no arrays here")
    out = cli("refine", _a_video(tmp_path), "--avatar", bundle, "--tracking", fake, "--out", tmp_path / "r.savatar")
    out.assert_one_clear_line("t.npz")


def test_refine_with_a_tracking_that_carries_a_pickle(cli, tmp_path, bundle, payload, marker):
    evil = tmp_path / "t.npz"
    np.savez(evil, rotation=np.array([payload], dtype=object))
    out = cli("refine", _a_video(tmp_path), "--avatar", bundle, "--tracking", evil, "--out", tmp_path / "r.savatar")
    out.assert_one_clear_line("t.npz")
    assert not marker.exists()


def test_export_a_web_page_with_a_text_file_as_its_track(cli, tmp_path, payload, marker):
    fake = tmp_path / "t.npz"
    fake.write_text("no arrays here")
    cli("export", "--avatar", "plain", "--web", tmp_path / "p.html", "--track", fake).assert_one_clear_line("t.npz")
    evil = tmp_path / "e.npz"
    np.savez(evil, rotation=np.array([payload], dtype=object))
    cli("export", "--avatar", "plain", "--web", tmp_path / "p.html", "--track", evil).assert_one_clear_line("e.npz")
    assert not marker.exists() and not (tmp_path / "p.html").exists()


# --- network checkpoints (.pt) -----------------------------------------------------------------

def test_build_with_a_text_file_as_checkpoint(cli, tmp_path):
    fake = tmp_path / "net.pt"
    fake.write_text("weights? no")
    out = cli("build", tmp_path / "x.jpg", "--generator", "network", "--checkpoint", fake, "--out", tmp_path / "a.savatar")
    out.assert_one_clear_line("net.pt")


def test_build_with_a_checkpoint_that_carries_a_pickle(cli, tmp_path, payload, marker):
    evil = tmp_path / "net.pt"
    evil.write_bytes(_torch_pickle({"format": "spatialavatar-network-1", "x": payload}))
    out = cli("build", tmp_path / "x.jpg", "--generator", "network", "--checkpoint", evil, "--out", tmp_path / "a.savatar")
    out.assert_one_clear_line("net.pt")
    assert not marker.exists()


def _torch_pickle(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_refine_resuming_a_checkpoint_that_carries_a_pickle(cli, tmp_path, bundle, payload, marker):
    evil = tmp_path / "r.ckpt"
    evil.write_bytes(_torch_pickle({"iteration": payload}))
    out = cli("refine", _a_video(tmp_path), "--avatar", bundle, "--checkpoint", evil, "--resume",
              "--landmark-tracking", "--out", tmp_path / "r.savatar")
    assert "Traceback" not in out.stderr and out.code == 1, out.stderr[-2000:]
    assert not marker.exists()


# --- FLAME files -------------------------------------------------------------------------------

def test_render_with_a_text_file_as_flame(cli, kept, tmp_path, earlier):
    fake = tmp_path / "generic_model.pkl"
    fake.write_text("not a pickle")
    cli("render", "--head-model", fake, "--out", kept).assert_one_clear_line("generic_model.pkl")
    assert kept.read_bytes() == earlier


def test_render_with_a_flame_pickle_missing_its_arrays(cli, kept, tmp_path):
    thin = tmp_path / "flame2020.pkl"
    thin.write_bytes(pickle.dumps({"v_template": np.zeros((5, 3))}))
    cli("render", "--head-model", thin, "--out", kept).assert_one_clear_line("flame2020.pkl")


def test_render_with_an_empty_folder_as_flame(cli, kept, tmp_path):
    (tmp_path / "flame").mkdir()
    cli("render", "--head-model", tmp_path / "flame", "--out", kept).assert_one_clear_line("flame")


# --- presets -----------------------------------------------------------------------------------

def test_render_with_a_missing_preset(cli, kept, tmp_path):
    cli("render", "--preset", tmp_path / "gone.json", "--out", kept).assert_one_clear_line("gone.json")


def test_render_with_a_preset_that_is_not_json(cli, kept, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{weights: jawOpen}")
    cli("render", "--preset", bad, "--out", kept).assert_one_clear_line("bad.json")


def test_render_with_an_unknown_bundled_preset(cli, kept):
    cli("render", "--preset", "grimace", "--out", kept).assert_one_clear_line("grimace")


def test_refine_with_a_preset_of_an_unknown_schema(cli, tmp_path):
    p = tmp_path / "mine.json"
    p.write_text('{"schema": 7}')
    cli("refine", tmp_path / "any.mp4", "--preset", p, "--out", tmp_path / "r.savatar").assert_one_clear_line("mine.json", "schema")


def test_refine_with_presets_that_name_each_other(cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"schema": 1, "then": str(b)}))
    b.write_text(json.dumps({"schema": 1, "then": str(a)}))
    cli("refine", tmp_path / "any.mp4", "--preset", a, "--out", tmp_path / "r.savatar").assert_one_clear_line("stages")


# --- command-line values -----------------------------------------------------------------------

@pytest.mark.parametrize("expr, word", [("jawOpen", "jawOpen"), ("noSuchShape=0.5", "noSuchShape"), ("jawOpen=lots", "lots")])
def test_render_with_a_malformed_expression(cli, kept, expr, word, earlier):
    cli("render", "--expr", expr, "--out", kept).assert_one_clear_line(word)
    assert kept.read_bytes() == earlier


def test_render_with_a_nan_head_turn(cli, kept):
    cli("render", "--yaw", "nan", "--out", kept).assert_one_clear_line("yaw")


def test_render_a_turntable_of_no_frames(cli, tmp_path):
    cli("render", "--video", "--frames", "0", "--out", tmp_path / "t.mp4").assert_one_clear_line("--frames 0")


def test_drive_at_an_impossible_size(cli, tmp_path):
    out = cli("drive", "--video", _a_video(tmp_path), "--size", "0", "--out", tmp_path / "d.mp4")
    out.assert_one_clear_line("--size")


# --- outputs -----------------------------------------------------------------------------------

def test_render_into_a_folder_that_cannot_be_made(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cli("render", "--out", blocker / "r.png").assert_one_clear_line("r.png")
    assert blocker.read_text() == "not a folder"


def test_render_to_an_unknown_image_format(cli, tmp_path):
    cli("render", "--out", tmp_path / "r.xyz").assert_one_clear_line("r.xyz")


def test_export_a_ply_into_a_folder_that_cannot_be_made(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cli("export", "--avatar", "plain", "--ply", blocker / "x.ply").assert_one_clear_line("x.ply")


def test_export_a_web_page_into_a_folder_that_cannot_be_made(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cli("export", "--avatar", "plain", "--web", blocker / "p.html").assert_one_clear_line("p.html")
    assert blocker.read_text() == "not a folder"


def test_build_over_an_existing_folder(cli, tmp_path):
    (tmp_path / "a.savatar").mkdir()
    cli("build", tmp_path / "x.jpg", "--out", tmp_path / "a.savatar").assert_one_clear_line("a.savatar")
