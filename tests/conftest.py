"""Shared fixtures. `--device cuda` switches the device fixture; the `gpu` marker skips without CUDA."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for device-parametrised tests")


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def device(request) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(scope="session")
def openhead():
    """OpenHead's data (built once per machine and cached)."""
    from engine.headmodel.openhead import load_openhead

    return load_openhead()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the shared data set lives beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def offset_clip(openhead):
    """(plain avatar, a 4-frame 48-px `VideoData` of it turning its head; the last frame held
    out) whose tracked translations are all 4 mm off the rendered ones, for alignment tests."""
    import dataclasses

    import numpy as np

    from engine.animate import AnimatedAvatar
    from engine.generator.plain import plain_avatar
    from engine.headmodel.base import HeadModel
    from engine.refine.data import VideoData, tracker_camera
    from engine.render import select
    from engine.track.fit import intrinsics
    from engine.types import HeadParams

    model = HeadModel(openhead)
    size, n = 48, 4
    plain = plain_avatar(model)
    cam = tracker_camera(intrinsics(np.array([200.0]), np.array([[size, size]]))[0], (size, size), size)
    ps, imgs, mattes = [], [], []
    for i in range(n):
        p = dataclasses.replace(model.neutral(), rotation=torch.tensor([[0.0, 0.1 * i, 0.0]]),
                                translation=torch.tensor([[0.0, 0.0, -0.75]]))
        with torch.no_grad():
            f = select("cpu").render(AnimatedAvatar(plain, model).gaussians(p), cam)
        imgs.append(f.to_uint8())
        mattes.append(f.alpha.numpy())
        ps.append(p)
    off = HeadParams(*(torch.cat([getattr(p, k) for p in ps]) for k in
                       ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
    off = dataclasses.replace(off, translation=off.translation + torch.tensor([0.004, 0.0, 0.0]))
    data = VideoData("clip", np.stack(imgs), np.stack(mattes).astype(np.float32), off, [cam] * n, np.ones(n, bool),
                     first_test=3)
    return plain, data
