"""Expression transfer: a driver's tracked `HeadParams` onto an avatar's head.

Two modes:

- **absolute**: the driver's expression, jaw, gaze and head rotation (root and neck) are
  copied onto the avatar's identity ``shape``. Whatever the driver's face does at rest (a
  slight smile, brows set high, a head held tilted) is copied too: identity leaks.
- **relative**: the driver's parameters minus the driver's own neutral, added to the avatar's
  neutral. Expressions, jaw and gaze subtract; rotations compose (the driver's rotation
  relative to its neutral one, applied after the avatar's). The driver's neutral is set by
  `ExpressionTransfer.calibrate` ("Calibrate neutral": the driver holds a neutral face) or,
  until then, estimated as the per-channel median of the driver's first
  `TransferConfig.neutral_seconds` seconds.

In both modes translation is never transferred (the avatar stays centred in its own view),
head pose and gaze can be switched off (the avatar's own stay), and gains scale channels:
jaw (the jaw joint and ``jaw*`` blendshapes), brows, eyes (blink, squint, wide) and mouth.
Blendshape channels are found by the head model's expression names (``brow*``, ``eye*``,
``jaw*``, ``mouth*``, and OpenHead's ``local_brow*``, ...); a head model without names (FLAME)
has only the jaw gain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from engine.expressions import LOCAL_PREFIX
from engine.types import HeadParams

CHANNEL_PREFIXES = {"jaw": ("jaw",), "brows": ("brow",), "eyes": ("eye",), "mouth": ("mouth",)}


@dataclass(frozen=True)
class TransferConfig:
    """How a driver's parameters drive the avatar."""

    relative: bool = True
    """Transfer the driver's change from its own neutral (True) or its raw parameters (False)."""
    head_pose: bool = True
    """Transfer head rotation (root and neck); off keeps the avatar's own."""
    gaze: bool = True
    """Transfer eye rotation; off keeps the avatar's eyes looking ahead."""
    gain_jaw: float = 1.0
    """Scale of the jaw: jaw joint rotation and ``jaw*`` blendshapes."""
    gain_brows: float = 1.0
    """Scale of ``brow*`` blendshapes."""
    gain_eyes: float = 1.0
    """Scale of ``eye*`` blendshapes (blink, squint, wide); gaze is not scaled."""
    gain_mouth: float = 1.0
    """Scale of ``mouth*`` blendshapes."""
    clamp_blendshapes: bool = True
    """Clamp named blendshape weights at 0 from below: relative mode subtracts the driver's
    neutral, and a driver who relaxes below it would otherwise get an inverted expression.
    OpenHead's signed ``local_*`` modes are never clamped."""
    neutral_seconds: float = 2.0
    """Relative mode without calibration: the driver's neutral is the per-channel median of its
    first this-many seconds (of frames with a face)."""


def expression_channel(name: str) -> str | None:
    """The gain channel ("jaw", "brows", "eyes", "mouth") of an expression name, or None."""
    base = name.removeprefix(LOCAL_PREFIX)
    for channel, prefixes in CHANNEL_PREFIXES.items():
        if base.startswith(prefixes):
            return channel
    return None


def expression_gains(expr_names: Sequence[str], cfg: TransferConfig) -> Tensor:
    """Per-expression-component gain [E] from the config's channel gains."""
    gains = {"jaw": cfg.gain_jaw, "brows": cfg.gain_brows, "eyes": cfg.gain_eyes, "mouth": cfg.gain_mouth}
    return torch.tensor([gains.get(expression_channel(n), 1.0) for n in expr_names], dtype=torch.float32)


def clamp_mask(expr_names: Sequence[str]) -> Tensor:
    """[E] bool: named (ARKit) blendshapes, whose weights are not negative."""
    return torch.tensor([bool(n) and not n.startswith(LOCAL_PREFIX) for n in expr_names])


def _relative_rotation(ref: Tensor, cur: Tensor) -> Tensor:
    """Axis-angle of R_ref⁻¹ R_cur: [B, 3]."""
    from scipy.spatial.transform import Rotation

    rel = Rotation.from_rotvec(ref.double().numpy()).inv() * Rotation.from_rotvec(cur.double().numpy())
    return torch.as_tensor(rel.as_rotvec(), dtype=cur.dtype)


def _compose(a: Tensor, b: Tensor) -> Tensor:
    """Axis-angle of R_a R_b: [B, 3]."""
    from scipy.spatial.transform import Rotation

    r = Rotation.from_rotvec(a.double().numpy()) * Rotation.from_rotvec(b.double().numpy())
    return torch.as_tensor(r.as_rotvec(), dtype=b.dtype)


