"""Smoothing of a live parameter stream: the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A first-order low-pass whose cutoff rises with the signal's speed: slow motion (a face at
rest, where tracker jitter shows most) is smoothed hard, fast motion (speech, a head turn)
passes with little lag. Per sample at time t, with dt = t - t_prev:

    alpha(fc)  = 1 / (1 + tau / dt),  tau = 1 / (2 pi fc)
    dx         = (x - x̂_prev) / dt
    dx̂         = alpha(d_cutoff) dx + (1 - alpha(d_cutoff)) dx̂_prev
    fc         = min_cutoff + beta |dx̂|
    x̂          = alpha(fc) x + (1 - alpha(fc)) x̂_prev

Every element of the tensor or array is filtered on its own (its own cutoff). The first
sample passes unchanged with dx̂ = 0. Timestamps may be irregular (dropped or late frames):
alpha uses each sample's own dt.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from engine.types import HeadParams

Array = Union[torch.Tensor, np.ndarray]

# strength -> (min_cutoff, beta): geometric between these ends (see `OneEuroConfig.from_strength`).
MIN_CUTOFF_RANGE = (10.0, 0.3)    # Hz at strength 0+ and 1
BETA_RANGE = (2.0, 0.1)           # per (unit / s) at strength 0+ and 1
FILTERED_FIELDS = ("expr", "rotation", "neck", "jaw", "eyes", "translation")


@dataclass(frozen=True)
class OneEuroConfig:
    """The One-Euro filter's parameters."""

    min_cutoff: float = 1.7
    """Cutoff frequency (Hz) at rest: lower = less jitter when still, more lag."""
    beta: float = 0.45
    """How fast the cutoff rises with speed (Hz per unit/s): higher = less lag in fast motion."""
    d_cutoff: float = 1.0
    """Cutoff frequency (Hz) of the speed estimate itself."""
    enabled: bool = True
    """False passes every sample through unchanged."""

    @staticmethod
    def from_strength(strength: float, d_cutoff: float = 1.0) -> "OneEuroConfig":
        """A single smoothing knob in [0, 1] for people: 0 is off; otherwise min_cutoff falls
        geometrically from 10 Hz to 0.3 Hz and beta from 2.0 to 0.1 as strength goes from 0 to 1
        (0.5: 1.7 Hz, 0.45). The units suit head parameters (radians, blendshape weights,
        which move at ~1-5 units/s when speaking)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"smoothing strength must be in [0, 1], got {strength}")
        if strength == 0.0:
            return OneEuroConfig(enabled=False, d_cutoff=d_cutoff)
        lerp = lambda ab: ab[0] * (ab[1] / ab[0]) ** strength  # noqa: E731
        return OneEuroConfig(min_cutoff=lerp(MIN_CUTOFF_RANGE), beta=lerp(BETA_RANGE), d_cutoff=d_cutoff)


def smoothing_factor(cutoff, dt: float):
    """alpha = 1 / (1 + tau / dt) with tau = 1 / (2 pi cutoff); ``cutoff`` a number or array."""
    return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))


class OneEuroFilter:
    """One-Euro filter over a tensor or array of any fixed shape (each element on its own)."""

    def __init__(self, cfg: OneEuroConfig = OneEuroConfig()) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next sample passes unchanged."""
        self._t: float | None = None
        self._x: Array | None = None
        self._dx: Array | None = None

    @property
    def value(self) -> Array | None:
        """The last filtered value (None before the first sample)."""
        return self._x

    def __call__(self, t: float, x: Array) -> Array:
        """The filtered value of sample ``x`` taken at time ``t`` (seconds). A sample at or before
        the previous one's time changes nothing and returns the last filtered value."""
        if not self.cfg.enabled:
            self._t, self._x = t, x
            return x
        if self._t is None or self._x is None:
            self._t, self._x, self._dx = t, x, x * 0
            return x
        dt = t - self._t
        if not dt > 0:
            return self._x
        c = self.cfg
        dx = (x - self._x) / dt
        a_d = smoothing_factor(c.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        a = smoothing_factor(c.min_cutoff + c.beta * abs(self._dx), dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x


class HeadParamsFilter:
    """One-Euro filters on the per-frame fields of `HeadParams` (expression, poses, translation);
    ``shape`` passes through. Axis-angle poses are filtered as vectors, which is accurate for
    the small frame-to-frame changes of a head."""

    def __init__(self, cfg: OneEuroConfig = OneEuroConfig()) -> None:
        self.cfg = cfg
        self._filters = {k: OneEuroFilter(cfg) for k in FILTERED_FIELDS}

    def reset(self) -> None:
        for f in self._filters.values():
            f.reset()

    def __call__(self, t: float, p: HeadParams) -> HeadParams:
        return dataclasses.replace(p, **{k: self._filters[k](t, getattr(p, k)) for k in FILTERED_FIELDS})


def smoothstep(x: float) -> float:
    """3x² - 2x³ on [0, 1], clamped: an ease-in-out weight."""
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def blend(a: HeadParams, b: HeadParams, w: float) -> HeadParams:
    """(1 - w) a + w b, field by field (shape included)."""
    return HeadParams(*((1 - w) * getattr(a, k) + w * getattr(b, k)
                        for k in ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))


class LostFaceEase:
    """When the face is lost: hold the last output pose, then ease it to neutral.

    ``update(t, params, found)`` returns ``params`` while the face is found; after it is lost,
    the last found output held for ``hold_s`` and then blended into ``neutral`` with a smoothstep
    over ``ease_s`` seconds. When the face comes back its params are used at once (the caller's
    smoothing filter softens the jump)."""

    def __init__(self, neutral: HeadParams, hold_s: float = 0.1, ease_s: float = 0.5) -> None:
        self.neutral = neutral
        self.hold_s, self.ease_s = hold_s, ease_s
        self._last: HeadParams | None = None
        self._lost_at: float | None = None

    @property
    def easing(self) -> bool:
        """True while the face is lost."""
        return self._lost_at is not None

    def update(self, t: float, params: HeadParams | None, found: bool) -> HeadParams:
        if found and params is not None:
            self._last, self._lost_at = params, None
            return params
        if self._lost_at is None:
            self._lost_at = t
        if self._last is None:
            return self.neutral
        w = smoothstep((t - self._lost_at - self.hold_s) / self.ease_s) if self.ease_s > 0 else 1.0
        return blend(self._last, self.neutral, w)
