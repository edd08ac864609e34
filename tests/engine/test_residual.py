"""The expression residual: its folded form against the FiLM formula, its effect on a posed
avatar, and that the refiner learns it."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.animate import AnimatedAvatar
from engine.binding import place, slot_frames, surface_init
from engine.expressions import apply_expressions
from engine.headmodel.base import HeadModel
from engine.residual import STEP, ExpressionResidual, add_residual
from engine.types import Avatar


@pytest.fixture(scope="module")
def model(openhead):
    return HeadModel(openhead)


def random_residual(n: int, cond_dim: int, seed: int = 0) -> ExpressionResidual:
    """A residual with a non-zero output map (a new one is zero everywhere)."""
    r = ExpressionResidual.new(n, 5, 6, cond_dim, seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        r.out.weight.copy_(torch.randn(r.out.weight.shape, generator=g) * 0.1)
        r.out.bias.copy_(torch.randn(r.out.bias.shape, generator=g) * 0.1)
    return r


def test_the_residual_against_the_film_formula():
    r = random_residual(40, 9)
    cond = torch.randn(9)
    h = torch.nn.functional.silu(r.film_in(cond))
    film = r.film_out.weight @ h + r.film_out.bias                           # [2C]: γ then β
    gamma, beta = film[:5], film[5:]
    got = torch.cat(list(r(cond).values()), 1)
    for n in (0, 17, 39):                                                    # slot by slot, written out
        x = r.features[n] * (1 + gamma) + beta
        expected = r.out.weight @ (x * torch.sigmoid(x)) + r.out.bias
        torch.testing.assert_close(got[n], expected, rtol=1e-5, atol=1e-6)
    assert [d.shape[1] for d in r(cond).values()] == [3, 4, 3, 3]             # never opacity


def avatar_of(model: HeadModel, residual: ExpressionResidual | None) -> Avatar:
    slots = model.uv_slots(256)
    colors = torch.rand(len(slots), 3, generator=torch.Generator().manual_seed(0))
    a = Avatar(surface_init(slots, model.v_template, model.faces, colors), model.name, torch.zeros(model.n_shape), {})
    return a if residual is None else dataclasses.replace(a, residual=residual.state(slots))


def test_a_new_residual_leaves_the_avatar_unchanged(model):
    n, cond_dim = len(model.uv_slots(256)), model.n_expr + 12
    p = apply_expressions(model.neutral(), model, {"jawOpen": 0.6, "browInnerUp": 1.0})
    plain = AnimatedAvatar(avatar_of(model, None), model).gaussians(p)
    zero = AnimatedAvatar(avatar_of(model, ExpressionResidual.new(n, 4, 8, cond_dim)), model).gaussians(p)
    for a, b in zip(dataclasses.astuple(plain), dataclasses.astuple(zero)):
        assert torch.equal(a, b)


def test_a_posed_avatar_carries_the_residual_of_its_expression(model):
    slots = model.uv_slots(256)
    r = random_residual(len(slots), model.n_expr + 12)
    avatar = avatar_of(model, r)
    animated = AnimatedAvatar(avatar, model)
    smile = apply_expressions(model.neutral(), model, {"mouthSmile_L": 0.9})
    base = {k: slots.gather(v) for k, v in avatar.gaussians.maps().items()}
    with torch.no_grad():
        delta = r(smile.condition()[0])
        expected = place(slot_frames(slots, model.vertices(smile)[0], model.faces), **add_residual(base, delta))
    got = animated.gaussians(smile)
    torch.testing.assert_close(got.means, expected.means, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.colors, expected.colors, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.scales, expected.scales, rtol=1e-5, atol=0)
    # the position residual is STEP triangle scales per unit
    torch.testing.assert_close(add_residual(base, delta)["local_position"] - base["local_position"],
                               STEP * delta["local_position"])
    assert animated.activated(smile.condition()[0]) is animated.activated(smile.condition()[0])   # cached per expression
    neutral = animated.gaussians(model.neutral())
    assert not torch.allclose(neutral.colors, got.colors)


def test_the_residual_is_differentiable_in_the_expression(model):
    r = random_residual(len(model.uv_slots(256)), model.n_expr + 12)
    animated = AnimatedAvatar(avatar_of(model, r), model)
    cond = model.neutral().condition()[0].clone().requires_grad_(True)
    animated.activated(cond).color.sum().backward()
    assert cond.grad is not None and float(cond.grad.abs().sum()) > 0
    assert all(p.grad is None for p in animated._residual.parameters())       # the avatar stays frozen


def test_a_residual_for_another_head_model_is_refused(model):
    r = random_residual(len(model.uv_slots(256)), model.n_expr + 3)
    with pytest.raises(ValueError, match=f"takes a {model.n_expr + 3}-d code"):
        AnimatedAvatar(avatar_of(model, r), model)
