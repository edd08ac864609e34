"""Tests for engine.track.matte: mediapipe's selfie segmentation run for real on a portrait."""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from engine.track.matte import Matter, MatteOptions

ASTRONAUT = data.astronaut()  # uint8 [512, 512, 3], public-domain NASA portrait
# Boxes (rows, cols) in the 512x512 image. FACE is FaceMesh's landmark box (rows 71-177,
# cols 179-271), so it is all skin and hair. FLAG is the top-left corner (the star field of
# the flag) and BACKDROP the grey studio wall between the head and the rocket model.
FACE = (slice(71, 178), slice(179, 272))
FLAG = (slice(0, 60), slice(0, 60))
BACKDROP = (slice(100, 200), slice(310, 350))


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    matter = Matter()
    try:
        return matter.matte(ASTRONAUT)
    finally:
        matter.close()


def test_shape_dtype_range(raw: np.ndarray) -> None:
    assert raw.shape == (512, 512) and raw.dtype == np.float32
    assert raw.min() >= 0.0 and raw.max() <= 1.0


def test_person_inside_background_outside(raw: np.ndarray) -> None:
    assert raw[FACE].mean() > 0.9
    assert raw[FLAG].mean() < 0.05
    assert raw[BACKDROP].mean() < 0.05


def test_threshold_and_feather() -> None:
    matter = Matter(MatteOptions(threshold=0.5))
    hard = matter.matte(ASTRONAUT)
    matter.close()
    assert set(np.unique(hard)) <= {0.0, 1.0} and hard[FACE].mean() > 0.9

    matter = Matter(MatteOptions(threshold=0.5, feather=3.0))
    soft = matter.matte(ASTRONAUT)
    matter.close()
    assert soft.dtype == np.float32 and soft.min() >= 0.0 and soft.max() <= 1.0
    edge = (soft > 0.05) & (soft < 0.95)
    assert edge.mean() > 0.01  # a soft band along the silhouette
    assert np.abs(soft - hard).mean() < 0.02  # ... but the same silhouette


def test_non_square_input_keeps_its_size() -> None:
    matter = Matter()
    out = matter.matte(ASTRONAUT[:400, 50:350])
    matter.close()
    assert out.shape == (400, 300) and out.dtype == np.float32


@pytest.mark.parametrize("bad", [ASTRONAUT.astype(np.float32), ASTRONAUT[:, :, 0]])
def test_rejects_non_rgb8(bad: np.ndarray) -> None:
    matter = Matter()
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        matter.matte(bad)
    matter.close()


@pytest.mark.parametrize("kwargs", [dict(threshold=1.5), dict(feather=-1.0)])
def test_options_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MatteOptions(**kwargs)
