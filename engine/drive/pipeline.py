"""The driving pipeline: a driver's per-frame parameters -> the avatar's (expression transfer,
lost-face easing, One-Euro smoothing), shared by the live loop and `drive_video`."""
from __future__ import annotations

from typing import Sequence

from engine.drive.filters import HeadParamsFilter, LostFaceEase, OneEuroConfig
from engine.drive.transfer import ExpressionTransfer, TransferConfig
from engine.types import HeadParams


class DrivePipeline:
    """Driver `HeadParams` (+ found flag) at time t -> the avatar's `HeadParams`.

    transfer (`ExpressionTransfer`) -> hold and ease to the avatar's neutral while the face is
    lost (`LostFaceEase`, over ``ease_s`` seconds) -> One-Euro smoothing of ``smoothing``
    strength in [0, 1] (`OneEuroConfig.from_strength`; 0 = off)."""

    def __init__(self, expr_names: Sequence[str], avatar_neutral: HeadParams, transfer: TransferConfig = TransferConfig(),
                 smoothing: float = 0.5, ease_s: float = 0.5) -> None:
        avatar_neutral = avatar_neutral.cpu()   # transfer and smoothing run on the host, beside the tracker
        self.transfer = ExpressionTransfer(expr_names, avatar_neutral, transfer)
        self.ease = LostFaceEase(avatar_neutral, ease_s=ease_s)
        self.filter = HeadParamsFilter(OneEuroConfig.from_strength(smoothing))

    def set_smoothing(self, strength: float) -> None:
        """Change the smoothing strength (the filters restart from the next frame)."""
        self.filter = HeadParamsFilter(OneEuroConfig.from_strength(strength))

    def calibrate(self, driver: HeadParams) -> None:
        """Take the driver's current parameters as its neutral (relative mode)."""
        self.transfer.calibrate(driver)

    def __call__(self, t: float, driver: HeadParams | None, found: bool) -> HeadParams:
        """The avatar's parameters [1, ...] for the driver's frame at ``t`` seconds (``driver`` may be
        None or stale when not ``found``). A driver frame that is not finite counts as a frame
        without a face: it never reaches the smoothing filters, whose state it would poison."""
        out = self.transfer(t, driver) if found and driver is not None and driver.is_finite() else None
        if out is not None and not out.is_finite():
            out = None
        return self.filter(t, self.ease.update(t, out, out is not None))
