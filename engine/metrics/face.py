"""Face metrics of the feed-forward table (paper §3–4): identity similarity (CSIM), expression
and pose distance (AED, APD) and keypoint distance (AKD) between two images of a face.

Our stand-ins, not the paper's networks, so the numbers are not comparable with its table:

- CSIM = cosine similarity of the 128-d dlib ResNet face descriptors (`engine.track.identity`;
  the paper uses ArcFace). dlib's descriptors are not centred, so different people still score
  high: astronaut vs. Obama 0.82, vs. Rose Leslie 0.88; two photos of Obama 0.96; a photo and
  itself 1.
- AED = mean absolute difference of expression codes ``concat(expr [E], jaw [3])``: OpenHead's
  E = 120 blendshape weights (42 ARKit, 78 ``local_*`` modes) and the jaw axis-angle in radians.
- APD = mean absolute difference of poses: the head's axis-angle [3] in radians, the rotation
  R(rotation) R(neck) (neck is a child of the root joint). Translation is left out, as EMOCA's
  pose holds no camera: one image fixes it only up to the focal/depth ambiguity, and AKD
  measures where the face is.
  Both codes come from our landmark tracker's fit of each image alone (`expression_pose`);
  GAGAvatar-style AED/APD use EMOCA's FLAME coefficients, a different space and scale.
- AKD = mean distance in pixels between 68 FaceMesh landmarks (`LM68`, one FaceMesh point per
  dlib/iBUG 68-point landmark, in that order; the contour follows FaceMesh's face oval, so it is
  68-like, not dlib's jawline) of the largest face in each image; the images must have the same
  size (the evaluation resolution).

Where tracking or appearance helps shows in finer readings of the same landmarks:
`region_akd` (AKD of the eyes with the iris centres, the lips, the jaw line) and
`face_signals` (the horizontal iris offset, the mouth's and the eyes' opening, each in units
of the eye's or the mouth's width), which `agreement` compares over the frames of a clip:
correlations of iris offsets and mouth openings between frame and render, and the mean
eye-opening difference.

Every function returns None when either image shows no face (or one under MIN_FACE_PX wide);
`mean_of` averages what is left and says how many values it used. Each image is read once by
`FaceReader.read` into a `Face`; the two-image functions are shorthands for that.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numpy as np

from engine.headmodel.base import HeadModel
from engine.track.tracker import MIN_FACE_PX

# dlib's 68 points (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner
# lips 60-67) as FaceMesh ids.
LM68 = (127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
        70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
        168, 197, 5, 4, 75, 97, 2, 326, 305,
        33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
        61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
        78, 82, 13, 312, 308, 317, 14, 87)


@dataclass(frozen=True)
class Face:
    """What the metrics need from one image's largest face."""

    landmarks: np.ndarray         # [478, 2] FaceMesh points, pixels
    descriptor: np.ndarray        # [128] dlib ResNet identity descriptor
    expression: np.ndarray | None  # [E + 3] concat(expr, jaw); None when read without a head model
    pose: np.ndarray | None       # [3] head axis-angle R(rotation) R(neck), radians


