"""The One-Euro filter against its formula (Casiez et al. 2012), the strength knob, lost-face easing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.drive.filters import (HeadParamsFilter, LostFaceEase, OneEuroConfig, OneEuroFilter, blend,
                                  smoothing_factor)
from engine.types import HeadParams


def reference(ts, xs, min_cutoff, beta, d_cutoff):
    """The paper's algorithm, written out for scalars."""
    out, x_hat, dx_hat, t_prev = [], None, 0.0, None
    for t, x in zip(ts, xs):
        if x_hat is None:
            x_hat = x
        else:
            dt = t - t_prev
            a_d = 1 / (1 + 1 / (2 * math.pi * d_cutoff * dt))
            dx_hat = a_d * (x - x_hat) / dt + (1 - a_d) * dx_hat
            fc = min_cutoff + beta * abs(dx_hat)
            a = 1 / (1 + 1 / (2 * math.pi * fc * dt))
            x_hat = a * x + (1 - a) * x_hat
        t_prev = t
        out.append(x_hat)
    return np.array(out)


def test_step_response_without_beta_is_a_first_order_low_pass():
    cfg = OneEuroConfig(min_cutoff=2.0, beta=0.0)
    f = OneEuroFilter(cfg)
    dt = 1 / 30
    f(0.0, np.zeros(1))
    a = smoothing_factor(2.0, dt)
    for n in range(1, 20):
        y = f(n * dt, np.ones(1))
        assert y[0] == pytest.approx(1 - (1 - a) ** n, abs=1e-12)


def test_step_response_with_beta_is_faster_and_matches_the_formula():
    ts = np.arange(30) / 30
    xs = np.r_[np.zeros(5), np.ones(25)]
    slow, fast = OneEuroFilter(OneEuroConfig(1.0, 0.0)), OneEuroFilter(OneEuroConfig(1.0, 5.0))
    ys_slow = np.array([slow(t, np.array([x]))[0] for t, x in zip(ts, xs)])
    ys_fast = np.array([fast(t, np.array([x]))[0] for t, x in zip(ts, xs)])
    assert np.allclose(ys_fast, reference(ts, xs, 1.0, 5.0, 1.0), atol=1e-12)
    assert (ys_fast[6:] > ys_slow[6:]).all()          # speed raises the cutoff: less lag


def test_a_constant_stays_constant():
    for cfg in (OneEuroConfig(), OneEuroConfig.from_strength(1.0), OneEuroConfig(0.1, 10.0)):
        f = OneEuroFilter(cfg)
        x = torch.tensor([[0.3, -1.2, 5.0]])
        for i in range(50):
            assert torch.allclose(f(i / 25, x), x, rtol=0, atol=1e-7)


def test_per_element_and_irregular_time_steps_match_the_formula():
    g = np.random.default_rng(0)
    ts = np.cumsum(g.uniform(0.005, 0.12, 60))       # dropped and late frames
    xs = np.stack([np.sin(3 * ts), 0.2 * g.normal(size=60), np.where(ts > ts[30], 1.0, 0.0)], 1)
    f = OneEuroFilter(OneEuroConfig(1.5, 0.7, 1.2))
    ys = np.array([f(t, torch.tensor(x)).numpy() for t, x in zip(ts, xs)])
    for k in range(3):                                   # each element on its own, its own cutoff
        assert np.allclose(ys[:, k], reference(ts, xs[:, k], 1.5, 0.7, 1.2), atol=1e-9)


def test_a_sample_at_or_before_the_last_time_changes_nothing():
    f = OneEuroFilter()
    f(0.0, np.zeros(2))
    y = f(0.1, np.ones(2)).copy()
    assert np.array_equal(f(0.1, np.full(2, 9.0)), y)
    assert np.array_equal(f(0.05, np.full(2, 9.0)), y)


def test_higher_strength_smooths_more():
    g = np.random.default_rng(1)
    ts = np.arange(200) / 30
    noise = g.normal(0, 0.05, (200, 8))
    jitter = []
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        f = OneEuroFilter(OneEuroConfig.from_strength(s))
        ys = np.array([f(t, x) for t, x in zip(ts, noise)])
        jitter.append(np.abs(np.diff(ys[50:], axis=0)).mean())
    assert jitter[0] == pytest.approx(np.abs(np.diff(noise[50:], axis=0)).mean())   # 0 = off
    assert all(a > b for a, b in zip(jitter, jitter[1:]))


def test_strength_maps_to_documented_ends():
    assert not OneEuroConfig.from_strength(0.0).enabled
    lo, hi = OneEuroConfig.from_strength(1e-9), OneEuroConfig.from_strength(1.0)
    assert lo.min_cutoff == pytest.approx(10.0) and lo.beta == pytest.approx(2.0)
    assert hi.min_cutoff == pytest.approx(0.3) and hi.beta == pytest.approx(0.1)
    with pytest.raises(ValueError, match="strength"):
        OneEuroConfig.from_strength(1.5)


def params(jaw: float, shape: float = 0.0) -> HeadParams:
    p = HeadParams.neutral(4, 5)
    return HeadParams(p.shape + shape, p.expr + jaw, p.rotation, p.neck, p.jaw + jaw, p.eyes, p.translation)


def test_head_params_filter_smooths_fields_and_passes_shape():
    f = HeadParamsFilter(OneEuroConfig(1.0, 0.0))
    f(0.0, params(0.0, shape=1.0))
    out = f(1 / 30, params(1.0, shape=2.0))
    assert torch.equal(out.shape, torch.full((1, 4), 2.0))
    assert 0 < out.jaw[0, 0] < 0.5 and torch.allclose(out.expr, out.jaw[:, :1].expand(1, 5))


def test_lost_face_holds_then_eases_to_neutral():
    neutral, last = params(0.0), params(1.0)
    ease = LostFaceEase(neutral, hold_s=0.1, ease_s=0.5)
    assert ease.update(0.0, last, True) is last
    assert torch.equal(ease.update(0.05, None, False).jaw, last.jaw)          # lost at 0.05: held
    assert torch.equal(ease.update(0.15, None, False).jaw, last.jaw)          # still within the hold
    mid = float(ease.update(0.05 + 0.1 + 0.25, None, False).jaw[0, 0])         # half way through the ease
    assert mid == pytest.approx(0.5)
    assert torch.equal(ease.update(1.0, None, False).jaw, neutral.jaw)        # neutral after hold + ease
    back = params(0.7)
    assert ease.update(1.1, back, True) is back and not ease.easing


def test_blend_is_linear():
    assert float(blend(params(0.0), params(1.0), 0.25).jaw[0, 0]) == pytest.approx(0.25)
