"""Face landmarks from mediapipe's legacy FaceMesh (478 points with iris, models ship in the wheel).

FaceMesh point i is OpenHead vertex i, so no correspondence needs fitting.

For still images FaceMesh's own detector is the short-range (selfie) model: it misses
small faces in large photos and, in our tests, both faces of a two-person picture. Still
images are therefore searched with the full-range face detector first, and FaceMesh runs on
a square crop around each detected face (largest first); the landmarks are mapped back.
Video frames use FaceMesh's tracking mode on the whole frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

N_LANDMARKS = 478  # 468 mesh points + 2 x 5 iris points
CROP_SCALE = 2.2   # crop side / detected face box side


@dataclass
class FaceMeshDetector:
    """Wraps mediapipe's FaceMesh (and, for still images, FaceDetection); not thread-safe.

    ``static_image`` detects faces in every image (portraits); otherwise FaceMesh tracks.
    """

    static_image: bool = True
    max_faces: int = 4

    def __post_init__(self) -> None:
        # mediapipe's C++ side logs an INFO and warnings per graph to stderr; keep them to errors.
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import mediapipe as mp  # imported here: it is slow to import and only tracking needs it

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=self.static_image, max_num_faces=1 if self.static_image else self.max_faces,
            refine_landmarks=True, min_detection_confidence=0.5)
        self._detector = (mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
                          if self.static_image else None)

    def _mesh_faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        return [np.array([[p.x, p.y, p.z] for p in lm.landmark], dtype=np.float64) * np.array([w, h, w])
                for lm in result.multi_face_landmarks or []]

    def face_boxes(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Full-range detections as (x0, y0, x1, y1) pixels, largest first (still images only)."""
        h, w = rgb.shape[:2]
        result = self._detector.process(np.ascontiguousarray(rgb))
        boxes = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))[: self.max_faces]

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face in a uint8 [H, W, 3] RGB image, largest face first.

        Each face is [478, 3]: x, y in pixels, z in pixels (relative depth, same scale as x,
        smaller is nearer the camera).
        """
        if not self.static_image:
            faces = self._mesh_faces(rgb)
        else:
            faces = []
            for box in self.face_boxes(rgb):
                crop, (x0, y0), s = _square_crop(rgb, box)
                found = self._mesh_faces(crop)
                if found:
                    faces.append(found[0] * np.array([1 / s, 1 / s, 1 / s]) + np.array([x0, y0, 0.0]))
            if not faces:   # the full-range detector can miss a face that fills the frame
                faces = self._mesh_faces(rgb)
        faces.sort(key=lambda p: -np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
        return faces

    def close(self) -> None:
        self._mesh.close()
        if self._detector is not None:
            self._detector.close()


def _square_crop(rgb: np.ndarray, box) -> tuple[np.ndarray, tuple[float, float], float]:
    """A square crop around ``box`` (padded by edge replication where it leaves the image),
    resized so its side is at most 512 px; returns (crop, crop origin in the image, scale)."""
    import cv2

    x0, y0, x1, y1 = box
    side = CROP_SCALE * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = int(round(side))
    h, w = rgb.shape[:2]
    pad = max(0, -left, -top, left + size - w, top + size - h)
    src = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else rgb
    crop = src[top + pad : top + pad + size, left + pad : left + pad + size]
    scale = min(1.0, 512 / size)
    if scale < 1.0:
        crop = cv2.resize(crop, (round(size * scale), round(size * scale)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop), (float(left), float(top)), scale
