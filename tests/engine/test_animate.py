import torch

from engine.animate import AnimatedAvatar
from engine.binding import bind
from engine.expressions import apply_expressions
from engine.generator.plain import plain_avatar
from engine.headmodel.base import HeadModel


def test_posing_equals_binding_the_uv_maps(openhead):
    """AnimatedAvatar caches the per-slot attributes and poses them in one native pass; the result
    must be bind()'s to float rounding (the native pass sums in another order: ~1e-8 m)."""
    model = HeadModel(openhead)
    avatar = plain_avatar(model)
    animated = AnimatedAvatar(avatar, model)
    p = apply_expressions(animated.neutral(), model, {"jawOpen": 0.7, "mouthSmile_L": 0.5})
    got = animated.gaussians(p)
    want = bind(avatar.gaussians, animated.slots, model.vertices(p)[0], model.faces)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-6)
