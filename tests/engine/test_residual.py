"""The expression residual: its map against the FiLM formula (natively and in torch), its effect
on a posed avatar, and that the refiner learns it."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.animate import AnimatedAvatar
from engine.binding import place, slot_frames, surface_init
from engine.expressions import apply_expressions
from engine.headmodel.base import HeadModel
import engine.native as native_build
from engine.residual import (NATIVE_MAX_FEATURES, STEP, ExpressionResidual, add_residual, residual_map,
                             residual_map_torch, split)
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
    got = r(cond)
    for n in (0, 17, 39):                                                    # slot by slot, written out
        x = r.features[n] * (1 + gamma) + beta
        expected = r.out.weight @ (x * torch.sigmoid(x)) + r.out.bias
        torch.testing.assert_close(got[n], expected, rtol=1e-5, atol=1e-6)
    assert {k: d.shape[1] for k, d in split(got).items()} == {"local_position": 3, "rotation": 4, "log_scale": 3,
                                                                "color": 3}   # never opacity


def map_inputs(n: int, c: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Features [n, c], γ, β [c], read-out weight [13, c] and bias [13], all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, c), (c,), (c,), (13, c), (13,)]
    return [(torch.randn(s, generator=g, dtype=dtype) * (0.5 if i in (1, 2) else 1)).requires_grad_(True)
            for i, s in enumerate(shapes)]


def map_and_grads(fn, ts: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
    for t in ts:
        t.grad = None
    out = fn(*ts)
    out.backward(grad)
    return [out.detach()] + [t.grad.clone() for t in ts]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("c", [5, 32])
def test_the_native_map_matches_torch(dtype, tol, c):
    ts = map_inputs(301, c, dtype)     # an odd count: rows split unevenly between threads
    grad = torch.randn(301, 13, generator=torch.Generator().manual_seed(1), dtype=dtype)
    native, reference = map_and_grads(residual_map, ts, grad), map_and_grads(residual_map_torch, ts, grad)
    for name, a, b in zip(["delta", "features", "gamma", "beta", "weight", "bias"], native, reference):
        assert a.shape == b.shape, name
        err = float((a - b).abs().max() / b.abs().max())
        assert err < tol, f"{name}: relative error {err:.2e}"


def test_the_native_map_passes_gradcheck():
    ts = map_inputs(7, 4, torch.float64, seed=2)
    assert torch.autograd.gradcheck(residual_map, ts)


def test_the_map_falls_back_to_torch(monkeypatch):
    ts = map_inputs(50, 6, torch.float32)
    grad = torch.ones(50, 13)
    native = map_and_grads(residual_map, ts, grad)

    monkeypatch.setattr(native_build, "_module", None)
    monkeypatch.setattr(native_build, "_error", OSError("g++: command not found"))
    fallback = map_and_grads(residual_map, ts, grad)
    for a, b in zip(native, fallback):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    wide = map_inputs(3, NATIVE_MAX_FEATURES + 1, torch.float32)      # more features than the native map holds
    monkeypatch.undo()
    torch.testing.assert_close(residual_map(*wide), residual_map_torch(*wide))


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
                               STEP * split(delta)["local_position"])
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
