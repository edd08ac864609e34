"""The engine's API for its front ends (the app and the command line): `AvatarService` (the
current avatar, its pose and view, and what is done with them) and the module's functions
(building, opening, the web page, presets, videos to refine on and sources to drive from).
Works headless.

Thread model: one UI thread calls the cheap setters and `render`; one worker thread may run
`build_avatar` (seconds) at the same time. A lock guards the service's state; the slow work
runs outside it on local values and the new avatar is swapped in at the end, so the UI
keeps rendering the old avatar meanwhile. `render` takes a snapshot under the lock and
renders outside it.
"""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from engine.animate import AnimatedAvatar, StaticScene
from engine.camera import orbit_camera
from engine.generator.registry import PROJECTIVE, GeneratorChoice
from engine.drive.transfer import TransferConfig  # noqa: F401 - the API's drive settings
from engine.expressions import Pose, posed
from engine.headmodel.base import HeadModel
from engine.io.presets import load_camera_preset, load_expression_preset, preset_names  # noqa: F401 - the API's presets
from engine.io.presets import save_expression_preset  # noqa: F401
from engine.jobs import Cancelled, Progress  # noqa: F401 - re-exported: the API's cancel and progress shape
from engine.jobs import check as check_cancel
from engine.types import Avatar, Camera, Frame, Gaussians, HeadParams

MAX_SOURCES = 4


@dataclass(frozen=True)
class RefineResult:
    """A finished refinement and its held-out PSNR inside the portrait matte (the headline: hair,
    ears, neck, top of the shoulders) and inside the head-and-neck matte it trained on."""

    avatar: Avatar
    psnr_start: float       # the starting avatar on the held-out frames, head-and-neck matte, dB
    psnr_refined: float     # the refined avatar on them, dB
    frames: int             # held-out frames with a face
    width: int              # the resolution they were scored at
    height: int
    tracking: HeadParams    # every frame's tracking the refiner trained on (pass it back to polish)
    portrait_start: float | None = None     # the same inside the portrait matte (None: no person segmentation)
    portrait_refined: float | None = None


RefineProgress = Callable[[str, float, object], None]   # (stage, fraction, refiner Progress or None)


def build_avatar(paths: Sequence[Path], model: HeadModel, progress: Progress | None = None,
                 cancel: threading.Event | None = None, notes: list[str] | None = None,
                 generator: GeneratorChoice = PROJECTIVE) -> Avatar:
    """An avatar from 1–4 portraits of one person (see `build_animated`)."""
    return build_animated(paths, model, progress, cancel, notes, generator).avatar


