"""Face metrics (CSIM, AKD, AED, APD) on scikit-image's astronaut portrait: identities with
itself and a shifted copy, no face -> None, and the code distances against their formula."""
import math

import numpy as np
import pytest
from skimage import data

from engine.metrics.face import LM68, aed, akd, apd, csim, expression_pose, mean_of


def shifted(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def model(openhead):
    from engine.headmodel.base import HeadModel

    return HeadModel(openhead)


def test_lm68_holds_68_distinct_facemesh_points():
    assert len(LM68) == 68 and len(set(LM68)) == 68 and max(LM68) < 468


def test_akd_is_zero_on_itself_and_the_shift_on_a_shifted_copy():
    a = data.astronaut()
    assert akd(a, a) == 0.0
    for dx, dy in ((7, -5), (12, 9)):
        assert akd(a, shifted(a, dx, dy)) == pytest.approx(math.hypot(dx, dy), abs=1.0)


def test_csim_is_one_on_itself_and_high_on_a_shifted_copy():
    a = data.astronaut()
    assert csim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert csim(a, shifted(a, 7, -5)) > 0.95


def test_no_face_gives_none(model):
    a, coffee = data.astronaut(), data.coffee()
    assert csim(a, coffee) is None and csim(coffee, a) is None
    assert akd(coffee, coffee) is None
    assert expression_pose(coffee, model) is None


def test_akd_refuses_images_of_different_sizes():
    a = data.astronaut()
    with pytest.raises(ValueError, match="one size"):
        akd(a, a[:400])


def test_code_distances_are_mean_absolute_differences():
    a, b = np.array([0.0, 1.0, 2.0, -1.0]), np.array([1.0, 1.0, 0.0, -1.5])
    assert aed(a, a) == 0.0 and apd(b, b) == 0.0
    assert aed(a, b) == pytest.approx((1 + 0 + 2 + 0.5) / 4)
    assert apd(a[:3], b[:3]) == pytest.approx(1.0)
    assert aed(a, None) is None and apd(None, b) is None
    with pytest.raises(ValueError, match="different shapes"):
        aed(a, b[:3])


def test_mean_of_skips_missing_values_and_counts_the_rest():
    assert mean_of([1.0, None, 3.0]) == (2.0, 2)
    assert mean_of([None, None]) == (None, 0)


def test_expression_pose_of_a_mirrored_portrait_mirrors_the_head_rotation(model):
    a = data.astronaut()
    expr, pose = expression_pose(a, model)
    assert expr.shape == (model.n_expr + 3,) and pose.shape == (3,)
    _, mirrored = expression_pose(np.ascontiguousarray(a[:, ::-1]), model)
    # mirroring x keeps the rotation about x (pitch) and flips those about y (yaw) and z (roll)
    np.testing.assert_allclose(mirrored * [1, -1, -1], pose, atol=0.03)
    assert abs(pose[0]) > 0.1                    # her head is pitched ~0.2 rad: the check above is not all noise
    assert apd(*[expression_pose(shifted(a, 7, -5), model)[1], pose]) < 0.02


def synthetic_face(iris_dx: float = 0.0, lip_gap: float = 0.0, lid_gap: float = 3.0):
    """A `Face` whose eyes are 30 px wide at y = 100, their irises ``iris_dx`` px towards +x of
    the mid-corners, lids ``lid_gap`` apart, and a 50-px mouth at y = 160 parted ``lip_gap``."""
    from engine.metrics.face import Face

    p = np.zeros((478, 2))
    for iris, inner, outer, lids, cx, side in ((468, 133, 33, ((159, 145), (158, 153), (160, 144)), 70, -1),
                                                (473, 362, 263, ((386, 374), (385, 380), (387, 373)), 130, 1)):
        p[inner], p[outer] = (cx - side * 15, 100), (cx + side * 15, 100)
        p[iris] = (cx + iris_dx, 100)
        for u, d in lids:
            p[u], p[d] = (cx, 100 - lid_gap / 2), (cx, 100 + lid_gap / 2)
    p[78], p[308], p[13], p[14] = (75, 160), (125, 160), (100, 160 - lip_gap / 2), (100, 160 + lip_gap / 2)
    return Face(p, np.zeros(128), None, None)


def test_face_signals_are_offsets_and_openings_in_widths():
    from engine.metrics.face import face_signals

    s = face_signals(synthetic_face(iris_dx=3.0, lip_gap=10.0, lid_gap=6.0))
    np.testing.assert_allclose(s, [3 / 30, 10 / 50, 6 / 30])
    assert face_signals(None) is None


def test_agreement_correlates_frame_and_render_signals():
    from engine.metrics.face import agreement, face_signals, region_akd

    looks = [-4.0, -1.0, 0.0, 2.0, 5.0]
    real = [face_signals(synthetic_face(dx, lip_gap=2 * i, lid_gap=6.0)) for i, dx in enumerate(looks)]
    follows = [face_signals(synthetic_face(dx / 2, lip_gap=3 * i, lid_gap=4.5)) for i, dx in enumerate(looks)]
    a = agreement(real, follows + [None])
    assert a["gaze_r"] == pytest.approx(1.0) and a["mouth_r"] == pytest.approx(1.0)
    assert a["eye_diff"] == pytest.approx(1.5 / 30) and a["n"] == 5
    assert a["gaze_sd"] == pytest.approx(np.std(looks) / 30) and a["mouth_sd"] == pytest.approx(np.std([0, 2, 4, 6, 8]) / 50)
    ahead = [face_signals(synthetic_face(0.0, lip_gap=2 * i)) for i in range(5)]     # the render looks ahead
    assert agreement(real, ahead)["gaze_r"] is None
    reversed_ = agreement(real, real[::-1])
    assert reversed_["mouth_r"] == pytest.approx(-1.0)
    assert region_akd(synthetic_face(2.0), synthetic_face(0.0), "eyes") == pytest.approx(2 * 2 / 14)
    assert region_akd(synthetic_face(2.0), synthetic_face(0.0), "jaw") == 0
