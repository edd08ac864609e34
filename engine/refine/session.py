"""A refinement from a video: tracking, the reference frame's feed-forward avatar, the training
data (`prepare`), the tracking a refined avatar keeps beside it (`tracking_path`, `tracking_of`)
and the whole run (`refine_video`). Shared by the CLI and the app."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.headmodel.base import HeadModel
from engine.refine.data import VideoData, load_video_data
from engine.types import Avatar

if TYPE_CHECKING:
    from engine.types import HeadParams


def prepare(video: Path, model: HeadModel, resolution: int, avatar: Avatar | None = None,
            log: Callable[[str], None] = print,
            progress: Callable[[int, int], None] | None = None, tracked=None,
            network: Path | None = None, outer: bool = True) -> tuple[Avatar, VideoData]:
    """(starting avatar, training data). Without ``avatar`` the start is the feed-forward
    avatar of the reference frame (least jaw opening among the training frames): the projective
    stage's, or the trained network's when ``network`` (its checkpoint) is given.
    ``progress(frames done, frames)`` follows the tracking; ``tracked`` (a `track_video` result
    for ``video``) skips it. ``outer=False`` starts from the head page alone (no hair shell or
    bust), trained on the head-and-neck matte as avatars were before they had an outer layer."""
    from engine.generator.api import PROJECTIVE, GeneratorChoice, generate
    from engine.io.media import VideoReader
    from engine.track.tracker import track_video

    if tracked is None:
        log(f"tracking {video} ...")
        tracked = track_video(video, model, progress=progress)
    # an avatar with an outer layer (every new one) trains on the portrait matte: hair, ears,
    # neck and shoulders; one made before it, on the head-and-neck matte its Gaussians cover
    matte = "portrait" if (avatar is None and outer) or (avatar is not None and avatar.outer is not None) else "head"
    data = load_video_data(video, tracked, model, resolution, matte)
    if avatar is None:
        ref = data.reference_frame()
        with VideoReader(video) as frames:
            rgb = next(f for i, f in enumerate(frames) if i == ref)
        choice = GeneratorChoice("network", network) if network is not None else PROJECTIVE
        start = generate(choice, model, [tracked.source(ref, rgb)], tracked.params.shape[0], outer=outer).avatar
        avatar = Avatar(start.gaussians, model.name, tracked.params.shape[0],
                        {"generator": choice.kind, "sources": [f"{video}#frame{ref}"], "reference_frame": ref},
                        outer=start.outer)
        log(f"reference frame {ref}; {len(data.train)} training and {len(data.test)} held-out frames")
    elif avatar.head_model != model.name:
        raise ValueError(f"the avatar was made for {avatar.head_model!r}, not {model.name!r}")
    return avatar, data


def tracking_path(avatar: Path) -> Path:
    """Where `python main.py refine` writes the tracking it trained on: beside the avatar bundle."""
    return avatar.with_name(f"{avatar.stem}.tracking.npz")


def tracking_of(avatar: Path | None, given: Path | None = None) -> Path | None:
    """The tracking a refined avatar trained on, the one rule of every front end: ``given`` when
    the user names one, else the file beside ``avatar`` (`tracking_path`) when it exists, else None."""
    if given is not None:
        return Path(given)
    if avatar is not None and tracking_path(Path(avatar)).exists():
        return tracking_path(Path(avatar))
    return None


def load_tracking(path: Path, data: VideoData, model: HeadModel) -> VideoData:
    """``data`` on the tracking in ``path`` (an .npz of `engine.io.params`, one row per frame of
    the video); ValueError naming the file when it does not fit the video."""
    from engine.io import AvatarFileError
    from engine.io.params import load_params

    try:
        params = load_params(path)[0]
    except AvatarFileError as e:
        raise ValueError(str(e)) from e
    try:
        return data.with_params(params, model)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def refine_video(video: Path, model: HeadModel, cfg, start: Avatar | None = None, *,
                 tracking: "HeadParams | Path | None" = None, network: Path | None = None, outer: bool = True,
                 progress: "Callable[[str, float, object], None] | None" = None, cancel=None,
                 checkpoint: Path | None = None, resume: bool = False,
                 log: Callable[[str], None] = lambda s: None,
                 on_tracked: Callable[[VideoData], None] | None = None) -> tuple[Avatar, Avatar, VideoData]:
    """Refine on ``video`` with the `RefineConfig` ``cfg``, the one orchestration of the app's
    service and the `refine` command: track the video, start from ``start`` or the feed-forward
    avatar of its reference frame (`prepare`: ``network``, ``outer``), put the frames on their
    tracking (``tracking``: parameters or a file an earlier refine wrote, which must fit the
    video; else the photometric tracking when ``cfg`` asks for it, `track_for_refine`; else the
    landmark tracker's), then `refine_stages` (``checkpoint``, ``resume``). ``on_tracked(data)``
    sees the frames on their tracking before the first step (the command line writes the tracking
    there, so a refine stopped later resumes on it).

    ``progress(stage, fraction, step)``: stage "tracking" (the landmark tracker), one of
    `engine.refine.tracking.STAGES`, or "refining" with the refiner's `Progress` as ``step``.
    A set ``cancel`` raises `engine.jobs.Cancelled` at the next check. Returns (start avatar,
    refined avatar, the training data on its tracking at the training resolution)."""
    from engine.jobs import check
    from engine.refine.config import training_side
    from engine.refine.refiner import refine_stages
    from engine.refine.tracking import data_side, track_for_refine

    report = progress or (lambda stage, fraction, step: None)

    def tracked(done: int, total: int) -> None:
        check(cancel)
        report("tracking", done / max(total, 1), None)

    train_side = training_side(cfg)
    side = train_side if tracking is not None else data_side(cfg)
    avatar, data = prepare(Path(video), model, side, start, log=log, progress=tracked, network=network, outer=outer)
    if isinstance(tracking, (str, Path)):
        data = load_tracking(Path(tracking), data, model)
    elif tracking is not None:
        data = data.with_params(tracking, model)
    elif cfg.photometric_tracking:
        data = track_for_refine(avatar, model, data, cfg, lambda s, f: report(s, f, None), cancel)
    data = data.resized(train_side, model)
    if on_tracked is not None:
        on_tracked(data)
    refined = refine_stages(avatar, model, data, cfg, lambda p: report("refining", p.iteration / p.total, p),
                            cancel, checkpoint, resume)
    return avatar, refined, data
