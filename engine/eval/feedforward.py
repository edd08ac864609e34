"""Feed-forward evaluation on talking-head videos (paper §4.1, its Tab. 1 columns).

Self-reenactment (issue: avatar from portraits): build the avatar from K source frames of a
video's first half (K = 1: frame 0; K = 4: frames 0, ¼, ½, ¾ of the first half) and render up to
50 frames of its last third with their tracked parameters, at the video's resolution with the
longer side capped at MAX_SIDE. PSNR, SSIM and (given its weights) LPIPS inside the portrait
matte (`engine.metrics.matte.portrait_matte`: the person with hair, ears, neck and the top of the
shoulders), and PSNR/SSIM inside the head-and-neck evaluation matte as a second pair (the
region scored before); CSIM, AED, APD and AKD (`engine.metrics.face`) between the render on
black and the real frame.

Cross-reenactment: the avatar of video A's first K source frames driven by video B's tracked
parameters at B's target frames: B's absolute expression (expr, jaw, eyes) and pose (rotation,
neck, translation) on A's shape, seen by B's camera. CSIM against A's first source frame;
AED, APD and AKD against B's frame.

Face metrics skip frames where either image shows no face; ``n_face`` and ``n_csim`` count the
frames they average over. Either generator of `engine.generator.api.generate` can be evaluated.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from engine.generator.api import generate
from engine.generator.registry import PROJECTIVE, GeneratorChoice
from engine.headmodel.base import HeadModel
from engine.io.media import VideoReader
from engine.metrics import psnr, ssim
from engine.metrics.face import (AKD_REGIONS, Face, FaceReader, aed, agreement, apd, face_akd, face_csim, face_signals,
                                 mean_of, region_akd)
from engine.metrics.image import region_psnr
from engine.metrics.matte import REGIONS, eval_matte, mesh_silhouette, portrait_matte, region_matte
from engine.refine.data import tracker_camera
from engine.track.tracker import Tracked
from engine.types import Camera

MAX_SIDE = 512
DILATE_PX = 15

Lpips = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FFResult:
    """Self-reenactment means over ``n_targets`` rendered frames; ``lpips`` is None without LPIPS
    weights; the face metrics (None when off or no frame showed a face in both images) average
    over ``n_face`` frames."""

    video: str
    k: int
    psnr: float
    ssim: float
    n_targets: int
    lpips: float | None = None
    csim: float | None = None
    aed: float | None = None
    apd: float | None = None
    akd: float | None = None
    n_face: int = 0
    generator: str = "projective"
    psnr_head: float | None = None     # inside the head-and-neck matte (psnr, ssim: the portrait matte)
    ssim_head: float | None = None
    psnr_eyes: float | None = None     # over the eyes' and the mouth's region pixels (`region_matte`)
    psnr_mouth: float | None = None
    akd_eyes: float | None = None      # `region_akd` of the eyes, the mouth and the jaw line, pixels
    akd_mouth: float | None = None
    akd_jaw: float | None = None
    gaze_r: float | None = None        # `agreement` of frame and render over the targets
    mouth_r: float | None = None
    eye_diff: float | None = None
    gaze_sd: float | None = None       # the frames' spread of iris offsets and mouth openings
    mouth_sd: float | None = None


@dataclass
class CrossResult:
    """Cross-reenactment means over ``n_targets`` frames of ``driver``: CSIM (render vs. the
    source video's first frame) over ``n_csim`` frames, AED/APD/AKD (render vs. the driver's
    frame) over ``n_face``."""

    source: str
    driver: str
    k: int
    csim: float | None
    aed: float | None
    apd: float | None
    akd: float | None
    n_targets: int
    n_csim: int
    n_face: int
    generator: str = "projective"


@dataclass
class Clip:
    """A tracked video and the frames the evaluation reads (sources and targets)."""

    name: str
    tracked: Tracked
    frames: dict[int, np.ndarray]   # frame index -> uint8 [H, W, 3]

    @property
    def n(self) -> int:
        return len(self.tracked.found)

    def camera(self, t: int) -> Camera:
        """Frame ``t``'s tracker camera at the evaluation resolution."""
        return tracker_camera(self.tracked.K[t], tuple(int(x) for x in self.tracked.image_size[t]), MAX_SIDE)

    def image(self, t: int, cam: Camera) -> np.ndarray:
        """Frame ``t`` resized to ``cam``: uint8 [h, w, 3]."""
        return _fit(self.frames[t], cam)


