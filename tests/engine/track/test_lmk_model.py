"""The landmark model as FaceMesh marks a face: a closed mouth's inner lips meet."""
from __future__ import annotations

import torch

from engine.headmodel import facemesh as fm
from engine.headmodel.base import HeadModel
from engine.track.lmk_model import LandmarkModel


def test_detected_inner_lips_meet_and_nothing_else_moves(openhead):
    model = HeadModel(openhead)
    plain, detected = LandmarkModel(model), LandmarkModel(model, detected=True)
    ids = [int(i) for i in model.lmk_ids]
    row = {i: ids.index(i) for i in ids}
    a, b = plain.rest[row[13]], plain.rest[row[14]]
    assert (a - b).norm() > 0.002                                     # OpenHead's rest mouth is parted
    torch.testing.assert_close(detected.rest[row[13]], (a + b) / 2)   # ... FaceMesh's closed mouth is not
    torch.testing.assert_close(detected.rest[row[14]], (a + b) / 2)
    inner = set(fm.topology()["lips_inner"])
    moved = (detected.rest - plain.rest).norm(dim=1) > 0
    assert {ids[i] for i in torch.nonzero(moved)[:, 0].tolist()} <= inner
    for corner in (78, 308):                                          # the mouth's corners stay
        assert not moved[row[corner]]
