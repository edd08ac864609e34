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
    from engine.render.select import select
    from engine.track.fit import intrinsics
    from engine.types import HeadParams

    model = HeadModel(openhead)
    size, n = 48, 4
    plain = plain_avatar(model)
    cam = tracker_camera(intrinsics(np.array([200.0]), np.array([[size, size]]))[0], (size, size), size)
    neutral = model.neutral()
    true = dataclasses.replace(HeadParams(**{f.name: getattr(neutral, f.name).repeat(n, 1)
                                             for f in dataclasses.fields(neutral)}),
                               rotation=torch.tensor([[0.0, 0.1 * i, 0.0] for i in range(n)]),
                               translation=torch.tensor([[0.0, 0.0, -0.75]]).repeat(n, 1))
    animated, renderer = AnimatedAvatar(plain, model), select("cpu")
    with torch.no_grad():
        frames = [renderer.render(animated.gaussians(true.frame(i)), cam) for i in range(n)]
    imgs, mattes = [f.to_uint8() for f in frames], [f.alpha.numpy() for f in frames]
    off = dataclasses.replace(true, translation=true.translation + torch.tensor([0.004, 0.0, 0.0]))
    data = VideoData("clip", np.stack(imgs), np.stack(mattes).astype(np.float32), off, [cam] * n, np.ones(n, bool),
                     first_test=3)
    return plain, data
