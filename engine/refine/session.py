"""Everything a refinement needs from a video: tracking, the reference frame's feed-forward
avatar, the training data. Shared by the CLI and the app."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from engine.headmodel.base import HeadModel
from engine.refine.data import VideoData, load_video_data
from engine.types import Avatar


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
    from engine.generator.api import generate
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
        kind = "network" if network is not None else "projective"
        start = generate(kind, model, [tracked.source(ref, rgb)],
                         tracked.params.shape[0], network, outer=outer).avatar
        avatar = Avatar(start.gaussians, model.name, tracked.params.shape[0],
                        {"generator": kind, "sources": [f"{video}#frame{ref}"], "reference_frame": ref},
                        outer=start.outer)
        log(f"reference frame {ref}; {len(data.train)} training and {len(data.test)} held-out frames")
    elif avatar.head_model != model.name:
        raise ValueError(f"the avatar was made for {avatar.head_model!r}, not {model.name!r}")
    return avatar, data


def tracking_path(avatar: Path) -> Path:
    """Where `python main.py refine` writes the tracking it trained on: beside the avatar bundle."""
    return avatar.with_name(f"{avatar.stem}.tracking.npz")


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
