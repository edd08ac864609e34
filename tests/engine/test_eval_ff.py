"""Feed-forward evaluation end to end on a short rendered talking clip of the default avatar:
self- and cross-reenactment return finite metrics, LPIPS only when given, the table and JSON,
and the network generator without a checkpoint fails before any tracking."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from engine.eval.feedforward import (COLUMNS, FACE_COLUMNS, FaceMetrics, cross_reenact, evaluate_clip, evaluate_video,
                                     format_table, load_clip, write_json)
from engine.headmodel.base import HeadModel

N_FRAMES = 6


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


@pytest.fixture(scope="module")
def clip(model, tmp_path_factory):
    """6 frames at 256² of the default avatar opening its jaw and turning a little, tracked."""
    from engine.animate import AnimatedAvatar
    from engine.camera import orbit_camera
    from engine.expressions import apply_expressions
    from engine.io.media import write_video
    from engine.render.select import select
    from engine.service import default_avatar

    animated, renderer = AnimatedAvatar(default_avatar(model), model), select("cpu")
    frames = []
    for i in range(N_FRAMES):
        jaw = 0.5 * (1 - math.cos(i / N_FRAMES * 2 * math.pi)) / 2
        p = apply_expressions(animated.neutral(), model, {"jawOpen": jaw})
        p = dataclasses.replace(p, rotation=torch.tensor([[0.0, 0.04 * i, 0.0]]))
        with torch.no_grad():
            frames.append(renderer.render(animated.gaussians(p), orbit_camera(size=256)).to_uint8((0.45, 0.5, 0.55)))
    path = tmp_path_factory.mktemp("ff") / "talk.mp4"
    write_video(path, frames, 25.0)
    return load_clip(path, model, ks=(1,), n_targets=2)


@pytest.fixture(scope="module")
def faces(model):
    f = FaceMetrics(model)
    yield f
    f.close()


def test_self_reenactment_gives_finite_metrics(clip, model, faces):
    calls = []

    def fake_lpips(a, b):
        calls.append(a.shape)
        return (a - b).abs().mean()

    (with_lpips,) = evaluate_clip(clip, model, ks=(1,), n_targets=2, lpips=fake_lpips, faces=faces)
    (plain,) = evaluate_clip(clip, model, ks=(1,), n_targets=2)
    assert with_lpips.n_targets == 2 and calls == [(256, 256, 3)] * 2
    assert with_lpips.psnr == pytest.approx(plain.psnr) and 15 < plain.psnr < 60 and 0.5 < plain.ssim <= 1
    assert with_lpips.lpips is not None and plain.lpips is None               # never made up
    assert plain.csim is None and plain.n_face == 0                            # face metrics were off
    assert with_lpips.n_face == 2
    for v in (with_lpips.csim, with_lpips.aed, with_lpips.apd, with_lpips.akd):
        assert v is not None and math.isfinite(v)
    assert with_lpips.csim > 0.9 and with_lpips.akd < 10                       # the same face, in place
    for region in (plain.psnr_eyes, plain.psnr_mouth):                         # over their own pixels
        assert region is not None and 10 < region < 60 and region != pytest.approx(plain.psnr, abs=0.1)


def test_cross_reenactment_gives_finite_metrics(clip, model, faces):
    r = cross_reenact(clip, clip, model, faces, n_targets=2)
    assert (r.source, r.driver, r.k, r.n_targets, r.n_csim, r.n_face) == ("talk.mp4", "talk.mp4", 1, 2, 2, 2)
    for v in (r.csim, r.aed, r.apd, r.akd):
        assert v is not None and math.isfinite(v)


def test_table_and_json(clip, model, faces, tmp_path):
    rows = evaluate_clip(clip, model, ks=(1,), n_targets=2, faces=faces)
    cross = [cross_reenact(clip, clip, model, faces, n_targets=2)]
    table = format_table(rows, cross)
    lines = table.splitlines()
    assert all(c in lines[0] for c in COLUMNS)
    assert lines[1].startswith("self") and lines[2].startswith("cross") and len(lines) == 8   # 2 rows, 2 means
    assert lines[2].split()[5:8] == ["-", "-", "-"]                                          # no PSNR/SSIM/LPIPS
    head = list(FACE_COLUMNS[:3]) + ["gaze", "r", "mouth", "r", "eye", "diff", "gaze", "sd", "mouth", "sd"]
    assert lines[5] == "" and lines[6].split()[3:] == head
    face = lines[7].split()                                  # then the face block: a blank line, its head, a row
    assert face[:3] == ["self", "1", "talk.mp4"] and float(face[3]) == pytest.approx(rows[0].akd_eyes, abs=1e-3)
    assert rows[0].akd_jaw is not None and rows[0].gaze_r is None        # 2 frames: too few for a correlation
    out = tmp_path / "ff.json"
    write_json(out, rows, cross, "matte text")
    saved = json.loads(out.read_text())
    assert saved["self"][0]["psnr"] == pytest.approx(rows[0].psnr) and saved["self"][0]["lpips"] is None
    assert saved["cross"][0]["driver"] == "talk.mp4" and saved["definitions"]["matte"] == "matte text"
    assert "dlib" in saved["definitions"]["CSIM"]


def test_targets_must_have_been_loaded(clip, model):
    with pytest.raises(ValueError, match="load_clip it with n_targets=2"):
        evaluate_clip(dataclasses.replace(clip, frames={}), model, ks=(1,), n_targets=2)


def test_network_generator_without_checkpoint_fails_before_tracking(model, tmp_path):
    from engine.generator.registry import GeneratorChoice

    missing = tmp_path / "never_read.mp4"
    with pytest.raises(ValueError, match="needs a checkpoint"):
        evaluate_video(missing, model, generator=GeneratorChoice("network"))
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_video(missing, model, generator=GeneratorChoice("network", tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="unknown generator"):
        evaluate_video(missing, model, generator=GeneratorChoice("diffusion"))


def test_cli_names_the_missing_checkpoint(tmp_path):
    from spatialavatar_app.cli import main

    with pytest.raises(SystemExit, match="needs a checkpoint"):
        main(["eval", "ff", str(tmp_path / "never_read.mp4"), "--generator", "network"])
    with pytest.raises(SystemExit, match="at least two videos"):
        main(["eval", "ff", str(tmp_path / "a.mp4"), "--cross"])
