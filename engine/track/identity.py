"""Face identity embeddings, to tell whether portraits show one person.

Uses dlib's ResNet face-recognition model and 5-point aligner, which the
`face-recognition-models` wheel ships (no download). Two faces whose 128-d descriptors are
farther apart than SAME_PERSON_DISTANCE (dlib's documented threshold, 99.38 % on LFW) are
likely different people.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

SAME_PERSON_DISTANCE = 0.6


def _models_dir() -> Path:
    # The package's __init__ needs pkg_resources (setuptools) only to find this folder.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face-recognition-models package is not installed (pip install face-recognition-models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    d = _models_dir()
    return (dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat")))


def face_descriptor(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """128-d identity descriptor of the face whose FaceMesh landmarks [478, 2+] are given, in a
    uint8 [H, W, 3] RGB image."""
    import dlib

    aligner, net = _dlib_models()
    x0, y0 = np.nanmin(landmarks[:, :2], 0)
    x1, y1 = np.nanmax(landmarks[:, :2], 0)
    shape = aligner(np.ascontiguousarray(rgb), dlib.rectangle(int(x0), int(y0), int(x1), int(y1)))
    return np.asarray(net.compute_face_descriptor(np.ascontiguousarray(rgb), shape))


def different_people(descriptors: list[np.ndarray]) -> list[tuple[int, int, float]]:
    """Pairs (i, j, distance) of descriptors farther apart than SAME_PERSON_DISTANCE."""
    out = []
    for i in range(len(descriptors)):
        for j in range(i + 1, len(descriptors)):
            d = float(np.linalg.norm(descriptors[i] - descriptors[j]))
            if d > SAME_PERSON_DISTANCE:
                out.append((i, j, d))
    return out
