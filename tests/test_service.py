"""AvatarService: building from portraits, posing, rendering, files, threads."""
from __future__ import annotations

import dataclasses
import threading

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage import data

from engine.expressions import apply_expressions
from engine.generator.plain import plain_avatar
from engine.headmodel.base import HeadModel
from engine.service import AvatarService, Cancelled, build_avatar
from engine.types import HeadParams


@pytest.fixture(scope="module")
def model(openhead):
    return HeadModel(openhead)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "astronaut.png"
    iio.imwrite(path, data.astronaut())
    return path


@pytest.fixture(scope="module")
def service(model):
    return AvatarService(model, avatar=plain_avatar(model), size=128)


def test_build_from_one_portrait_renders_the_face(service, astronaut):
    avatar = service.build_avatar([astronaut])
    assert avatar.metadata["generator"] == "projective" and avatar.metadata["mean_confidence"] > 0.05
    frame = service.render()
    img = frame.to_uint8()
    assert img.shape == (128, 128, 3) and frame.alpha.mean() > 0.25
    centre = img[40:90, 44:84].reshape(-1, 3).mean(0)          # the face, skin-coloured: red > blue
    assert centre[0] > centre[2] + 15


def test_set_params_changes_the_render(service):
    a = service.render().to_uint8().astype(int)
    service.set_params(apply_expressions(service.params, service.model, {"jawOpen": 1.0}))
    b = service.render().to_uint8().astype(int)
    service.set_params(service.model.neutral())
    assert np.abs(a - b).mean() > 0.5


def test_save_load_and_export(service, tmp_path):
    service.save(tmp_path / "a.savatar")
    loaded = service.load(tmp_path / "a.savatar")
    assert loaded.thumbnail.shape == (128, 128, 3)
    service.export_ply(tmp_path / "a.ply")
    assert (tmp_path / "a.ply").stat().st_size > 62_000 * 62 * 4 * 0.9


def test_bench_build_times_the_tracking_inside_the_build(openhead, astronaut, monkeypatch):
    """`bench build`'s tracking stage is a part of the build it is timed in, and the count is
    the avatar's own (head page and outer layer)."""
    import engine.headmodel.openhead as oh
    from engine.bench import bench_build

    monkeypatch.setattr(oh, "load_head_model", lambda path=None, device=None: HeadModel(openhead))
    row, = bench_build([astronaut], runs=1)
    assert 0 < row.tracking < row.seconds and row.generating > 0
    built = build_avatar([astronaut], HeadModel(openhead))
    assert row.gaussians == built.n_gaussians == int(built.gaussians.valid.sum()) + int(built.outer.valid.sum())


@pytest.mark.parametrize("n", [0, 5])
def test_wrong_number_of_portraits(model, astronaut, n):
    with pytest.raises(ValueError, match="1 to 4 portraits"):
        build_avatar([astronaut] * n, model)


def test_a_portrait_without_a_face_is_left_out(model, astronaut, tmp_path):
    wall = tmp_path / "wall.png"
    iio.imwrite(wall, np.full((200, 200, 3), 90, np.uint8))
    notes: list[str] = []
    with pytest.warns(UserWarning, match="wall.png"):
        avatar = build_avatar([wall, astronaut], model, notes=notes)
    assert avatar.metadata["sources"] == [str(astronaut)]
    assert any("wall.png" in n and "no face" in n for n in notes)


def test_cancel_leaves_the_service_unchanged(service, astronaut):
    before = service.avatar
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        service.build_avatar([astronaut], cancel=stop)
    assert service.avatar is before


def test_render_while_a_worker_sets_params(service):
    errors = []

    def worker():
        try:
            for w in np.linspace(0, 1, 20):
                service.set_params(apply_expressions(service.model.neutral(), service.model, {"mouthSmile_L": float(w)}))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    frames = [service.render() for _ in range(5)]
    t.join()
    assert errors == [] and all(f.rgb.shape == (128, 128, 3) for f in frames)


def test_an_opened_ply_is_a_static_scene(model, tmp_path):
    svc = AvatarService(model, plain_avatar(model))
    svc.export_ply(tmp_path / "a.ply")
    before = svc.render()
    svc.open_ply(tmp_path / "a.ply")
    assert svc.avatar is None
    np.testing.assert_allclose(svc.render().rgb.numpy(), before.rgb.numpy(), atol=2e-3)   # the same picture
    svc.set_params(apply_expressions(svc.neutral(), model, {"jawOpen": 1.0}))            # no binding: no effect
    np.testing.assert_allclose(svc.render().rgb.numpy(), before.rgb.numpy(), atol=2e-3)
    with pytest.raises(ValueError, match="cannot be saved as an avatar bundle"):
        svc.save(tmp_path / "a.savatar")
    svc.set_avatar(plain_avatar(model))                                                   # and back
    assert svc.avatar is not None


