"""`eval portraits` end to end on a portrait that is an avatar's own render: its rebuilt avatar,
rendered back at the tracked camera, must land on the person (IoU, PSNR inside the portrait
matte), so a camera, matte or scaling mix-up shows here."""
from __future__ import annotations

import imageio.v3 as iio
import pytest
import torch

from engine.eval.portraits import evaluate_portrait, format_table
from engine.headmodel.base import HeadModel


@pytest.fixture(scope="module")
def rendered_portrait(openhead, tmp_path_factory):
    from engine.animate import AnimatedAvatar
    from engine.camera import orbit_camera
    from engine.render.select import select
    from engine.service import default_avatar

    model = HeadModel(openhead)
    animated = AnimatedAvatar(default_avatar(model), model)
    with torch.no_grad():
        img = select(model.device).render(animated.gaussians(animated.neutral()), orbit_camera(size=384))
    path = tmp_path_factory.mktemp("portraits") / "avatar_render.png"
    iio.imwrite(path, img.to_uint8((0.35, 0.45, 0.55)))
    return model, path


def test_a_rendered_avatar_evaluated_as_a_portrait_covers_itself(rendered_portrait):
    model, path = rendered_portrait
    r = evaluate_portrait(path, model, side=256)
    assert (r.width, r.height) == (256, 256)
    # The rebuilt avatar lands on the person it was built from. Not near 1: MediaPipe's person
    # segmentation adds shoulders below a rendered head (0.72 here), which the avatar lacks.
    assert r.iou > 0.6, r
    assert r.psnr_head > 20 and r.psnr_head > r.psnr, r
    table = format_table([r, r]).splitlines()
    assert table[1].startswith("avatar_render.png") and table[-1].startswith("mean of 2")
