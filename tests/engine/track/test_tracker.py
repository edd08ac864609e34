"""The tracker on real pixels: mediapipe on a public-domain portrait, and bad inputs."""
from __future__ import annotations

import warnings

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data

from engine.headmodel.base import HeadModel
from engine.io.media import MediaError
from engine.track.landmarks import FaceMeshDetector
from engine.track.tracker import TrackError, track_portraits


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()          # NASA photograph, public domain, shipped with scikit-image


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


def test_facemesh_finds_478_landmarks_inside_the_face(astronaut):
    det = FaceMeshDetector()
    faces = det.detect(astronaut)
    det.close()
    assert len(faces) == 1 and faces[0].shape == (478, 3)
    x, y = faces[0][:, 0], faces[0][:, 1]
    # the face of the 512² astronaut portrait lies within columns 165-285 and rows 55-190
    assert x.min() > 165 and x.max() < 285 and y.min() > 55 and y.max() < 190


def test_track_a_portrait_end_to_end(astronaut, model, tmp_path):
    path = tmp_path / "astronaut.png"
    iio.imwrite(path, astronaut)
    tracked = track_portraits([path], model)
    assert tracked.found.all() and tracked.error_px[0] < 2.5
    assert tracked.mattes[0].shape == (512, 512) and tracked.mattes[0].dtype == np.uint8
    out = tracked.save(tmp_path / "out")
    z = np.load(out)
    for key in ("rotation", "translation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr", "K",
                "image_size", "bbox", "timestep_id"):
        assert key in z.files, key
    assert z["K"].shape == (1, 3, 3) and tuple(z["image_size"][0]) == (512, 512)
    x0, y0, x1, y1 = z["bbox"][0]
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 210


def test_grey_portrait_tracks(astronaut, model, tmp_path):
    path = tmp_path / "grey.png"
    iio.imwrite(path, astronaut.mean(-1).astype(np.uint8))
    assert track_portraits([path], model).error_px[0] < 3.0


def test_no_face_is_a_clear_error(model, tmp_path):
    path = tmp_path / "wall.png"
    iio.imwrite(path, np.full((256, 256, 3), 128, np.uint8))
    with pytest.raises(TrackError, match="wall.png: no face found"):
        track_portraits([path], model)


def test_tiny_face_is_refused_by_name(astronaut, model, tmp_path):
    path = tmp_path / "tiny.png"
    small = astronaut[::4, ::4]                    # the face becomes ~25 px wide
    canvas = np.full((512, 512, 3), 200, np.uint8)
    canvas[:128, :128] = small
    iio.imwrite(path, canvas)
    with pytest.raises(TrackError, match=r"tiny.png: (the face is too small|no face found)"):
        track_portraits([path], model)


def test_several_faces_take_the_largest_with_a_warning(astronaut, model, tmp_path):
    import cv2

    canvas = np.full((512, 1024, 3), 255, np.uint8)
    canvas[:, :512] = astronaut
    canvas[96:416, 600:920] = cv2.resize(astronaut, (320, 320))     # a second, smaller face on the right
    path = tmp_path / "two.png"
    iio.imwrite(path, canvas)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        tracked = track_portraits([path], model)
    assert any("found 2 faces; using the largest" in str(x.message) for x in w)
    assert tracked.bbox[0][2] < 512                # the fitted face is the big one, on the left


def test_not_an_image_names_the_file(model, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(MediaError, match="notes.png"):
        track_portraits([path], model)


def test_a_head_model_with_fewer_landmarks_tracks_through_its_embedding(openhead, astronaut, tmp_path):
    """FLAME's MediaPipe embedding covers 105 of FaceMesh's points; the tracker fits only those
    (simulated with OpenHead restricted to every fourth FaceMesh point)."""
    import dataclasses

    ids = np.arange(0, 468, 4)
    sub = dataclasses.replace(openhead, lmk_faces=openhead.lmk_faces[ids], lmk_bary=openhead.lmk_bary[ids], lmk_ids=ids)
    path = tmp_path / "astronaut.png"
    iio.imwrite(path, astronaut)
    tracked = track_portraits([path], HeadModel(sub))
    assert tracked.error_px[0] < 2.5
    assert np.isfinite(tracked.fitted[0, ids]).all() and np.isnan(tracked.fitted[0, 1]).all()
    full = track_portraits([path], HeadModel(openhead))
    assert np.abs(tracked.fitted[0, ids] - full.fitted[0, ids]).mean() < 3.0    # pixels: the same face


def test_a_videos_mattes_are_kept_small_and_given_back_at_the_frames_size(astronaut, model, tmp_path):
    """A 768² video keeps 512² mattes (a long 1080p video's full-size mattes filled the memory
    before refining began); `person_matte` gives each back at the frame's size, close to the
    matte of the full-size frame."""
    import cv2

    from engine.io.media import write_video
    from engine.track.matte import Matter
    from engine.track.tracker import VIDEO_MATTE_SIDE, track_video

    big = cv2.resize(astronaut, (768, 768), interpolation=cv2.INTER_CUBIC)
    write_video(tmp_path / "big.mp4", [big] * 2, 25.0)
    tracked = track_video(tmp_path / "big.mp4", model)
    assert [m.shape for m in tracked.mattes] == [(VIDEO_MATTE_SIDE, VIDEO_MATTE_SIDE)] * 2
    full = tracked.person_matte(1)
    assert full.shape == (768, 768) and full.dtype == np.uint8
    matter = Matter()
    truth = matter.matte(big)
    matter.close()
    assert np.abs(full / 255.0 - truth).mean() < 0.02
