"""Training data of the refiner: a tracked video, downscaled, split, with a matte per frame
(the portrait matte for avatars with an outer layer, else the head-and-neck matte)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.camera import shrunk_size, tracker_camera  # noqa: F401 - re-exported: the refiner's callers import them here
from engine.headmodel.base import HeadModel
from engine.io.media import VideoReader
from engine.metrics.matte import matte_of
from engine.types import Camera, HeadParams

LONG_VIDEO = 1400         # frames from which the paper's fixed 350-frame test split is used
LONG_HOLDOUT = 350
SHORT_HOLDOUT = 0.25      # held-out fraction of shorter videos
MIN_TRAIN = 30


def split(n: int) -> int:
    """Index of the first held-out frame: the last 350 frames of a long video (the paper's
    SplattingAvatar protocol), the last quarter of a shorter one."""
    held = LONG_HOLDOUT if n >= LONG_VIDEO else round(SHORT_HOLDOUT * n)
    return n - held


@dataclass
class VideoData:
    """Frames [N, h, w, 3] uint8 and training mattes [N, h, w] float32 at the working resolution;
    ``person``: the person mattes [N, h, w] uint8 the training mattes were cut from (None: the
    mattes are fixed, as in synthetic tests); ``matte``: which matte they are
    (`engine.metrics.matte.matte_of`: "head" or "portrait"); ``landmarks``: the landmark
    tracker's detected FaceMesh points [N, 478, 2] as fractions of the frame's width and height
    (a resolution's pixels are these times its size; nan where no face was found), whose mouth and
    eye outlines' shapes the photometric alignment holds the mesh's to (None: not known, as in
    synthetic tests)."""

    name: str
    images: np.ndarray
    mattes: np.ndarray
    params: HeadParams
    cameras: list[Camera]
    found: np.ndarray
    first_test: int
    person: np.ndarray | None = None
    matte: str = "head"
    landmarks: np.ndarray | None = None

    def with_params(self, params: HeadParams, model: HeadModel) -> "VideoData":
        """The same frames tracked by ``params``; the mattes follow the new tracking.
        ValueError when ``params`` does not track every frame of the video."""
        if len(params.expr) != len(self.found):
            raise ValueError(f"the tracking has {len(params.expr)} frames; the video has {len(self.found)}")
        if self.person is None:
            return dataclasses.replace(self, params=params)
        h, w = self.images.shape[1:3]
        mattes = np.stack([matte_of(self.matte, model, params.frame(i), self.person[i],
                                    float(self.cameras[i].K[0, 0]), (h, w)) for i in range(len(self.found))])
        return dataclasses.replace(self, params=params, mattes=mattes)

    def resized(self, longer_side: int, model: HeadModel) -> "VideoData":
        """The frames with their longer side at most ``longer_side`` (area-averaged), the mattes
        recut at that size; itself when it is no larger."""
        size = shrunk_size(self.images.shape[2], self.images.shape[1], longer_side)
        if size is None:
            return self

        def shrink(stack: np.ndarray) -> np.ndarray:
            return np.stack([cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in stack])

        small = dataclasses.replace(self, images=shrink(self.images), cameras=[c.resized(*size) for c in self.cameras])
        if self.person is None:
            return dataclasses.replace(small, mattes=shrink(self.mattes))
        return dataclasses.replace(small, person=shrink(self.person)).with_params(self.params, model)

    @property
    def train(self) -> np.ndarray:
        """Training frame indices: before the held-out split and with a tracked face."""
        idx = np.arange(self.first_test)
        return idx[self.found[: self.first_test]]

    @property
    def test(self) -> np.ndarray:
        idx = np.arange(self.first_test, len(self.found))
        return idx[self.found[self.first_test :]]

    def reference_frame(self) -> int:
        """The training frame with the least jaw opening; when the jaw hardly moves (max < 0.02
        rad, e.g. a silent or occluded mouth) the most frontal one instead."""
        tr = self.train
        jaw = self.params.jaw[tr].norm(dim=-1)
        if float(jaw.max()) < 0.02:
            turn = (self.params.rotation[tr] + self.params.neck[tr]).norm(dim=-1)
            return int(tr[int(turn.argmin())])
        return int(tr[int(jaw.argmin())])


def load_video_data(path: Path, tracked, model: HeadModel, longer_side: int, matte: str = "head") -> VideoData:
    """Read ``path`` again at the working resolution, with the ``matte`` matte per frame."""
    n = len(tracked.found)
    first_test = split(n)
    if first_test - int((~tracked.found[:first_test]).sum()) < MIN_TRAIN:
        raise ValueError(f"{path}: too short to refine: {n} frames leave fewer than {MIN_TRAIN} tracked training "
                         f"frames before the held-out last {n - first_test}")
    cams = [tracker_camera(tracked.K[i], tuple(int(x) for x in tracked.image_size[i]), longer_side) for i in range(n)]
    h, w = cams[0].height, cams[0].width
    images = np.zeros((n, h, w, 3), np.uint8)
    mattes = np.zeros((n, h, w), np.float32)
    person = np.zeros((n, h, w), np.uint8)
    with VideoReader(path) as video:
        for i, rgb in enumerate(video):
            if i >= n:
                break
            images[i] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if rgb.shape[:2] != (h, w) else rgb
            person[i] = cv2.resize(tracked.mattes[i], (w, h), interpolation=cv2.INTER_AREA)
            mattes[i] = matte_of(matte, model, tracked.params.frame(i), person[i], float(cams[i].K[0, 0]), (h, w))
    landmarks = tracked.landmarks[..., :2] / tracked.image_size[:, None, ::-1]    # (x, y) over (width, height)
    return VideoData(Path(path).stem, images, mattes, tracked.params, cams, tracked.found, first_test, person, matte,
                     landmarks.astype(np.float32))