class FaceMetrics:
    """A `FaceReader` with the readings of real frames already seen, so each real frame is read
    (detected and fitted, ~3 s on a busy CPU) once across K and cross pairs."""

    def __init__(self, model: HeadModel) -> None:
        self.reader = FaceReader(model)
        self._real: dict[tuple[str, int], Face | None] = {}

    def real(self, clip: Clip, t: int) -> Face | None:
        key = (clip.tracked.sources[0], t)
        if key not in self._real:
            self._real[key] = self.reader.read(clip.image(t, clip.camera(t)))
        return self._real[key]

    def close(self) -> None:
        self.reader.close()


def source_frames(n: int, k: int) -> list[int]:
    """Frame indices of the K sources: 0, then evenly through the first half."""
    return [round(i * (n / 2) / k) for i in range(k)]


def target_frames(n: int, count: int = 50) -> list[int]:
    """``count`` frames evenly through the last third."""
    return sorted(set(np.linspace(2 * n // 3, n - 1, count).round().astype(int).tolist()))


def _fit(img: np.ndarray, cam: Camera) -> np.ndarray:
    import cv2

    return img if img.shape[:2] == (cam.height, cam.width) else cv2.resize(img, (cam.width, cam.height),
                                                                          interpolation=cv2.INTER_AREA)


def load_clip(path: Path, model: HeadModel, ks: Sequence[int] = (1, 4), n_targets: int = 50) -> Clip:
    """Track ``path`` and keep the source frames of every K and the targets."""
    from engine.track.tracker import track_video

    tracked = track_video(path, model)
    n = len(tracked.found)
    wanted = {i for k in ks for i in source_frames(n, k)} | set(target_frames(n, n_targets))
    frames = {}
    with VideoReader(path) as video:
        for i, rgb in enumerate(video):
            if i in wanted:
                frames[i] = rgb
            if i >= max(wanted):
                break
    return Clip(Path(path).name, tracked, frames)


def build(clip: Clip, model: HeadModel, k: int, generator: GeneratorChoice = PROJECTIVE, outer: bool = True):
    """The avatar of ``clip``'s K source frames (`engine.generator.api.generate`; ``outer``: with its
    hair shell and bust, else the head page alone)."""
    tr = clip.tracked
    sources = [tr.source(i, clip.frames[i]) for i in source_frames(clip.n, k)]
    return generate(generator, model, sources, tr.params.shape[0], outer=outer)


def held_out_targets(clip: Clip, n_targets: int) -> list[int]:
    """The target frames with a tracked face."""
    wanted = target_frames(clip.n, n_targets)
    if not set(wanted) <= set(clip.frames):
        raise ValueError(f"{clip.name} was loaded for other target frames; load_clip it with n_targets={n_targets}")
    return [t for t in wanted if clip.tracked.found[t]]


def evaluate_clip(clip: Clip, model: HeadModel, ks: Sequence[int] = (1, 4), n_targets: int = 50, renderer=None,
                  generator: GeneratorChoice = PROJECTIVE, lpips: Lpips | None = None,
                  faces: FaceMetrics | None = None, outer: bool = True) -> list[FFResult]:
    """Self-reenactment of a loaded clip for each K; face metrics only with ``faces``."""
    from engine.render.select import select

    generator.check()
    renderer = renderer or select(model.device)
    tr = clip.tracked
    targets = held_out_targets(clip, n_targets)
    results = []
    for k in ks:
        animated = build(clip, model, k, generator, outer)
        ps, ss, hps, hss, lps, scores, pairs = [], [], [], [], [], [], []
        regions = {kind: [] for kind in REGIONS}
        for t in targets:
            cam = clip.camera(t)
            params = tr.params.frame(t)
            focal, size = float(cam.K[0, 0]), (cam.height, cam.width)
            person = _fit(tr.mattes[t], cam)
            head = torch.from_numpy(eval_matte(person, mesh_silhouette(model, params, focal, size), DILATE_PX))[..., None]
            m = torch.from_numpy(portrait_matte(model, params, person, focal, size))[..., None]
            image = torch.from_numpy(clip.image(t, cam)).float() / 255
            gt = image * m
            with torch.no_grad():
                on = cam.to(model.device)
                frame = renderer.render(animated.gaussians(params, camera=on), on)
            rgb = frame.rgb.cpu().clamp(0, 1)
            pred = rgb * m                                        # premultiplied = composited on black
            ps.append(float(psnr(pred, gt)))
            ss.append(float(ssim(pred, gt)))
            hps.append(float(psnr(rgb * head, image * head)))
            hss.append(float(ssim(rgb * head, image * head)))
            for kind, values in regions.items():
                r = torch.from_numpy(region_matte(kind, model, params, person, focal, size))[..., None]
                if r.sum() > 0:
                    values.append(region_psnr(rgb, image, r))
            if lpips is not None:
                with torch.no_grad():
                    lps.append(float(lpips(pred, gt)))
            if faces is not None:
                real, seen = faces.real(clip, t), faces.reader.read(frame.to_uint8((0.0, 0.0, 0.0)))
                scores.append(_face_scores(seen, real, real))
                pairs.append((real, seen))
        (c, n_face), (e, _), (q, _), (d, _) = _means(scores)
        akd = {region: mean_of(region_akd(seen, real, region) for real, seen in pairs)[0] for region in AKD_REGIONS}
        agree = agreement([face_signals(real) for real, _ in pairs], [face_signals(seen) for _, seen in pairs])
        results.append(FFResult(clip.name, k, float(np.mean(ps)), float(np.mean(ss)), len(ps),
                                mean_of(lps)[0], c, e, q, d, n_face, generator.kind, float(np.mean(hps)),
                                float(np.mean(hss)), mean_of(regions["eyes"])[0], mean_of(regions["mouth"])[0],
                                akd["eyes"], akd["mouth"], akd["jaw"], agree["gaze_r"], agree["mouth_r"],
                                agree["eye_diff"], agree["gaze_sd"], agree["mouth_sd"]))
    return results


def evaluate_video(path: Path, model: HeadModel, ks=(1, 4), n_targets: int = 50, renderer=None,
                   generator: GeneratorChoice = PROJECTIVE, lpips: Lpips | None = None,
                   face_metrics: bool = True) -> list[FFResult]:
    """Self-reenactment of one video for each K (see the module docstring)."""
    generator.check()
    clip = load_clip(path, model, ks, n_targets)
    faces = FaceMetrics(model) if face_metrics else None
    try:
        return evaluate_clip(clip, model, ks, n_targets, renderer, generator, lpips, faces)
    finally:
        if faces is not None:
            faces.close()


def cross_reenact(source: Clip, driver: Clip, model: HeadModel, faces: FaceMetrics, k: int = 1, n_targets: int = 50,
                  renderer=None, generator: GeneratorChoice = PROJECTIVE) -> CrossResult:
    """``source``'s avatar driven by ``driver``'s tracked parameters (see the module docstring)."""
    from engine.render.select import select

    generator.check()
    renderer = renderer or select(model.device)
    targets = held_out_targets(driver, n_targets)
    animated = build(source, model, k, generator)
    shape = source.tracked.params.shape[:1]
    identity = faces.real(source, source_frames(source.n, k)[0])
    scores = []
    for t in targets:
        cam = driver.camera(t)
        params = dataclasses.replace(driver.tracked.params.frame(t), shape=shape).to(model.device)
        with torch.no_grad():
            cam = cam.to(model.device)
            frame = renderer.render(animated.gaussians(params, camera=cam), cam)
        scores.append(_face_scores(faces.reader.read(frame.to_uint8((0.0, 0.0, 0.0))), faces.real(driver, t), identity))
    (c, n_csim), (e, n_face), (q, _), (d, _) = _means(scores)
    return CrossResult(source.name, driver.name, k, c, e, q, d, len(targets), n_csim, n_face, generator.kind)


def _face_scores(render: Face | None, real: Face | None, identity: Face | None) -> tuple[float | None, ...]:
    """(CSIM vs. ``identity``, AED, APD, AKD vs. ``real``) of a render's face."""
    code = lambda f, name: None if f is None else getattr(f, name)  # noqa: E731
    return (face_csim(render, identity), aed(code(render, "expression"), code(real, "expression")),
            apd(code(render, "pose"), code(real, "pose")), face_akd(render, real))


def _means(scores: list[tuple[float | None, ...]]) -> list[tuple[float | None, int]]:
    """`mean_of` of each column of `_face_scores` rows (CSIM, AED, APD, AKD)."""
    return [mean_of(column) for column in (zip(*scores) if scores else [()] * 4)]


COLUMNS = ("PSNR", "SSIM", "LPIPS", "CSIM", "AED", "APD", "AKD", "hPSNR", "hSSIM", "ePSNR", "mPSNR")
DEFINITIONS = {
    "CSIM": "cosine similarity of dlib ResNet face descriptors (not ArcFace)",
    "AED": "mean |difference| of concat(expr, jaw) fitted by our tracker to each image alone (not EMOCA)",
    "APD": "mean |difference| of the head axis-angle R(rotation) R(neck), radians, same fits",
    "AKD": "mean distance of 68 FaceMesh landmarks (dlib order), pixels at the evaluation resolution",
    "hPSNR": "PSNR inside the head-and-neck matte (PSNR, SSIM, LPIPS: inside the portrait matte)",
    "hSSIM": "SSIM inside the head-and-neck matte",
    "ePSNR": "PSNR over the eyes' region pixels (a box round both lid margins, inside the portrait matte)",
    "mPSNR": "PSNR over the mouth's region pixels (a box round the outer lips, inside the portrait matte)",
    "eAKD": "AKD of the lid margins and iris centres (mAKD: the lips; jAKD: the 17 contour points), pixels",
    "gaze r": "correlation over the targets of the horizontal iris offset (in eye widths) read by FaceMesh on "
              "frame and render",
    "mouth r": "the same correlation of the mouth opening (mid inner-lip gap / mouth width)",
    "eye diff": "mean |eye opening difference| between frame and render, in eye widths",
    "gaze sd": "standard deviation of the frames' iris offsets (mouth sd: of their mouth openings): "
               "a correlation means little where these are small",
}
FACE_COLUMNS = ("eAKD", "mAKD", "jAKD", "gaze r", "mouth r", "eye diff", "gaze sd", "mouth sd")


def _cells(values: Sequence[float | None]) -> str:
    fmt = ("{:>7.2f}", "{:>7.4f}", "{:>7.4f}", "{:>7.4f}", "{:>7.4f}", "{:>7.4f}", "{:>7.2f}", "{:>7.2f}", "{:>7.4f}",
           "{:>7.2f}", "{:>7.2f}")
    return " ".join("{:>7}".format("-") if v is None else f.format(v) for f, v in zip(fmt, values))


def _mean(rows: Sequence, name: str) -> float | None:
    return mean_of(getattr(r, name) for r in rows)[0]


def format_table(self_rows: Sequence[FFResult], cross_rows: Sequence[CrossResult] = ()) -> str:
    """The paper's columns (PSNR SSIM LPIPS CSIM AED APD AKD), one row per video (self) or
    ordered pair (cross) and K, then the means; '-' where a metric is unavailable."""
    columns = " ".join(f"{c:>7}" for c in COLUMNS)
    head = f"{'lane':<5} {'K':>2} {'video':<44} {columns} {'frames':>6} {'faces':>5}"
    lines = [head]
    for r in self_rows:
        vals = (r.psnr, r.ssim, r.lpips, r.csim, r.aed, r.apd, r.akd, r.psnr_head, r.ssim_head, r.psnr_eyes,
                r.psnr_mouth)
        lines.append(f"{'self':<5} {r.k:>2} {r.video[:44]:<44} {_cells(vals)} {r.n_targets:>6} {r.n_face:>5}")
    for r in cross_rows:
        pair = f"{r.source} -> {r.driver}"
        vals = (None, None, None, r.csim, r.aed, r.apd, r.akd, None, None, None, None)
        lines.append(f"{'cross':<5} {r.k:>2} {pair[:44]:<44} {_cells(vals)} {r.n_targets:>6} {r.n_face:>5}")
    for lane, rows in (("self", self_rows), ("cross", cross_rows)):
        for k in sorted({r.k for r in rows}):
            sel = [r for r in rows if r.k == k]
            names = ("psnr", "ssim", "lpips") if lane == "self" else ()
            vals = [_mean(sel, n) if n in names else None for n in ("psnr", "ssim", "lpips")]
            vals += [_mean(sel, n) for n in ("csim", "aed", "apd", "akd")]
            vals += [_mean(sel, n) if lane == "self" else None for n in ("psnr_head", "ssim_head", "psnr_eyes",
                                                                        "psnr_mouth")]
            label = f"mean of {len(sel)}"
            lines.append(f"{lane:<5} {k:>2} {label:<44} {_cells(vals)}")
    if any(r.n_face for r in self_rows):
        lines += ["", f"{'face':<5} {'K':>2} {'video':<44} " + " ".join(f"{c:>8}" for c in FACE_COLUMNS)]
        names = ("akd_eyes", "akd_mouth", "akd_jaw", "gaze_r", "mouth_r", "eye_diff", "gaze_sd", "mouth_sd")
        for r in self_rows:
            cells = " ".join("{:>8}".format("-") if getattr(r, n) is None else f"{getattr(r, n):>8.3f}" for n in names)
            lines.append(f"{'self':<5} {r.k:>2} {r.video[:44]:<44} {cells}")
    return "\n".join(lines)


def write_json(path: Path, self_rows: Sequence[FFResult], cross_rows: Sequence[CrossResult], matte: str) -> None:
    """Both lanes' rows (null where a metric is unavailable) and the metric definitions."""
    out = {"self": [dataclasses.asdict(r) for r in self_rows], "cross": [dataclasses.asdict(r) for r in cross_rows],
           "definitions": dict(DEFINITIONS, matte=matte)}
    path.parent.mkdir(parents=True, exist_ok=True)
    from engine.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(out, indent=1) + "\n")