def test_the_default_avatar_shows_its_source_portrait(openhead):
    """The panel's thumbnails come from ``Avatar.thumbnail``; the default avatar's is the astronaut."""
    import cv2

    from engine.service import default_avatar

    avatar = default_avatar(HeadModel(openhead))
    thumb = np.asarray(avatar.thumbnail)
    assert thumb.shape == (128, 128, 3) and thumb.dtype == np.uint8
    small = cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(thumb.astype(int) - small.astype(int)).mean() < 1


def test_refine_video_tracks_photometrically_then_refines(model, offset_clip, monkeypatch):
    """The full preset's path through the service: the photometric tracking's stages (to the
    start, the tracker avatar, to it) report their progress in order before the refiner runs,
    and the refined avatar becomes current; a cancel during the tracking is a Cancelled and
    changes nothing. Polish trains on the tracking it is given (one of the video's length)."""
    import engine.refine.session as session
    from engine.refine.tracking import STAGES

    plain, data = offset_clip
    data = dataclasses.replace(data, person=(data.mattes * 255).astype(np.uint8))   # a segmentation: the portrait matte
    size = data.images.shape[1]
    monkeypatch.setattr(session, "prepare", lambda *a, **k: (plain, data))
    svc = AvatarService(model, avatar=plain_avatar(model), size=64)
    stop = threading.Event()

    def cancel_in_tracking(stage, fraction, step):
        if stage == "tracking (photometric)":
            stop.set()
    with pytest.raises(Cancelled):
        svc.refine_video("clip.mp4", "default", progress=cancel_in_tracking, cancel=stop, iterations=3,
                         track_iterations=2, track_resolution=size)
    assert svc.avatar.metadata.get("refined") is None
    stages = []
    result = svc.refine_video("clip.mp4", "default", progress=lambda s, f, step: stages.append(s), iterations=3,
                              track_iterations=4, track_resolution=size, tracker_iterations=2,
                              tracker_resolution=size, checkpoint_every=0)
    order = [*STAGES, "refining", "scoring"]
    assert [s for s in order if s in stages] == order
    assert [s for s in stages if s in order] == sorted((s for s in stages if s in order), key=order.index)
    assert result.avatar.metadata["refined"]["iterations"] == 3 and svc.avatar is result.avatar
    assert result.frames == 1 and np.isfinite(result.psnr_refined)
    assert np.isfinite(result.portrait_start) and np.isfinite(result.portrait_refined)    # the portrait matte too
    assert not torch.equal(result.tracking.translation, data.params.translation)    # aligned

    stages = []     # polish: the tracking it is given, no tracking stage
    polished = svc.refine_video("clip.mp4", "polish", True, lambda s, f, step: stages.append(s),
                                tracking=result.tracking, iterations=2, checkpoint_every=0)
    assert not set(STAGES) & set(stages) and polished.avatar.metadata["refined"]["iterations"] == 2
    assert torch.equal(polished.tracking.translation, result.tracking.translation)
    short = HeadParams(*(getattr(result.tracking, f.name)[:3] for f in dataclasses.fields(HeadParams)))
    with pytest.raises(ValueError, match="the tracking has 3 frames; the video has 4"):
        svc.refine_video("clip.mp4", "polish", True, tracking=short, iterations=1)


def test_refined_tracking_is_the_tracking_beside_a_refined_bundle(model, tmp_path):
    """What polish continues from: a refined avatar's video and the tracking refine wrote beside
    it; None for an avatar that was not refined or has none there; a broken file is named."""
    import dataclasses

    from engine.io.params import save_params
    from engine.refine.session import tracking_path
    from engine.service import refined_tracking

    path = tmp_path / "me.savatar"
    refined = dataclasses.replace(plain_avatar(model), metadata={"refined": {"video": "clip.mp4", "iterations": 9}})
    assert refined_tracking(path, refined) is None                          # nothing beside it yet
    params = HeadParams.neutral(model.n_shape, model.n_expr, 3)
    save_params(params, tracking_path(path))
    video, tracking = refined_tracking(path, refined)
    assert video == "clip.mp4" and tracking.batch_size == 3
    assert refined_tracking(path, plain_avatar(model)) is None               # not a refined avatar
    tracking_path(path).write_text("not an npz")
    with pytest.raises(ValueError, match="me.tracking.npz is not a tracking file"):
        refined_tracking(path, refined)