class FaceReader:
    """Reads faces from uint8 [H, W, 3] RGB images: FaceMesh landmarks (still-image detector,
    largest face), the dlib descriptor and, given a head model, our tracker's fit of the image
    alone (`engine.track.fit.fit_landmarks` with its default `FitConfig`). Holds a mediapipe
    graph: not thread-safe; `close()` it or use it as a context manager."""

    def __init__(self, model: HeadModel | None = None) -> None:
        from engine.track.landmarks import FaceMeshDetector

        self.model = model
        self._detector = FaceMeshDetector(static_image=True)
        self._landmark_model = None

    def read(self, rgb: np.ndarray) -> Face | None:
        """The largest face of ``rgb``, or None if there is none at least MIN_FACE_PX wide."""
        from engine.track.identity import face_descriptor

        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"face metrics take uint8 RGB images [H, W, 3]; got {rgb.dtype} {list(rgb.shape)}")
        faces = self._detector.detect(rgb)
        if not faces or np.ptp(faces[0][:, 0]) < MIN_FACE_PX:
            return None
        points = faces[0]
        expression = pose = None
        if self.model is not None:
            expression, pose = self._fit(points, rgb.shape[:2])
        return Face(points[:, :2], face_descriptor(rgb, points), expression, pose)

    def _fit(self, points: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        from scipy.spatial.transform import Rotation

        from engine.track.fit import Observations, fit_landmarks
        from engine.track.lmk_model import LandmarkModel

        if self._landmark_model is None:
            self._landmark_model = LandmarkModel(self.model, detected=True)
        ids = self.model.lmk_ids.numpy()
        obs = Observations(points[None, ids, :2], points[None, ids, 2], np.array([True]), np.array([size]))
        p = fit_landmarks(self._landmark_model, obs).params
        expression = np.concatenate([p.expr[0].numpy(), p.jaw[0].numpy()]).astype(np.float64)
        head = Rotation.from_rotvec(p.rotation[0].numpy()) * Rotation.from_rotvec(p.neck[0].numpy())
        return expression, head.as_rotvec()

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> "FaceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@lru_cache(maxsize=4)
def _reader(model: HeadModel | None) -> FaceReader:
    # The two-image shorthands share one reader (building a mediapipe graph takes ~0.5 s).
    return FaceReader(model)


def face_csim(a: Face | None, b: Face | None) -> float | None:
    """Cosine similarity of the two faces' dlib descriptors."""
    if a is None or b is None:
        return None
    da, db = a.descriptor, b.descriptor
    return float(da @ db / (np.linalg.norm(da) * np.linalg.norm(db)))


def face_akd(a: Face | None, b: Face | None) -> float | None:
    """Mean distance in pixels between the faces' `LM68` landmarks."""
    if a is None or b is None:
        return None
    ids = list(LM68)
    return float(np.linalg.norm(a.landmarks[ids] - b.landmarks[ids], axis=1).mean())


AKD_REGIONS = {"eyes": LM68[36:48] + (468, 473), "mouth": LM68[48:68], "jaw": LM68[0:17]}
"""FaceMesh ids of each `region_akd` region: the lid margins' 12 points and the iris centres;
the outer and inner lips; the 17 contour points."""


def region_akd(a: Face | None, b: Face | None, region: str) -> float | None:
    """`face_akd` over one region of `AKD_REGIONS`."""
    if a is None or b is None:
        return None
    ids = list(AKD_REGIONS[region])
    return float(np.linalg.norm(a.landmarks[ids] - b.landmarks[ids], axis=1).mean())


LID_PAIRS = {"right": ((159, 145), (158, 153), (160, 144)), "left": ((386, 374), (385, 380), (387, 373))}
"""FaceMesh's mid lid-margin points of each eye as (upper, lower) pairs: the lid gap's three columns."""
# (iris centre, inner corner, outer corner, lid pairs) of each eye; the mouth's inner corners and
# its mid inner lips.
_EYES = ((468, 133, 33, LID_PAIRS["right"]), (473, 362, 263, LID_PAIRS["left"]))
_MOUTH = ((78, 308), (13, 14))


def face_signals(face: Face | None) -> np.ndarray | None:
    """[3] (iris offset, mouth opening, eye opening) of a face, or None: the iris centres'
    offset from the eyes' mid-corners along the corner line (image +x), the mid inner-lip gap,
    and the mean lid gap, each divided by the eye's (the mouth's) corner-to-corner width and
    averaged over the two eyes."""
    if face is None:
        return None
    p = face.landmarks
    gaze, opening = [], []
    for iris, inner, outer, lids in _EYES:
        axis = p[outer] - p[inner]
        width = float(np.linalg.norm(axis))
        axis = axis / width * np.sign(axis[0])                      # both eyes measured towards image +x
        gaze.append(float((p[iris] - (p[inner] + p[outer]) / 2) @ axis) / width)
        opening.append(float(np.mean([np.linalg.norm(p[u] - p[d]) for u, d in lids])) / width)
    (c0, c1), (u, d) = _MOUTH
    mouth = float(np.linalg.norm(p[u] - p[d]) / np.linalg.norm(p[c1] - p[c0]))
    return np.array([np.mean(gaze), mouth, np.mean(opening)])


def agreement(real: Iterable[np.ndarray | None], render: Iterable[np.ndarray | None]) -> dict[str, float | None]:
    """How a clip's renders follow its frames, from paired `face_signals`: ``gaze_r`` and
    ``mouth_r``, the correlations of iris offsets and of mouth openings over the frames where
    both show a face; ``gaze_sd`` and ``mouth_sd``, the spread of the frames' signals (a
    correlation says little where the person hardly looks aside or opens the mouth);
    ``eye_diff``, the mean |eye-opening difference| in eye widths; ``n``, the frames used. A
    correlation is None with fewer than 3 frames or a constant signal."""
    pairs = [(a, b) for a, b in zip(real, render) if a is not None and b is not None]
    out: dict[str, float | None] = {"gaze_r": None, "mouth_r": None, "gaze_sd": None, "mouth_sd": None,
                                    "eye_diff": None, "n": float(len(pairs))}
    if not pairs:
        return out
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    out["eye_diff"] = float(np.abs(a[:, 2] - b[:, 2]).mean())
    out["gaze_sd"], out["mouth_sd"] = float(a[:, 0].std()), float(a[:, 1].std())
    for key, col in (("gaze_r", 0), ("mouth_r", 1)):
        if len(pairs) >= 3 and a[:, col].std() > 1e-9 and b[:, col].std() > 1e-9:
            out[key] = float(np.corrcoef(a[:, col], b[:, col])[0, 1])
    return out


def aed(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Mean absolute difference of two expression codes [E + 3] (``Face.expression``)."""
    return _mean_abs(a, b)


def apd(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Mean absolute difference of two head poses [3] (``Face.pose``), radians."""
    return _mean_abs(a, b)


def _mean_abs(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"codes of different shapes: {list(a.shape)} and {list(b.shape)}")
    return float(np.abs(a - b).mean())


def csim(a_rgb: np.ndarray, b_rgb: np.ndarray) -> float | None:
    """CSIM of the largest faces of two uint8 RGB images (dlib ResNet, not ArcFace: not
    comparable with the paper's numbers); None if either has no face.

        >>> from skimage import data
        >>> round(csim(data.astronaut(), data.astronaut()), 3)
        1.0
    """
    r = _reader(None)
    return face_csim(r.read(a_rgb), r.read(b_rgb))


def akd(a_rgb: np.ndarray, b_rgb: np.ndarray) -> float | None:
    """AKD in pixels between the largest faces of two uint8 RGB images of the same size; None if
    either has no face."""
    if a_rgb.shape != b_rgb.shape:
        raise ValueError(f"AKD compares images of one size; got {list(a_rgb.shape)} and {list(b_rgb.shape)}")
    r = _reader(None)
    return face_akd(r.read(a_rgb), r.read(b_rgb))


def expression_pose(rgb: np.ndarray, model: HeadModel) -> tuple[np.ndarray, np.ndarray] | None:
    """(expression code [E + 3], head pose [3]) of the largest face in ``rgb`` from our tracker's
    fit of that image alone; None if there is no face."""
    face = _reader(model).read(rgb)
    return None if face is None else (face.expression, face.pose)


def mean_of(values: Iterable[float | None]) -> tuple[float | None, int]:
    """(mean of the values that are not None, how many there were); (None, 0) if none are."""
    kept = [v for v in values if v is not None]
    return (float(np.mean(kept)) if kept else None), len(kept)
