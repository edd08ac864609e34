"""Tracked clips: portraits of different sizes share one canvas with the principal point (the
tracker's camera) still at its centre; clips round-trip through their file."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from engine.track.fit import intrinsics
from engine.train.clips import Clip, clip_from_tracked
from engine.types import HeadParams


def tracked(sizes):
    hw = np.array(sizes)
    return SimpleNamespace(name="x", image_size=hw, mattes=[np.full(s, 255, np.uint8) for s in sizes],
                           K=intrinsics(np.full(len(sizes), 500.0), hw), bbox=np.tile([10.0, 20, 110, 140], (len(sizes), 1)),
                           found=np.ones(len(sizes), bool), flagged=np.array([False, True]),
                           params=HeadParams.neutral(3, 3, len(sizes)))


def test_photos_of_different_sizes_are_centred_with_their_principal_point(tmp_path):
    t = tracked([(301, 517), (400, 300)])
    clip = clip_from_tracked(t, [np.zeros((301, 517, 3), np.uint8), np.zeros((400, 300, 3), np.uint8)], 256)
    assert clip.images.shape == (2, 256, 256, 3)
    # scaled to 256 on the longer side, centred: 256 x 149 and 192 x 256 of matte, zero around them
    assert (clip.mattes > 0).sum(axis=(1, 2)).tolist() == [256 * 149, 192 * 256]
    np.testing.assert_allclose(clip.K[:, :2, 2], [[128, 128], [128, 128]], atol=0.6)
    np.testing.assert_allclose(clip.K[0, 0, 0], 500 * 256 / 517, rtol=1e-3)
    s = 256 / 517                                            # the face box moves with its photo
    np.testing.assert_allclose(clip.boxes[0], [10 * s, 20 * s + 53, 110 * s, 140 * s + 53], atol=0.6)
    assert clip.usable.tolist() == [True, False]             # flagged fits are not trained on
    again = Clip.load(clip.save(tmp_path / "x.clip.npz"))
    assert np.array_equal(again.images, clip.images) and torch.equal(again.params.expr, clip.params.expr)
    assert again.name == "x" and again.usable.tolist() == [True, False]
