"""Expression transfer: absolute copies, relative removes the driver's identity offsets, gains, switches."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.drive.transfer import (ExpressionTransfer, TransferConfig, expression_channel, expression_gains,
                                   median_params, transfer)
from engine.types import HeadParams

NAMES = ("browInnerUp", "eyeBlink_L", "jawForward", "mouthSmile_L", "cheekPuff", "local_brow_L_0x", "local_eye_R_1y",
         "local_mouth_3z", "")
E = len(NAMES)


def rand_params(seed: int, scale: float = 0.3) -> HeadParams:
    g = torch.Generator().manual_seed(seed)
    r = lambda n: (torch.rand(1, n, generator=g) - 0.3) * scale  # noqa: E731
    return HeadParams(r(5), r(E).abs(), r(3), r(3), r(3), r(6), r(3) + torch.tensor([[0.0, 0.0, -0.6]]))


@pytest.fixture
def avatar_neutral() -> HeadParams:
    p = HeadParams.neutral(5, E)
    return dataclasses.replace(p, shape=torch.arange(5.0)[None])


def run(driver, avatar_neutral, cfg, driver_neutral=None):
    from engine.drive.transfer import clamp_mask

    return transfer(driver, avatar_neutral, cfg, expression_gains(NAMES, cfg), driver_neutral, clamp_mask(NAMES))


def test_channels_are_found_by_name():
    assert [expression_channel(n) for n in NAMES] == ["brows", "eyes", "jaw", "mouth", None, "brows", "eyes", "mouth",
                                                      None]


def test_relative_of_the_drivers_own_neutral_is_the_avatars_neutral(avatar_neutral):
    d0 = rand_params(1)
    out = run(d0, avatar_neutral, TransferConfig(relative=True), driver_neutral=d0)
    for k in ("shape", "expr", "jaw", "eyes", "translation"):
        assert torch.equal(getattr(out, k), getattr(avatar_neutral, k)), k
    for k in ("rotation", "neck"):                                        # composed rotations: round-off only
        assert torch.allclose(getattr(out, k), getattr(avatar_neutral, k), atol=1e-7), k


def test_relative_removes_the_drivers_resting_expression(avatar_neutral):
    smile = NAMES.index("mouthSmile_L")
    d0 = HeadParams.neutral(5, E)
    d0.expr[0, smile] = 0.3                                 # this driver smiles a little at rest
    talking = dataclasses.replace(d0, jaw=torch.tensor([[0.2, 0.0, 0.0]]))
    rel = run(talking, avatar_neutral, TransferConfig(relative=True), driver_neutral=d0)
    ab = run(talking, avatar_neutral, TransferConfig(relative=False))
    assert float(rel.expr[0, smile]) == 0.0 and float(ab.expr[0, smile]) == pytest.approx(0.3)
    assert torch.allclose(rel.jaw, talking.jaw) and torch.allclose(ab.jaw, talking.jaw)


def test_absolute_copies_expression_and_pose_onto_the_avatars_shape(avatar_neutral):
    d = rand_params(2)
    out = run(d, avatar_neutral, TransferConfig(relative=False))
    for k in ("expr", "rotation", "neck", "jaw", "eyes"):
        assert torch.equal(getattr(out, k), getattr(d, k)), k
    assert torch.equal(out.shape, avatar_neutral.shape)
    assert torch.equal(out.translation, avatar_neutral.translation)    # never transferred: the avatar stays centred


def test_relative_rotation_is_the_drivers_change_from_its_neutral(avatar_neutral):
    from scipy.spatial.transform import Rotation

    d0, d = rand_params(3), rand_params(4)
    out = run(d, avatar_neutral, TransferConfig(relative=True), driver_neutral=d0)
    want = Rotation.from_rotvec(d0.neck[0].double().numpy()).inv() * Rotation.from_rotvec(d.neck[0].double().numpy())
    assert np.allclose(out.neck[0].numpy(), want.as_rotvec(), atol=1e-6)
    assert torch.allclose(out.eyes, d.eyes - d0.eyes)
    assert torch.equal(out.translation, avatar_neutral.translation)


@pytest.mark.parametrize("relative", [True, False])
def test_gains_scale_only_their_channels(avatar_neutral, relative):
    d0, d = HeadParams.neutral(5, E), rand_params(5)
    base = run(d, avatar_neutral, TransferConfig(relative=relative), d0)
    cfg = TransferConfig(relative=relative, gain_brows=2.0, gain_eyes=0.5, gain_jaw=3.0)
    out = run(d, avatar_neutral, cfg, d0)
    want = {"brows": 2.0, "eyes": 0.5, "jaw": 3.0, "mouth": 1.0, None: 1.0}
    for i, n in enumerate(NAMES):
        assert float(out.expr[0, i]) == pytest.approx(want[expression_channel(n)] * float(base.expr[0, i]), abs=1e-7), n
    assert torch.allclose(out.jaw, 3.0 * base.jaw)
    for k in ("rotation", "neck", "eyes"):
        assert torch.equal(getattr(out, k), getattr(base, k)), k


@pytest.mark.parametrize("relative", [True, False])
def test_pose_off_keeps_the_avatars_rotation_and_gaze_off_its_eyes(relative):
    av = dataclasses.replace(HeadParams.neutral(5, E), rotation=torch.tensor([[0.0, 0.3, 0.0]]),
                             eyes=torch.full((1, 6), 0.05))
    d0, d = rand_params(6), rand_params(7)
    out = run(d, av, TransferConfig(relative=relative, head_pose=False, gaze=False), d0)
    assert torch.equal(out.rotation, av.rotation) and torch.equal(out.neck, av.neck)
    assert torch.equal(out.eyes, av.eyes)
    assert not torch.equal(out.jaw, av.jaw)                                   # the rest still transfers


def test_named_blendshapes_are_clamped_at_zero_local_modes_are_not(avatar_neutral):
    d0 = dataclasses.replace(HeadParams.neutral(5, E), expr=torch.full((1, E), 0.2))
    out = run(HeadParams.neutral(5, E), avatar_neutral, TransferConfig(relative=True), d0)
    named = torch.tensor([bool(n) and not n.startswith("local_") for n in NAMES])
    assert (out.expr[0, named] == 0).all() and torch.allclose(out.expr[0, ~named], torch.tensor(-0.2))
    raw = run(HeadParams.neutral(5, E), avatar_neutral, TransferConfig(relative=True, clamp_blendshapes=False), d0)
    assert torch.allclose(raw.expr, torch.tensor(-0.2))


def test_relative_needs_a_neutral(avatar_neutral):
    with pytest.raises(ValueError, match="neutral"):
        run(rand_params(1), avatar_neutral, TransferConfig(relative=True))


def test_a_driver_of_another_head_model_is_refused(avatar_neutral):
    with pytest.raises(ValueError, match="expression components"):
        run(HeadParams.neutral(5, E + 1), avatar_neutral, TransferConfig(relative=False))


def test_stream_estimates_the_neutral_as_the_median_of_the_first_seconds(avatar_neutral):
    x = ExpressionTransfer(NAMES, avatar_neutral, TransferConfig(relative=True, neutral_seconds=1.0))
    g = torch.Generator().manual_seed(0)
    rest = rand_params(8)
    samples = []
    for i in range(25):                               # 0.96 s of a resting face with tracker noise
        p = dataclasses.replace(rest, expr=rest.expr + 0.01 * torch.randn(1, E, generator=g))
        samples.append(p)
        x(i / 25, p)
    assert x.estimating
    assert torch.allclose(x.driver_neutral.expr, median_params(samples).expr)
    x(1.5, dataclasses.replace(rest, jaw=rest.jaw + 1.0))   # after the window: not part of the estimate
    assert not x.estimating and torch.allclose(x.driver_neutral.jaw, rest.jaw)
    out = x(1.6, rest)
    assert torch.equal(out.expr, run(rest, avatar_neutral, x.cfg, x.driver_neutral).expr)


def test_calibrate_overrides_the_estimate(avatar_neutral):
    x = ExpressionTransfer(NAMES, avatar_neutral, TransferConfig(relative=True))
    x(0.0, rand_params(9))
    d0 = rand_params(10)
    x.calibrate(d0)
    assert x.calibrated and not x.estimating
    out = x(0.1, d0)
    assert torch.equal(out.expr, avatar_neutral.expr) and torch.equal(out.jaw, avatar_neutral.jaw)
    x.reset_neutral()
    assert not x.calibrated and x.driver_neutral is None