def transfer(driver: HeadParams, avatar_neutral: HeadParams, cfg: TransferConfig, gains: Tensor,
             driver_neutral: HeadParams | None = None, clamp: Tensor | None = None) -> HeadParams:
    """The avatar's parameters [B, ...] for the driver's [B, ...].

    avatar_neutral and driver_neutral: batch 1 (or B); gains [E] (`expression_gains`); clamp
    [E] bool (`clamp_mask`, applied when ``cfg.clamp_blendshapes``); driver_neutral is needed
    in relative mode."""
    B = driver.batch_size
    a = HeadParams(*(getattr(avatar_neutral, k).expand(B, -1) for k in _FIELDS))
    if driver.expr.shape[1] != a.expr.shape[1]:
        raise ValueError(f"the driver has {driver.expr.shape[1]} expression components, the avatar's head model "
                         f"{a.expr.shape[1]}: drive with the avatar's head model")
    if cfg.relative:
        if driver_neutral is None:
            raise ValueError("relative transfer needs the driver's neutral (calibrate, or give frames to estimate it)")
        d0 = HeadParams(*(getattr(driver_neutral, k).expand(B, -1) for k in _FIELDS))
        expr = a.expr + gains * (driver.expr - d0.expr)
        jaw = a.jaw + cfg.gain_jaw * (driver.jaw - d0.jaw)
        eyes = a.eyes + (driver.eyes - d0.eyes)
        rotation = _compose(a.rotation, _relative_rotation(d0.rotation, driver.rotation))
        neck = _compose(a.neck, _relative_rotation(d0.neck, driver.neck))
    else:
        expr = gains * driver.expr
        jaw = cfg.gain_jaw * driver.jaw
        eyes, rotation, neck = driver.eyes, driver.rotation, driver.neck
    if cfg.clamp_blendshapes and clamp is not None:
        expr = torch.where(clamp, expr.clamp_min(0.0), expr)
    if not cfg.gaze:
        eyes = a.eyes
    if not cfg.head_pose:
        rotation, neck = a.rotation, a.neck
    return HeadParams(a.shape.clone(), expr, rotation, neck, jaw, eyes, a.translation.clone())


_FIELDS = ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")


class ExpressionTransfer:
    """Stateful `transfer` for a stream: holds the driver's neutral (calibrated or estimated).

    ``expr_names``: the head model's expression names (``HeadModel.expr_names``);
    ``avatar_neutral``: the avatar's neutral parameters (`AnimatedAvatar.neutral`), batch 1."""

    def __init__(self, expr_names: Sequence[str], avatar_neutral: HeadParams, cfg: TransferConfig = TransferConfig()) -> None:
        self.expr_names = tuple(expr_names)
        self.avatar_neutral = avatar_neutral
        self.cfg = cfg
        self.gains = expression_gains(self.expr_names, cfg)
        self.clamp = clamp_mask(self.expr_names)
        self.reset_neutral()

    def set_config(self, cfg: TransferConfig) -> None:
        """Change modes and gains mid-stream; the driver's neutral is kept."""
        self.cfg = cfg
        self.gains = expression_gains(self.expr_names, cfg)

    def reset_neutral(self) -> None:
        """Forget the driver's neutral: it is estimated again from the next frames."""
        self._neutral: HeadParams | None = None
        self._calibrated = False
        self._samples: list[HeadParams] = []
        self._t0: float | None = None

    def calibrate(self, params: HeadParams) -> None:
        """Take frame 0 of ``params`` as the driver's neutral face and pose."""
        self._neutral = params.frame(0)
        self._calibrated = True
        self._samples = []

    @property
    def calibrated(self) -> bool:
        return self._calibrated

    @property
    def driver_neutral(self) -> HeadParams | None:
        """The driver's neutral in use (calibrated, or the estimate so far)."""
        return self._neutral

    @property
    def estimating(self) -> bool:
        """True while the neutral is still being estimated from the first seconds."""
        return not self._calibrated and (self._t0 is None or bool(self._samples))

    def observe(self, t: float, params: HeadParams) -> None:
        """Add frame 0 of a driver frame with a face, taken at ``t`` seconds, to the estimate of its
        neutral (while uncalibrated and within the first ``neutral_seconds``)."""
        if self._calibrated:
            return
        if self._t0 is None:
            self._t0 = t
        if t - self._t0 > self.cfg.neutral_seconds:
            self._samples = []             # the estimate is final
            return
        self._samples.append(params.frame(0))
        self._neutral = median_params(self._samples)

    def __call__(self, t: float, params: HeadParams) -> HeadParams:
        """`observe` the driver's frame, then transfer it."""
        self.observe(t, params)
        return transfer(params, self.avatar_neutral, self.cfg, self.gains, self._neutral, self.clamp)


def median_params(samples: Sequence[HeadParams]) -> HeadParams:
    """Per-channel median of batch-1 `HeadParams` (rotations component-wise, fine for the small
    spread of a resting head): batch 1."""
    return HeadParams(*(torch.as_tensor(np.median(np.stack([getattr(s, k)[0].numpy() for s in samples]), 0))[None]
                        .to(getattr(samples[0], k).dtype) for k in _FIELDS))