def build_animated(paths: Sequence[Path], model: HeadModel, progress: Progress | None = None,
                   cancel: threading.Event | None = None, notes: list[str] | None = None,
                   generator: GeneratorChoice = PROJECTIVE) -> AnimatedAvatar:
    """An animatable avatar from 1–4 portraits of one person by the ``generator`` of the registry:
    the projective feed-forward stage, or e.g. the trained network with its checkpoint, whose
    avatar also follows the view and the expression through its view-conditioned and residual heads.

    Portraits without a usable face are left out with a note (in ``notes``) as long as one
    remains; portraits that seem to show different people (dlib face descriptors, see
    `engine.track.identity`) get a note and a warning, and are still used."""
    from engine.generator.api import generate
    from engine.io.media import MediaError, read_image
    from engine.track.tracker import track_portraits

    paths = [Path(p) for p in paths]
    if not 1 <= len(paths) <= MAX_SOURCES:
        raise ValueError(f"give 1 to {MAX_SOURCES} portraits of one person, not {len(paths)}")
    notes = [] if notes is None else notes
    report = progress or (lambda stage, f: None)

    def check() -> None:
        check_cancel(cancel)

    t0 = time.perf_counter()
    read, usable = {}, []
    for p in paths:         # unreadable files are left out before the face models load (seconds)
        try:
            read[p] = read_image(p)
            usable.append(p)
        except MediaError as e:
            notes.append(f"left out {e}")
    check()
    report("tracking", 0.0)
    tracked = None
    while usable:
        try:
            tracked = track_portraits(usable, model, progress=lambda d, t: report("tracking", d / t))
            break
        except MediaError as e:     # unreadable, or no usable face: leave it out, keep the others
            bad = Path(getattr(e, "path", ""))
            if bad not in usable:
                raise
            notes.append(f"left out {e}")
            usable.remove(bad)
    if tracked is None:
        raise ValueError("no portrait with a usable face: " + "; ".join(notes))
    notes.extend(tracked.warnings)
    images = [read[p] for p in usable]
    if len(usable) > 1:
        from engine.track.identity import SAME_PERSON_DISTANCE, different_people, face_descriptor

        desc = [face_descriptor(img, tracked.landmarks[i]) for i, img in enumerate(images)]
        for i, j, d in different_people(desc):
            notes.append(f"{usable[i].name} and {usable[j].name} may show different people (face descriptor "
                         f"distance {d:.2f} > {SAME_PERSON_DISTANCE}); the avatar mixes them")
    check()
    report("warping into UV", 0.0)
    sources = [tracked.source(i, images[i]) for i in range(len(usable))]
    shape = tracked.params.shape[0]
    animated = generate(generator, model, sources, shape)
    check()
    report("done", 1.0)
    meta = {**animated.avatar.metadata, "sources": [str(p) for p in usable], "notes": notes,
            "seconds": round(time.perf_counter() - t0, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "mean_confidence": float(animated.confidence.mean())}
    if generator.checkpoint is not None:
        meta["checkpoint"] = str(generator.checkpoint)
    for n in notes:
        warnings.warn(n)
    animated.avatar = replace(animated.avatar, metadata=meta)
    return animated


class AvatarService:
    """The current avatar, its pose and the view, and the operations on them."""

    def __init__(self, model: HeadModel | None = None, avatar: Avatar | None = None, renderer: str | None = None,
                 size: int = 512, generator: GeneratorChoice = PROJECTIVE) -> None:
        from engine.headmodel.openhead import load_head_model
        from engine.render.select import select

        self._lock = threading.RLock()
        self.generator = generator
        self.model = model or load_head_model()
        if generator != PROJECTIVE:
            from engine.generator.api import check_generator

            check_generator(generator, self.model)      # a bad file fails before any tracking
        self._renderer = select(self.model.device, need_grad=False, prefer=renderer)
        self._animated = AnimatedAvatar(avatar or default_avatar(self.model), self.model)
        self._params = self._animated.neutral()
        self._camera = orbit_camera(size=size)

    # ---- state
    @property
    def avatar(self) -> Avatar | None:
        """The current avatar; None while a static ``.ply`` scene is shown."""
        with self._lock:
            return self._animated.avatar

    @property
    def renderer_name(self) -> str:
        """The live backend: gsplat, native, gl or reference."""
        return self._renderer.name

    @property
    def params(self) -> HeadParams:
        with self._lock:
            return self._params

    @property
    def camera(self) -> Camera:
        with self._lock:
            return self._camera

    def neutral(self) -> HeadParams:
        """The current avatar's own shape with a neutral expression and pose."""
        with self._lock:
            return self._animated.neutral()

    def set_avatar(self, avatar: Avatar) -> None:
        animated = AnimatedAvatar(avatar, self.model)          # validated before the swap
        with self._lock:
            self._animated = animated
            self._params = replace(self._params, shape=avatar.shape[None].to(self._params.shape))

    def set_params(self, params: HeadParams) -> None:
        """The pose to show; the avatar's own shape is kept. Ignored by a static ``.ply`` scene."""
        self.model.check(params)
        with self._lock:
            if self._animated.avatar is not None:
                params = replace(params, shape=self._animated.avatar.shape[None].to(params.shape))
            self._params = params

    def set_pose(self, weights: dict[str, float], pose: Pose = Pose()) -> HeadParams:
        """Show the named expressions ``weights`` and the joint angles ``pose`` (degrees) on the
        avatar's neutral face (`engine.expressions.posed`); ValueError for an unknown name."""
        params = posed(self.neutral(), self.model, weights, pose)
        self.set_params(params)
        return params

    def set_camera(self, camera: Camera) -> None:
        with self._lock:
            self._camera = camera

    # ---- work
    def build_avatar(self, paths: Sequence[Path], progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> Avatar:
        """Build from portraits (slow, outside the lock) and make it the current avatar."""
        animated = build_animated(paths, self.model, progress, cancel, generator=self.generator)
        with self._lock:
            self._animated = animated
            self._params = replace(self._params, shape=animated.avatar.shape[None].to(self._params.shape))
        return animated.avatar

    def render(self, camera: Camera | None = None) -> Frame:
        """The current state rendered (with ``camera`` instead of the view's, e.g. at full size)."""
        return self.rasterize(*self.pose(camera))

    def pose(self, camera: Camera | None = None) -> tuple[Gaussians, Camera]:
        """The current avatar posed as the state is now, and the camera to render it with (the
        first half of `render`; the app runs the halves of consecutive frames on two threads)."""
        with self._lock:
            animated, params, camera = self._animated, self._params, camera or self._camera
        with torch.no_grad():
            return animated.gaussians(params, camera), camera

    def rasterize(self, gaussians: Gaussians, camera: Camera) -> Frame:
        """The second half of `render` (on the head model's device: a network avatar poses on the host)."""
        with torch.no_grad():
            return self._renderer.render(gaussians.to(self.model.device), camera)

    def open_ply(self, path: Path) -> None:
        """Show a 3DGS ``.ply`` as a static scene (it has no binding: the pose does not apply)."""
        from engine.io.ply import read_ply

        scene = StaticScene(read_ply(path), self.model)
        with self._lock:
            self._animated = scene

    def refine_video(self, video: Path, preset: str = "default", from_current: bool = False,
                     progress: "RefineProgress | None" = None, cancel: threading.Event | None = None,
                     checkpoint: Path | None = None, tracking: HeadParams | None = None,
                     **overrides) -> "RefineResult":
        """Track ``video``, refine (paper §2.5) from the feed-forward avatar of its reference frame
        (or the current avatar), score both on the held-out frames at the (largest) training resolution and
        make the refined avatar current. ``progress(stage, fraction, step)``: stage "tracking",
        the photometric tracking's `engine.refine.tracking.STAGES` (with a preset that asks for
        them), "refining" or "scoring"; ``step`` is the refiner's `Progress` (loss, ETA, preview)
        while refining. ``tracking``: train on these parameters (a `RefineResult.tracking` of
        the same video) instead of tracking photometrically, as the polish preset must to
        continue the avatar it refined."""
        from engine.eval.refined import evaluate_mattes
        from engine.refine.config import load_refine_config
        from engine.refine.session import refine_video

        cfg = load_refine_config(preset, **overrides)
        report = progress or (lambda stage, f, step: None)
        start = self.avatar if from_current else None
        if from_current and start is None:
            raise ValueError("a .ply scene cannot be refined: open or build an avatar first")
        avatar, refined, data = refine_video(Path(video), self.model, cfg, start, tracking=tracking, progress=report,
                                             cancel=cancel, checkpoint=checkpoint)
        report("scoring", 1.0, None)
        mattes = ("head", "portrait") if data.person is not None else ("head",)
        before, after = (evaluate_mattes(a, self.model, data, n, mattes) for a, n in ((avatar, "start"),
                                                                                      (refined, "refined")))
        portrait = (before["portrait"].psnr, after["portrait"].psnr) if "portrait" in before else (None, None)
        self.set_avatar(refined)
        return RefineResult(refined, before["head"].psnr, after["head"].psnr, after["head"].frames,
                            data.images.shape[2], data.images.shape[1], data.params, *portrait)

    def export_ply(self, path: Path) -> int:
        """The current pose's world-space Gaussians as a 3DGS .ply; how many it wrote."""
        from engine.io import export_ply

        with self._lock:
            animated, params = self._animated, self._params
        g = animated.gaussians(params)
        export_ply(g, path)
        return len(g.means)

    def save(self, path: Path) -> None:
        from engine.io import save_avatar

        avatar = self.avatar
        if avatar is None:
            raise ValueError("a .ply scene has no head-model binding and cannot be saved as an avatar bundle; "
                             "export it as .ply instead")
        if avatar.thumbnail is None:
            with torch.no_grad():
                thumb = self._renderer.render(self._animated.gaussians(self._animated.neutral()),
                                              orbit_camera(size=128)).to_uint8()
            avatar = replace(avatar, thumbnail=thumb)
        save_avatar(avatar, path)

    def export_web(self, path: Path, track: HeadParams | None = None, fps: float = 25.0) -> int:
        """The current avatar as one self-contained web page (`export_web`), with ``track`` to play
        at ``fps`` if given; its size in bytes."""
        animated = self._animated_avatar("played in a web page")
        return export_web(animated, path, track, fps)

    def render_file(self, path: Path, size: int = 512, view_yaw: float = 0.0, view_pitch: float = 0.0) -> None:
        """The current pose on white from the orbit view (yaw, pitch in degrees) as an image file."""
        from engine.render.turntable import render_image

        with self._lock:
            animated, params = self._animated, self._params
        render_image(animated, params, path, size, view_yaw, view_pitch, self.renderer_name)

    def render_turntable(self, path: Path, size: int = 384, frames: int = 48) -> None:
        """A turntable MP4 of the current pose running through a few expressions
        (`engine.render.turntable`)."""
        from engine.render.turntable import render_turntable

        animated = self._animated_avatar("turned on a turntable")
        render_turntable(animated, self.params, path, size, frames, renderer=self.renderer_name)

    def drive_video(self, driver, out: Path, **options):
        """Drive the current avatar with the face of ``driver`` (a video path or a live source)
        into the MP4 ``out`` (`engine.drive.drive.drive_video`, its ``options``); its `DriveStats`."""
        from engine.drive.drive import drive_video

        animated = self._animated_avatar("driven")
        return drive_video(animated.avatar, self.model, driver, out, renderer=self.renderer_name, **options)

    def _animated_avatar(self, what: str) -> AnimatedAvatar:
        with self._lock:
            animated = self._animated
        if animated.avatar is None:
            raise ValueError(f"a .ply scene has no head-model binding and cannot be {what}")
        return animated

    def save_refined(self, path: Path, tracking: HeadParams) -> None:
        """Save the current (refined) avatar to ``path`` and the tracking it trained on beside it
        (`engine.refine.session.tracking_path`), where `eval refine` and the polish preset look."""
        from engine.io.params import save_params
        from engine.refine.session import tracking_path

        self.save(path)
        save_params(tracking, tracking_path(path))

    def start_live(self, source, transfer: TransferConfig | None = None, smoothing: float = 0.5):
        """Drive the current avatar from ``source`` (an `engine.drive.sources` webcam or video) on
        a worker thread: real-time tracking, expression transfer (``transfer``: a
        `TransferConfig`) and One-Euro smoothing of ``smoothing`` strength. Returns the running
        `LiveDriver`; ``latest()`` gives its newest parameters, which the caller shows with
        `set_params`. The source is the driver's to close."""
        from engine.drive.live import LiveDriver
        from engine.drive.pipeline import DrivePipeline
        from engine.drive.realtime import RealtimeConfig, RealtimeTracker
        from engine.drive.transfer import TransferConfig

        if self.avatar is None:
            raise ValueError("a .ply scene cannot be driven: open or build an avatar")
        pipeline = DrivePipeline(self.model.expr_names, self.neutral(), transfer or TransferConfig(), smoothing)
        tracker = RealtimeTracker(self.model, RealtimeConfig(threads=None))
        return LiveDriver(source, tracker, pipeline).start()

    def load(self, path: Path) -> Avatar:
        """Open the bundle at ``path`` (`open_avatar`) and make it the current avatar."""
        avatar = open_avatar(path, self.model)
        self.set_avatar(avatar)
        return avatar


def export_web(animated: AnimatedAvatar, path: Path, track: HeadParams | None = None, fps: float = 25.0) -> int:
    """Write ``animated`` as one self-contained web page (`engine.web.export`); its size in bytes.
    A ``track`` must be of the avatar's head model."""
    from engine.web.export import export_web as write

    if track is not None:
        animated.model.check(track)
    return write(animated, Path(path), track, fps)


@dataclass(frozen=True)
class VideoInfo:
    """What a front end shows of a video before refining on it or driving from it."""

    width: int
    height: int
    frames: int
    first: "np.ndarray"     # uint8 [H, W, 3] the first frame


def probe_video(path: Path) -> VideoInfo:
    """A video's size, frame count and first frame; `MediaError` naming the file when unreadable."""
    from engine.io.media import VideoReader

    with VideoReader(path) as v:
        first = next(iter(v))
        return VideoInfo(v.size[0], v.size[1], v.n_frames, first)


def thumbnail(path: Path, side: int = 256) -> np.ndarray:
    """A portrait's picture for a front end to show, at most ``side`` px; `MediaError` when unreadable."""
    from engine.io.media import read_image

    return read_image(path, max_side=side)


def live_source(webcam: int | None = None, video: Path | None = None, mirror: bool = True):
    """A source to drive from (`AvatarService.start_live`): camera ``webcam`` (mirrored, a selfie
    view, when ``mirror``), or ``video`` played in real time like a camera."""
    from engine.drive.sources import VideoSource, WebcamSource

    if (webcam is None) == (video is None):
        raise ValueError("drive from a webcam or a video, one of them")
    return WebcamSource(int(webcam), mirror=bool(mirror)) if webcam is not None else VideoSource(video, realtime=True)


def refined_tracking(path: Path, avatar: Avatar | None) -> tuple[str, HeadParams] | None:
    """(the video's name, the tracking it trained on) of a refined avatar bundle opened from
    ``path`` with the tracking refine wrote beside it, so polish can continue it; None when it was
    not refined or has no tracking there. ValueError naming the file for a broken tracking."""
    from engine.io import AvatarFileError
    from engine.io.params import load_params
    from engine.refine.session import tracking_of

    meta = avatar.metadata if avatar is not None and isinstance(avatar.metadata, dict) else {}
    refined = meta.get("refined")
    beside = tracking_of(path)
    if not isinstance(refined, dict) or not isinstance(refined.get("video"), str) or beside is None:
        return None
    try:
        return refined["video"], load_params(beside)[0]
    except AvatarFileError as e:
        raise ValueError(f"{beside.name} is not a tracking file ({e}); polish needs a new refine") from None


def open_avatar(path: Path | str | None, model: HeadModel) -> Avatar:
    """The avatar a front end opens for ``path``: the default avatar when None, the plain
    mannequin for ``"plain"``, else the bundle at ``path``, which must have been made for
    ``model`` (ValueError naming both head models otherwise)."""
    from engine.io import load_avatar

    if path is None:
        return default_avatar(model)
    if str(path) == "plain":
        from engine.generator.plain import plain_avatar

        return plain_avatar(model)
    avatar = load_avatar(Path(path))
    if avatar.head_model != model.name:
        raise ValueError(f"{path} was made for head model {avatar.head_model!r}; pass --head-model "
                         f"for it (the loaded one is {model.name!r})")
    return avatar


def default_avatar(model: HeadModel) -> Avatar:
    """The avatar the program opens on: built by the projective stage from scikit-image's
    astronaut portrait (Eileen Collins, NASA, public domain) and cached; the plain avatar when
    the head model is not OpenHead or building fails."""
    from engine.generator.plain import plain_avatar
    from engine.io import AvatarFileError, load_avatar, save_avatar

    if model.charts != "openhead":      # the astronaut's avatar is built for OpenHead's charts
        return plain_avatar(model)
    path = _default_avatar_path(model)
    if path.exists():
        try:
            return _with_source_thumbnail(load_avatar(path))
        except AvatarFileError:
            pass                                        # a damaged cache is rebuilt
    import tempfile

    import imageio.v3 as iio
    from skimage import data

    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "astronaut.png"
            iio.imwrite(src, data.astronaut())
            avatar = build_avatar([src], model)
    except (ValueError, OSError, ImportError) as e:     # ImportError: no mediapipe (a bare GPU machine)
        warnings.warn(f"could not build the default avatar ({e}); using the plain one")
        return plain_avatar(model)
    avatar = replace(avatar, metadata={**avatar.metadata, "sources": ["skimage.data.astronaut() (NASA, public domain)"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_avatar(avatar, path)
    return _with_source_thumbnail(avatar)


def _with_source_thumbnail(avatar: Avatar) -> Avatar:
    """The default avatar with its source portrait (the astronaut) as its thumbnail, which the
    panel shows; bundles cached before it had one get it here."""
    if avatar.thumbnail is not None:
        return avatar
    import cv2
    from skimage import data

    return replace(avatar, thumbnail=cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA))


def _default_avatar_path(model: HeadModel) -> Path:
    import hashlib

    from engine.headmodel.openhead import cache_dir

    h = hashlib.sha256(model.data.digest().encode())
    here = Path(__file__).parent
    for p in sorted([here / "binding.py", *(here / "generator").glob("*.py"), *(here / "track").glob("*.py")]):
        h.update(p.read_bytes())
    return cache_dir() / f"default-avatar-{h.hexdigest()[:12]}.savatar"
