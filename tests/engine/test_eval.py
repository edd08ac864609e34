"""The feed-forward evaluation protocol's frame choice and the evaluation matte."""
import numpy as np

from engine.eval.feedforward import source_frames, target_frames
from engine.headmodel.base import HeadModel
from engine.metrics.matte import eval_matte, mesh_silhouette
from engine.types import HeadParams


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
