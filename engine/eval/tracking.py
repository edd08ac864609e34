"""`eval tracking`: how well the trackers read jaw opening, eyelid closure and gaze, on a clip
rendered from an avatar with known parameters.

The clip (`known_clip`): the avatar's neutral identity seen from the front, its jaw opening and
closing (0 to JAW_MAX rad), both eyelids closing and opening (eyeBlink from 0 to the weight at
which this identity's lids meet, at most 1), the gaze
sweeping ±GAZE_YAW degrees left and right and ±GAZE_PITCH up and down, and the head turning a
little, all on smooth schedules so a video tracker can follow them. Each tracker reads it:

- ``portrait``: every frame fitted alone, as a portrait is (`track_images`);
- ``video``: the clip as a video (`track_video`: keyframes, per-frame fit, smoothing);
- ``real-time``: frame by frame, as `drive` reads a webcam (`RealtimeTracker`).

Scored per frame against the truth, with the same code for any head model:

- jaw: the jaw joint's opening angle (the x component of its axis-angle), radians; the mean
  absolute error and the bias (mean signed error, tracked minus true);
- eyelids: the *closure* of each eye, 1 − (lid gap / the gap of the same identity at rest),
  the lid gap being the height of three upper lid-margin landmarks over the three below them,
  with the head's pose removed (signed: a blink that closes past the lower lid counts more than
  1); the error is in units of the full range (0 open, 1 closed);
- gaze: the angle between the tracked and the true direction of each eyeball (its joint's
  rotation applied to the forward axis), degrees, the bias of its yaw component, and the gains
  of yaw and pitch (the slope of tracked against true: below 1, a turn is read short), over the
  frames whose eyes are open (true closure below OPEN).
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.headmodel.base import HeadModel
from engine.metrics.face import LID_PAIRS
from engine.types import HeadParams

JAW_MAX = 0.3           # rad: the clip's widest jaw opening
GAZE_YAW = 25.0         # degrees either side
GAZE_PITCH = 12.0       # degrees up and down
HEAD_YAW = 8.0          # degrees: the head's own turn, so pose and gaze are not one thing
FRAMES = 60
FPS = 25.0
SIZE = 512
TRACKERS = ("portrait", "video", "real-time")
OPEN = 0.25             # gaze is scored on frames whose true closure is below this

BLINKS = ("eyeBlink_L", "eyeBlink_R")


@dataclass(frozen=True)
class KnownClip:
    frames: np.ndarray      # [N, H, W, 3] uint8 RGB
    truth: HeadParams       # [N] the parameters each frame was rendered with
    fps: float


def schedule(n: int) -> dict[str, np.ndarray]:
    """The clip's per-frame jaw (rad), blink (0–1), gaze yaw/pitch and head yaw (degrees): smooth
    cycles at different rates so that every combination is sampled."""
    t = np.arange(n) / max(n - 1, 1)
    blink = np.clip((np.sin(np.pi * (3 * t % 1.0)) ** 2 - 0.55) / 0.35, 0.0, 1.0)   # three blinks, a third of the time
    return {"jaw": JAW_MAX * 0.5 * (1 - np.cos(2 * np.pi * 2 * t)),
            "blink": blink,
            "gaze_yaw": GAZE_YAW * np.sin(2 * np.pi * 1.5 * t),
            "gaze_pitch": GAZE_PITCH * np.sin(2 * np.pi * 1.0 * t + 0.7),
            "head_yaw": HEAD_YAW * np.sin(2 * np.pi * 0.5 * t)}


def known_params(model: HeadModel, neutral: HeadParams, n: int = FRAMES) -> HeadParams:
    """``neutral`` (one frame) repeated ``n`` times with `schedule`'s jaw, blinks, gaze and head turn."""
    s = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in schedule(n).items()}
    p = HeadParams(*(getattr(neutral, f.name).expand(n, -1).clone() for f in dataclasses.fields(HeadParams)))
    p.jaw[:, 0] = s["jaw"]
    names = list(model.expr_names)
    full = _closing_blink(model, neutral)
    for name in BLINKS:
        if name in names:
            p.expr[:, names.index(name)] = s["blink"] * full
    yaw, pitch = torch.deg2rad(s["gaze_yaw"]), torch.deg2rad(s["gaze_pitch"])
    for eye in (slice(0, 3), slice(3, 6)):
        p.eyes[:, eye] = _rotvec_yaw_pitch(yaw, pitch)
    p.neck[:, 1] = torch.deg2rad(s["head_yaw"])
    return p


