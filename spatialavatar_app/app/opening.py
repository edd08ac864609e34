"""The open/build controller: what a drop or the file dialog does (build an avatar from
portraits, open a bundle or a .ply, load a video for refine and driving), and the avatar's
description in the panel."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from engine.types import Avatar, HeadParams
from spatialavatar_app.app.drops import classify_drop

if TYPE_CHECKING:
    from spatialavatar_app.app.app import App


@dataclass(frozen=True)
class Built:
    """A finished build: the avatar, the thumbnails of the portraits it was built from, and when
    the drop came (to time drop-to-screen)."""

    avatar: Avatar
    thumbs: list[np.ndarray]
    t0: float


@dataclass(frozen=True)
class RefinedOn:
    """The video and tracking the current avatar was refined on: polish continues from them."""

    video_stem: str
    tracking: HeadParams


class OpenController:
    def __init__(self, app: "App") -> None:
        self.app = app
        self.refined_on: RefinedOn | None = None
        self.video_thumb: np.ndarray | None = None      # first frame of the loaded video

    def open_paths(self, paths: Sequence[str | Path]) -> None:
        """What a drop or the file dialog does."""
        app = self.app
        action = classify_drop(paths)
        if action.kind == "reject":
            app.status(action.message, error=True)
            return
        if action.kind == "build":
            self.build(list(action.paths))
            return
        if action.kind == "video":
            self.load_video(action.paths[0])
            return
        path = action.paths[0]
        opener = app.service.load if action.kind == "avatar" else app.service.open_ply
        if app.guard(f"open {path.name}", lambda: opener(path) or True):
            self.refined_on = self._tracking_beside(path) if action.kind == "avatar" else None
            self.avatar_changed()
            app.view.push_pose()
            app.time_next_frame(f"opened {path.name}")

    def _tracking_beside(self, path: Path) -> RefinedOn | None:
        """The video and tracking of a refined avatar bundle with the tracking it trained on
        beside it (as refine writes them), so polish can continue it; None otherwise."""
        from engine.service import refined_tracking

        app = self.app
        try:
            got = refined_tracking(path, app.service.avatar)
        except ValueError as e:
            app.status(str(e), error=True)
            return None
        if got is None:
            return None
        app.status(f"{path.name} was refined on {got[0]}; with that video loaded, polish continues it")
        return RefinedOn(*got)

    def load_default(self) -> None:
        """The built-in default avatar, on the job thread (built on first use: seconds)."""
        from engine.service import default_avatar

        service = self.app.service

        def work(r):
            r.progress(0.0, "default avatar")
            service.set_avatar(default_avatar(service.model))

        def done(_) -> None:
            self.refined_on = None
            self.avatar_changed()
            self.app.view.push_pose()
            self.app.status("default avatar ready")

        self.app.start_job("default avatar", work, "loading the default avatar ...", done)

    def build(self, paths: list[Path]) -> None:
        from engine.service import thumbnail

        t0 = time.perf_counter()
        service = self.app.service

        def work(r) -> Built:
            thumbs = []
            for p in paths:
                try:
                    thumbs.append(thumbnail(p))
                except Exception:  # noqa: BLE001 - the build reports the bad file by name
                    pass
            avatar = service.build_avatar(paths, progress=lambda stage, f: r.progress(f, stage), cancel=r.cancel)
            return Built(avatar, thumbs, t0)

        self.app.start_job("build", work, f"building an avatar from {len(paths)} portrait(s) ...", self._built)

    def _built(self, built: Built) -> None:
        self.refined_on = None
        self.avatar_changed(built.thumbs)
        self.app.view.push_pose()
        for n in meta(built.avatar, "notes", list) or []:
            self.app.status(str(n), error=True)
        self.app.time_next_frame("avatar built", built.t0)

    def load_video(self, path: Path) -> None:
        from engine.service import probe_video

        app = self.app
        info = app.guard(f"video {path.name}", lambda: probe_video(path))
        if info is None:
            return
        app.state.video = Path(path)
        self.video_thumb = info.first
        app.panel.update_video(f"{path.name}: {info.width}x{info.height}, {info.frames} frames")
        app.panel.update_preview(info.first)
        app.status(f"loaded video {path.name}; click Refine to refine an avatar on it")

    def avatar_changed(self, thumbs: list[np.ndarray] | None = None) -> None:
        """The panel's description and thumbnails of the current avatar."""
        panel, avatar = self.app.panel, self.app.service.avatar
        if avatar is None:
            panel.update_info("static .ply scene (no head-model binding: the sliders do not move it)")
            panel.update_thumbnails([])
            return
        panel.update_info(describe(avatar))
        if thumbs is None:
            thumbs = [avatar.thumbnail] if avatar.thumbnail is not None else []
        panel.update_thumbnails(thumbs)


def describe(avatar: Avatar) -> str:
    """One line on where an avatar came from, as the panel shows it."""
    sources = [Path(str(s)).name for s in meta(avatar, "sources", list) or []]
    text = f"{meta(avatar, 'generator', str) or 'avatar'} avatar, {avatar.n_gaussians:,} Gaussians"
    if sources:
        text += f", from {', '.join(sources)}"
    refined = meta(avatar, "refined", dict)
    if refined is not None:
        text += f"; refined on {refined.get('video')} ({refined.get('iterations')} it)"
    if avatar.residual is not None:
        text += ", with an expression residual"
    return text


def meta(avatar, key: str, kind: type):
    """``avatar.metadata[key]`` when it is a ``kind``, else None: a bundle's metadata may hold
    anything JSON can, and what the panel shows must not depend on it."""
    m = avatar.metadata if isinstance(avatar.metadata, dict) else {}
    value = m.get(key)
    return value if isinstance(value, kind) else None
