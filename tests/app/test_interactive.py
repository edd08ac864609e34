"""The interactive render size: reduced while the input moves and the frame rate is short of the
target, never below half size, full again once the input is still."""
from __future__ import annotations

import pytest

from spatialavatar_app.app.interactive import MIN_SCALE, InteractiveScale, scaled_size


def drag(c: InteractiveScale, fps: float, seconds: float, t0: float = 0.0, dt: float = 0.04) -> float:
    t = t0
    while t < t0 + seconds:
        c.touch(t)
        c.observe(t, fps)
        assert not c.settle(t)
        t += dt
    return t


def test_short_of_the_target_the_scale_falls_step_by_step_to_half_and_no_lower():
    c = InteractiveScale(target_fps=25, step=0.8, adjust_seconds=0.5)
    assert c.scale() == 1.0
    drag(c, fps=20, seconds=1.2)
    assert c.scale() == pytest.approx(0.8 * 0.8)            # two adjustments in 1.2 s (the first after 0.5 s)
    drag(c, fps=20, seconds=10, t0=1.2)
    assert c.scale() == MIN_SCALE


def test_above_the_target_it_grows_back_and_in_between_it_holds():
    c = InteractiveScale(target_fps=25, step=0.8)
    t = drag(c, fps=10, seconds=1.6)
    low = c.scale()
    t = drag(c, fps=27, seconds=2.0, t0=t)                   # within 1.2x the target: held
    assert c.scale() == low
    drag(c, fps=60, seconds=5.0, t0=t)
    assert c.scale() == 1.0


def test_at_rest_full_size_once_and_the_learnt_scale_is_kept_for_the_next_drag():
    c = InteractiveScale(still_seconds=0.25)
    t = drag(c, fps=5, seconds=2.0)
    learnt = c.scale()
    assert learnt < 1.0
    assert not c.settle(t + 0.1)                             # not still long enough
    assert c.settle(t + 0.3) and c.scale() == 1.0            # the full-size picture, once
    assert not c.settle(t + 0.4)
    c.touch(t + 1.0)
    assert c.scale() == learnt


def test_disabled_while_recording():
    c = InteractiveScale()
    drag(c, fps=5, seconds=2.0)
    c.enabled = False
    assert c.scale() == 1.0 and not c.settle(100.0)


@pytest.mark.parametrize("height,aspect,scale,want", [(512, 1.0, 1.0, (512, 512)), (512, 1.0, 0.1, (256, 256)),
                                                      (512, 1.5, 0.72, (552, 368)), (3, 1.0, 0.5, (2, 2))])
def test_scaled_size_is_even_and_never_below_half(height, aspect, scale, want):
    assert scaled_size(height, aspect, scale) == want
