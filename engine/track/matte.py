"""Person mattes from mediapipe's legacy selfie segmentation (the model ships in the wheel)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MatteOptions:
    """Post-processing of the raw person probability.

    ``threshold``: if set, the matte becomes 1 where probability >= threshold and 0 elsewhere
    (applied first). ``feather``: if > 0, the sigma in pixels of a Gaussian blur that softens
    the edge afterwards (with a threshold this gives a clean, smooth-edged matte).
    """

    threshold: float | None = None
    feather: float = 0.0

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.feather < 0:
            raise ValueError(f"feather must be >= 0, got {self.feather}")


class Matter:
    """Wraps one mediapipe SelfieSegmentation graph; not thread-safe (one per thread).

    Uses ``model_selection=0``, the "general" model (256x256 input): portraits and our videos
    are square-ish head-and-shoulders shots, and on ``skimage.data.astronaut()`` it gives a
    clean silhouette where the "landscape" model (1, 144x256, ~1.6x faster) leaks onto the flag
    and the helmet's surroundings. It runs about 4 ms per 512x512 frame on one core.
    The model has no temporal state, so the same instance serves images and video frames.
    """

    def __init__(self, options: MatteOptions = MatteOptions()) -> None:
        import mediapipe as mp  # imported here: it is slow to import and only tracking needs it

        self.options = options
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability of a uint8 [H, W, 3] RGB image: float32 [H, W] in [0, 1]."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {rgb.dtype} {list(rgb.shape)}")
        # mediapipe returns the mask already resized to the input; the clip guards the
        # interpolation's slight overshoot so [0, 1] holds exactly.
        prob = np.clip(self._seg.process(np.ascontiguousarray(rgb)).segmentation_mask, 0.0, 1.0)
        prob = prob.astype(np.float32, copy=False)
        if self.options.threshold is not None:
            prob = (prob >= self.options.threshold).astype(np.float32)
        if self.options.feather > 0:
            prob = cv2.GaussianBlur(prob, (0, 0), self.options.feather)
        return prob

    def close(self) -> None:
        self._seg.close()
