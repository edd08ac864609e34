"""Face landmarks from mediapipe's legacy FaceMesh (478 points with iris, models ship in the wheel).

FaceMesh point i is OpenHead vertex i, so no correspondence needs fitting.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_LANDMARKS = 478  # 468 mesh points + 2 x 5 iris points


@dataclass
class FaceMeshDetector:
    """Wraps one mediapipe FaceMesh graph; not thread-safe (one per thread).

    ``static_image`` runs the detector on every image (portraits); video mode tracks.
    """

    static_image: bool = True
    max_faces: int = 4

    def __post_init__(self) -> None:
        import mediapipe as mp  # imported here: it is slow to import and only tracking needs it

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=self.static_image, max_num_faces=self.max_faces, refine_landmarks=True,
            min_detection_confidence=0.5)

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face in a uint8 [H, W, 3] RGB image, largest face first.

        Each face is [478, 3]: x, y in pixels, z in pixels (relative depth, same scale as x,
        smaller is nearer the camera).
        """
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for lm in result.multi_face_landmarks or []:
            pts = np.array([[p.x, p.y, p.z] for p in lm.landmark], dtype=np.float64)
            faces.append(pts * np.array([w, h, w]))
        faces.sort(key=lambda p: -np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
        return faces

    def close(self) -> None:
        self._mesh.close()
