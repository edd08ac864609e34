"""Face identity: one person's photos are close, different people far apart."""
import numpy as np
import pytest
from skimage import data

from engine.track.identity import SAME_PERSON_DISTANCE, different_people, face_descriptor
from engine.track.landmarks import FaceMeshDetector


def descriptor(rgb):
    det = FaceMeshDetector()
    lm = det.detect(rgb)[0]
    det.close()
    return face_descriptor(rgb, lm)


def test_a_mirrored_and_rescaled_photo_is_the_same_person():
    import cv2

    a = data.astronaut()
    b = cv2.resize(a[:, ::-1], (400, 400))
    assert np.linalg.norm(descriptor(a) - descriptor(b)) < SAME_PERSON_DISTANCE


def test_shared_portraits_separate_people(shared_data):
    import cv2

    read = lambda n: cv2.imread(str(shared_data / "portraits" / n))[:, :, ::-1]  # noqa: E731
    d = [descriptor(read(n)) for n in ("obama_1.jpg", "obama_2.jpg", "rose_leslie_1.jpg")]
    pairs = {(i, j) for i, j, _ in different_people(d)}
    assert pairs == {(0, 2), (1, 2)}