def _closing_blink(model: HeadModel, neutral: HeadParams) -> float:
    """The eyeBlink weight that just closes this identity's eyes (closure 1, lids meeting): a
    linear blendshape closes a narrow eye before weight 1 and would cross its lids at 1."""
    names = list(model.expr_names)
    if not all(n in names for n in BLINKS):
        return 1.0
    p = dataclasses.replace(neutral.cpu(), expr=neutral.expr.cpu().clone())
    for name in BLINKS:
        p.expr[:, names.index(name)] = 1.0
    c = float(closure(model, p).mean()) - float(closure(model, neutral).mean())
    return 1.0 / c if c > 1.0 else 1.0


def _rotvec_yaw_pitch(yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Axis-angle [N, 3] of R_y(yaw) · R_x(−pitch): the forward axis +z turned ``yaw`` towards
    +x and ``pitch`` up (+y)."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("YX", np.stack([yaw.numpy(), -pitch.numpy()], 1))
    return torch.as_tensor(rot.as_rotvec(), dtype=torch.float32)


def known_clip(animated: AnimatedAvatar, model: HeadModel, n: int = FRAMES, size: int = SIZE, renderer=None,
               background: float = 0.6) -> KnownClip:
    """The avatar rendered from the front at ``size``² on a grey ``background`` with `known_params`."""
    from engine.camera import orbit_camera
    from engine.render.select import select

    renderer = renderer or select(model.device)
    truth = known_params(model, animated.neutral().cpu(), n)
    cam = orbit_camera(size=size).to(model.device)
    frames = []
    for i in range(n):
        with torch.no_grad():
            f = renderer.render(animated.gaussians(truth.frame(i).to(model.device)), cam)
        rgb = f.rgb.clamp(0, 1) + background * (1 - f.alpha[..., None])
        frames.append((rgb.cpu().numpy() * 255 + 0.5).astype(np.uint8))
    return KnownClip(np.stack(frames), truth, FPS)


def closure(model: HeadModel, params: HeadParams) -> np.ndarray:
    """[N, 2] closure of the (right, left) eye: 1 − lid gap / the same identity's gap at rest
    (expression, jaw and pose zero), gaps measured with the head's pose removed."""
    model = model.host()
    ids = list(np.asarray(model.lmk_ids))
    n = params.batch_size
    posed = dataclasses.replace(params.cpu(), rotation=torch.zeros(n, 3), neck=torch.zeros(n, 3),
                                translation=torch.zeros(n, 3))
    rest = HeadParams.neutral(params.shape.shape[1], params.expr.shape[1], n)
    rest = dataclasses.replace(rest, shape=params.shape.cpu())
    with torch.no_grad():
        lm, lm0 = (model.landmarks(model.vertices(p)).numpy() for p in (posed, rest))
    out = np.zeros((n, 2))
    for k, eye in enumerate(("right", "left")):
        gap = sum(lm[:, ids.index(a), 1] - lm[:, ids.index(b), 1] for a, b in LID_PAIRS[eye])     # signed: lids may cross
        gap0 = sum(lm0[:, ids.index(a), 1] - lm0[:, ids.index(b), 1] for a, b in LID_PAIRS[eye])
        out[:, k] = 1 - gap / np.maximum(gap0, 1e-9)
    return out


def gaze_directions(params: HeadParams) -> np.ndarray:
    """[N, 2, 3] unit direction of each eyeball (its rotation applied to +z)."""
    from scipy.spatial.transform import Rotation

    eyes = params.eyes.detach().cpu().double().numpy().reshape(-1, 3)
    d = Rotation.from_rotvec(eyes).apply([0.0, 0.0, 1.0])
    return d.reshape(-1, 2, 3)


@dataclass(frozen=True)
class TrackingScore:
    tracker: str
    frames: int             # frames the tracker read a face in
    jaw_error: float        # mean |tracked − true| opening, rad
    jaw_bias: float         # mean (tracked − true), rad
    lid_error: float        # mean |closure error|, fraction of the full range
    lid_bias: float
    gaze_error: float       # mean angle between tracked and true eyeball directions, degrees
    gaze_yaw_bias: float    # mean (tracked − true) yaw, degrees
    gaze_yaw_gain: float    # slope of tracked against true yaw (1: the turn is read in full)
    gaze_pitch_gain: float  # the same of pitch
    ms_per_frame: float     # the tracker's time per frame (detection included)


def score(tracker: str, model: HeadModel, truth: HeadParams, tracked: HeadParams, found: np.ndarray,
          seconds: float) -> TrackingScore:
    """Compare ``tracked`` with ``truth`` over the frames where ``found``."""
    f = np.asarray(found, bool)
    jaw = (tracked.jaw[:, 0] - truth.jaw[:, 0]).numpy()[f]
    lid = (closure(model, tracked) - closure(model, truth))[f]
    open_ = f & (closure(model, truth).max(1) < OPEN)       # gaze is read through open eyes only
    dt, dg = gaze_directions(tracked)[open_], gaze_directions(truth)[open_]
    angle = np.degrees(np.arccos(np.clip((dt * dg).sum(-1), -1, 1)))
    yaw_of = lambda d: np.degrees(np.arctan2(d[..., 0], d[..., 2])).ravel()  # noqa: E731
    pitch_of = lambda d: np.degrees(np.arcsin(np.clip(d[..., 1], -1, 1))).ravel()  # noqa: E731
    mean = lambda x: float(np.mean(x)) if x.size else math.nan  # noqa: E731
    return TrackingScore(tracker, int(f.sum()), mean(np.abs(jaw)), mean(jaw), mean(np.abs(lid)), mean(lid),
                         mean(angle), mean(yaw_of(dt) - yaw_of(dg)), _gain(yaw_of(dg), yaw_of(dt)),
                         _gain(pitch_of(dg), pitch_of(dt)), 1000 * seconds / max(len(f), 1))


def _gain(true: np.ndarray, tracked: np.ndarray) -> float:
    """Least-squares slope of ``tracked`` against ``true`` (nan when ``true`` does not vary)."""
    if true.size < 2 or np.ptp(true) < 1e-9:
        return math.nan
    return float(np.polyfit(true, tracked, 1)[0])


def evaluate_tracking(clip: KnownClip, model: HeadModel, trackers=TRACKERS,
                      log: Callable[[str], None] = print) -> list[TrackingScore]:
    """Every tracker of ``trackers`` on ``clip``, scored (see the module docstring)."""
    out = []
    for name in trackers:
        t0 = time.perf_counter()
        params, found = _read(name, clip, model)
        out.append(score(name, model, clip.truth, params, found, time.perf_counter() - t0))
        log(f"{name}: {out[-1].frames}/{len(clip.frames)} frames read")
    return out


def _read(tracker: str, clip: KnownClip, model: HeadModel) -> tuple[HeadParams, np.ndarray]:
    from engine.track.tracker import TrackError, track_images, track_video

    n = len(clip.frames)
    if tracker == "portrait":
        frames, found = [], np.zeros(n, bool)
        for i, rgb in enumerate(clip.frames):
            try:
                frames.append(track_images([rgb], [f"frame {i}"], model).params)
                found[i] = True
            except TrackError:
                frames.append(model.host().neutral())
        return _cat(frames), found
    if tracker == "video":
        from engine.io.media import write_video

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clip.mp4"
            write_video(path, clip.frames, clip.fps, crf=12)
            tracked = track_video(path, model, with_mattes=False)
        return tracked.params, tracked.found
    if tracker == "real-time":
        from engine.drive.realtime import RealtimeTracker

        frames, found = [], np.zeros(n, bool)
        with RealtimeTracker(model) as rt:
            for i, rgb in enumerate(clip.frames):
                r = rt.track(rgb)
                frames.append(r.params)
                found[i] = r.found
        return _cat(frames), found
    raise ValueError(f"unknown tracker {tracker!r}; choose from {', '.join(TRACKERS)}")


def _cat(frames: list[HeadParams]) -> HeadParams:
    return HeadParams(*(torch.cat([getattr(p, f.name).cpu() for p in frames]) for f in dataclasses.fields(HeadParams)))


def format_table(scores: list[TrackingScore]) -> str:
    lines = [f"{'tracker':<10} {'frames':>6} {'jaw err':>8} {'jaw bias':>9} {'lid err':>8} {'lid bias':>9} "
             f"{'gaze err':>9} {'yaw bias':>9} {'yaw gain':>9} {'pitch gain':>10} {'ms/frame':>9}",
             f"{'':<10} {'':>6} {'(rad)':>8} {'(rad)':>9} {'(range)':>8} {'(range)':>9} {'(deg)':>9} {'(deg)':>9}"]
    for s in scores:
        lines.append(f"{s.tracker:<10} {s.frames:>6} {s.jaw_error:>8.3f} {s.jaw_bias:>+9.3f} {s.lid_error:>8.3f} "
                     f"{s.lid_bias:>+9.3f} {s.gaze_error:>9.2f} {s.gaze_yaw_bias:>+9.2f} {s.gaze_yaw_gain:>9.2f} "
                     f"{s.gaze_pitch_gain:>10.2f} {s.ms_per_frame:>9.1f}")
    return "\n".join(lines)


def write_json(path: Path, scores: list[TrackingScore]) -> None:
    """The rows as a JSON list (null where no frame was read)."""
    import json

    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(s).items()}
            for s in scores]
    Path(path).write_text(json.dumps(rows, indent=1))
