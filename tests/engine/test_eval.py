"""The feed-forward evaluation protocol's frame choice, the evaluation matte and the held-out
evaluation of a refined avatar."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from engine.eval.feedforward import source_frames, target_frames
from engine.eval.refined import evaluate, write_json
from engine.headmodel.base import HeadModel
from engine.metrics.matte import PORTRAIT_CUT, eval_matte, mesh_silhouette, portrait_cut_row, portrait_matte
from engine.types import Avatar, HeadParams


def test_sources_come_from_the_first_half_and_targets_from_the_last_third():
    assert source_frames(100, 1) == [0]
    assert source_frames(100, 4) == [0, 12, 25, 38]          # 0, ¼, ½, ¾ of the first half
    t = target_frames(90, 50)
    assert len(t) == 30 and min(t) == 60 and max(t) == 89   # every frame of a short last third
    assert len(target_frames(900, 50)) == 50 and min(target_frames(900, 50)) >= 600


def test_matte_is_the_person_inside_the_dilated_head_silhouette(openhead):
    model = HeadModel(openhead)
    p = model.neutral()
    p = HeadParams(p.shape, p.expr, p.rotation, p.neck, p.jaw, p.eyes, p.translation + np.array([0.0, 0.0, -0.8], np.float32))
    sil = mesh_silhouette(model, p, focal=600.0, size=(240, 320))
    assert sil[120, 160] == 255 and sil[5, 5] == 0 and sil[120, 5] == 0
    person = np.zeros((240, 320), np.uint8)
    person[:, 100:] = 255                                       # a "person" covering the right part
    m = eval_matte(person, sil, dilate_px=4)
    assert m.dtype == np.float32 and m[120, 160] == 1 and m[120, 50] == 0
    assert m[person == 0].max() == 0                            # never outside the person
    grown = eval_matte(np.full_like(person, 255), sil, dilate_px=4)
    assert grown.sum() > (sil > 0).sum()                        # the silhouette is dilated


def test_portrait_matte_is_the_person_above_the_cut_below_the_chin(openhead):
    """The cut lies PORTRAIT_CUT face heights below the chin (FaceMesh 152), face height being the
    vertical extent of the projected face landmarks; above it the whole person counts (hair far
    outside the head mesh included), below it nothing."""
    from engine.track.fit import project

    model = HeadModel(openhead)
    p = dataclasses.replace(model.neutral(), translation=torch.tensor([[0.0, 0.0, -0.8]]))
    focal, size = 500.0, (400, 300)
    with torch.no_grad():
        uv, _ = project(model.landmarks(model.vertices(p)), torch.tensor([focal]), torch.tensor([[400.0, 300.0]]))
    ids = model.lmk_ids.numpy()
    y = uv[0, :, 1].numpy()[ids < 468]
    chin = float(uv[0, list(ids).index(152), 1])
    want = chin + PORTRAIT_CUT * (y.max() - y.min())
    assert portrait_cut_row(model, p, focal, size) == pytest.approx(want, abs=1e-3)
    assert chin < want < 400                                     # below the chin, inside this frame
    person = np.zeros(size, np.uint8)
    person[:, 20:280] = 255                                      # wider than any head: hair, shoulders
    m = portrait_matte(model, p, person, focal, size)
    cut = int(np.floor(want - 0.5))
    assert m.dtype == np.float32 and m[:cut, 20:280].min() == 1 and m[cut + 2:].max() == 0
    assert m[:, :20].max() == 0 and m[5, 25] == 1                # only the person; far above the head too
    head = eval_matte(person, mesh_silhouette(model, p, focal, size), 4)
    assert m.sum() > head.sum() and (m >= head)[: cut - 2].all()  # more than the head-and-neck matte above the cut


def _plain_avatar(model: HeadModel, grey: bool = False) -> Avatar:
    from engine.binding import surface_init
    from engine.generator.plain import plain_colors

    slots = model.uv_slots(256)
    colors = torch.full((len(slots), 3), 0.5) if grey else plain_colors(model, slots, shaded=False)
    return Avatar(surface_init(slots, model.v_template, model.faces, colors), model.name, torch.zeros(model.n_shape), {})


def _video(model: HeadModel, size: int, n: int = 3):
    """``n`` frames of the plain avatar turning, seen by the tracker's camera; frames 1.. held out."""
    from engine.animate import AnimatedAvatar
    from engine.refine.data import VideoData, tracker_camera
    from engine.render.select import select
    from engine.track.fit import intrinsics

    truth = AnimatedAvatar(_plain_avatar(model), model)
    cam = tracker_camera(intrinsics(np.array([4.0 * size]), np.array([[size, size]]))[0], (size, size), size)
    ps, imgs, mattes = [], [], []
    for i in range(n):
        p = dataclasses.replace(model.neutral(), rotation=torch.tensor([[0.0, 0.2 * i, 0.0]]),
                                translation=torch.tensor([[0.0, 0.0, -0.75]]))
        with torch.no_grad():
            f = select("cpu").render(truth.gaussians(p), cam)
        imgs.append(((f.rgb / f.alpha.clamp_min(1e-6)[..., None]).clamp(0, 1).numpy() * 255).astype(np.uint8))
        mattes.append(f.alpha.numpy())
        ps.append(p)
    params = HeadParams(*(torch.cat([getattr(p, k) for p in ps]) for k in
                          ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
    return VideoData("synthetic", np.stack(imgs), np.stack(mattes).astype(np.float32), params, [cam] * n,
                     np.ones(n, bool), first_test=1)


@pytest.fixture(scope="module")
def model(openhead):
    return HeadModel(openhead)


def test_held_out_metrics_with_and_without_lpips(model, tmp_path):
    data = _video(model, 176)                       # MS-SSIM needs >= 161 px
    lpips_calls = []

    def fake_lpips(a, b):
        lpips_calls.append(a.shape)
        return (a - b).abs().mean()

    truth = evaluate(_plain_avatar(model), model, data, "truth", lpips=fake_lpips)
    grey = evaluate(_plain_avatar(model, grey=True), model, data, "grey")
    assert truth.frames == grey.frames == 2 and len(lpips_calls) == 2 and lpips_calls[0] == (176, 176, 3)
    assert truth.psnr > grey.psnr + 5 and truth.ssim > grey.ssim
    assert 0.9 < truth.ms_ssim <= 1.0 and grey.ms_ssim < truth.ms_ssim
    assert truth.lpips is not None and truth.lpips >= 0 and grey.lpips is None       # never made up
    out = tmp_path / "eval" / "table.json"
    write_json(out, [truth, grey], "synthetic.mp4", {"head": "matte text"})
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["truth", "grey"] and rows[1]["lpips"] is None
    assert set(rows[0]) == {"name", "mse", "psnr", "ssim", "ms_ssim", "lpips", "frames", "video", "matte",
                            "matte_definition"}
    assert rows[0]["ms_ssim"] == pytest.approx(truth.ms_ssim) and rows[0]["matte"] == "head"
    assert rows[0]["matte_definition"] == "matte text"


def test_ms_ssim_is_unavailable_on_frames_too_small_for_it(model):
    r = evaluate(_plain_avatar(model), model, _video(model, 96, n=2), "small")
    assert r.ms_ssim is None and r.frames == 1 and r.ssim > 0.5


def test_face_regions_are_boxes_round_the_fitted_eyes_and_lips_inside_the_portrait_matte(model):
    from engine.headmodel.facemesh import topology
    from engine.metrics.matte import REGION_MARGIN, face_points, region_matte
    from engine.track.fit import project

    p = dataclasses.replace(model.neutral(), translation=torch.tensor([[0.0, 0.0, -0.8]]))
    focal, size = 500.0, (400, 300)
    person = np.zeros(size, np.uint8)
    person[:, 20:280] = 255
    ids, uv = face_points(model, p, focal, size)
    with torch.no_grad():
        full, _ = project(model.landmarks(model.vertices(p)), torch.tensor([focal]), torch.tensor([[400.0, 300.0]]))
    assert np.allclose(uv[list(ids).index(13)], full[0, list(model.lmk_ids.numpy()).index(13)].numpy())
    boxes = {}
    for kind, loop in (("eyes", topology()["eye_L"] + topology()["eye_R"]), ("mouth", topology()["lips_outer"])):
        m = region_matte(kind, model, p, person, focal, size)
        pts = uv[np.isin(ids, loop)]
        ys, xs = np.nonzero(m)
        w, h = np.ptp(pts[:, 0]), np.ptp(pts[:, 1])
        assert xs.min() == pytest.approx(pts[:, 0].min() - REGION_MARGIN * w, abs=1.01)
        assert ys.max() + 1 == pytest.approx(pts[:, 1].max() + REGION_MARGIN * h, abs=1.01)
        assert m.sum() == (xs.ptp() + 1) * (ys.ptp() + 1)              # a full box
        boxes[kind] = (ys.min(), ys.max())
    assert boxes["eyes"][1] < boxes["mouth"][0]                         # the eyes above the mouth
    person[:, 150:] = 0                                                  # half the face outside the person
    half = region_matte("mouth", model, p, person, focal, size)
    assert 0 < half.sum() < region_matte("mouth", model, p, np.full(size, 255, np.uint8), focal, size).sum()


def test_region_rows_score_the_regions_own_pixels(model):
    """A render wrong only round the mouth: the mouth row drops, the eyes row does not, and the
    mouth's PSNR is the mean squared error over the region's pixels."""
    from engine.eval.refined import evaluate_mattes, held_out_matte

    data = _video(model, 192, n=2)
    data = dataclasses.replace(data, person=(data.mattes > 0.5).astype(np.uint8) * 255)
    truth = evaluate_mattes(_plain_avatar(model), model, data, "truth", ("portrait", "eyes", "mouth"))
    m = held_out_matte(data, model, 1, "mouth")
    assert m.sum() > 50
    images = data.images.copy()
    images[1][m > 0] = 0
    hurt = evaluate_mattes(_plain_avatar(model), model, dataclasses.replace(data, images=images), "hurt",
                           ("portrait", "eyes", "mouth"))
    assert hurt["mouth"].frames == 1 and hurt["mouth"].psnr < truth["mouth"].psnr - 10
    assert hurt["eyes"].psnr == pytest.approx(truth["eyes"].psnr, abs=1e-6)
    from engine.animate import AnimatedAvatar
    from engine.render.select import select

    with torch.no_grad():
        f = select("cpu").render(AnimatedAvatar(_plain_avatar(model), model).gaussians(data.params.frame(1)),
                                 data.cameras[1])
    err = (((f.rgb.clamp(0, 1).numpy() - images[1] / 255.0) ** 2).sum(-1) * m).sum() / (3 * m.sum())
    assert hurt["mouth"].psnr == pytest.approx(10 * np.log10(1 / err), abs=1e-3)
