"""Fit OpenHead's neutral face: a symmetrised mean of FaceMesh landmarks over neutral faces.

    python -m engine.headmodel.fit_face --data ../shared/data --out engine/headmodel/data/face_neutral.npy

Reads the portraits and every 10th video frame of ``--data``, keeps faces that are near
frontal with the mouth closed and the eyes open, aligns them by generalised Procrustes
(similarity), averages, makes the mean left/right symmetric and scales it to metres
(outer eye-corner distance 90.5 mm, the adult mean). The result, 468 x 3 float32 in
FLAME axes (x to the subject's left, y up, z out of the face), is committed; the shared
data it is fitted on never is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

N_FACE = 468
EYE_OUTER_R, EYE_OUTER_L = 33, 263     # FaceMesh outer eye corners (subject's right, left)
LIP_UPPER_IN, LIP_LOWER_IN = 13, 14
LID_UPPER_R, LID_LOWER_R = 159, 145
NOSE_TIP, CHIN, FOREHEAD = 1, 152, 10
EXOCANTHION_M = 0.0905


def similarity_align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` [N, 3] moved onto ``dst`` [N, 3] by the best rotation, scale and translation (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1, 1, d])
    R = u @ D @ vt
    scale = (s * np.diag(D)).sum() / (a ** 2).sum()
    return (scale * (R @ a.T)).T + md


def is_neutral(p: np.ndarray) -> bool:
    """Mouth closed, eyes open, near frontal (nose tip halfway between the eye corners)."""
    iod = np.linalg.norm(p[EYE_OUTER_R, :2] - p[EYE_OUTER_L, :2])
    lips = np.linalg.norm(p[LIP_UPPER_IN] - p[LIP_LOWER_IN]) / iod
    eye = np.linalg.norm(p[LID_UPPER_R] - p[LID_LOWER_R]) / iod
    t = (p[NOSE_TIP, 0] - p[EYE_OUTER_R, 0]) / (p[EYE_OUTER_L, 0] - p[EYE_OUTER_R, 0])
    return lips < 0.03 and eye > 0.08 and abs(t - 0.5) < 0.08


def collect(data: Path) -> list[np.ndarray]:
    import cv2
    import imageio.v3 as iio

    from engine.track.landmarks import FaceMeshDetector

    det = FaceMeshDetector(static_image=True, max_faces=1)
    faces = []
    for f in sorted((data / "portraits").glob("*")):
        img = cv2.imread(str(f))
        found = det.detect(img[:, :, ::-1]) if img is not None else []
        if found and is_neutral(found[0]):
            faces.append(found[0][:N_FACE])
    for f in sorted((data / "videos").glob("*.mp4")):
        kept = 0
        for i, frame in enumerate(iio.imiter(f)):
            if i % 10 or kept >= 12:
                continue
            found = det.detect(frame)
            if found and is_neutral(found[0]):
                faces.append(found[0][:N_FACE])
                kept += 1
    det.close()
    return faces


def mirror_permutation(p: np.ndarray) -> np.ndarray:
    """perm with p[perm[i]] the left/right mirror partner of point i (p symmetric about x = 0)."""
    mirrored = p * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(mirrored[:, None] - p[None], axis=2)
    _, perm = linear_sum_assignment(cost)
    return perm


def canonical_frame(p: np.ndarray) -> np.ndarray:
    """FaceMesh pixels (x right, y down, z away) → FLAME axes, eye line along x, midline at x = 0."""
    q = p * np.array([1.0, -1.0, -1.0])
    x = q[EYE_OUTER_L] - q[EYE_OUTER_R]
    x /= np.linalg.norm(x)
    up = q[FOREHEAD] - q[CHIN]
    z = np.cross(x, up)
    z /= np.linalg.norm(z)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    q = (q - q.mean(0)) @ R.T
    return q * (EXOCANTHION_M / np.linalg.norm(q[EYE_OUTER_L] - q[EYE_OUTER_R]))


def fit(faces: list[np.ndarray], iters: int = 5) -> np.ndarray:
    ref = faces[0]
    for _ in range(iters):
        aligned = np.stack([similarity_align(f, ref) for f in faces])
        ref = aligned.mean(0)
    mean = canonical_frame(ref)
    mean[:, 0] -= np.median(mean[:, 0])
    perm = mirror_permutation(mean)
    sym = 0.5 * (mean + mean[perm] * np.array([-1.0, 1.0, 1.0]))
    sym[:, 1:] -= sym[:, 1:].mean(0)
    return sym.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "face_neutral.npy")
    args = ap.parse_args()
    faces = collect(args.data)
    if len(faces) < 3:
        raise SystemExit(f"only {len(faces)} neutral faces found under {args.data}; need at least 3")
    face = fit(faces)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, face)
    print(f"{len(faces)} neutral faces -> {args.out} ({face.shape[0]} points, "
          f"width {np.ptp(face[:, 0]) * 1000:.0f} mm, height {np.ptp(face[:, 1]) * 1000:.0f} mm, "
          f"depth {np.ptp(face[:, 2]) * 1000:.0f} mm)")


if __name__ == "__main__":
    main()
