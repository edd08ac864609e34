"""What a set of dropped (or file-dialog) paths means: build, open, load a video, or refuse."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from engine.io.media import is_video
from engine.service import MAX_SOURCES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
AVATAR_SUFFIX = ".savatar"


@dataclass(frozen=True)
class DropAction:
    kind: Literal["build", "video", "avatar", "ply", "reject"]
    paths: tuple[Path, ...]
    message: str    # what will happen, or why nothing will


def _kind(path: Path) -> str:
    s = path.suffix.lower()
    if s in IMAGE_SUFFIXES:
        return "image"
    if s == AVATAR_SUFFIX:
        return "avatar"
    if s == ".ply":
        return "ply"
    if is_video(path):
        return "video"
    return "unknown"


def classify_drop(paths: Sequence[str | Path]) -> DropAction:
    """1–4 images build an avatar; one video is loaded for refine/driving; one ``.savatar`` or
    ``.ply`` is opened. Anything else is refused with a message that names the problem."""
    paths = tuple(Path(p) for p in paths)
    if not paths:
        return DropAction("reject", paths, "nothing was dropped")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        what = "a folder" if missing[0].is_dir() else "not a file"
        return DropAction("reject", paths, f"{missing[0].name} is {what}; drop image, video, .savatar or .ply files")
    kinds = [_kind(p) for p in paths]
    unknown = [p.name for p, k in zip(paths, kinds) if k == "unknown"]
    if unknown:
        return DropAction("reject", paths, f"cannot open {', '.join(unknown)}: not an image, video, .savatar or .ply")
    if set(kinds) == {"image"}:
        if len(paths) > MAX_SOURCES:
            return DropAction("reject", paths, f"{len(paths)} portraits dropped; an avatar is built from 1 to "
                                               f"{MAX_SOURCES} portraits of one person")
        return DropAction("build", paths, f"building an avatar from {len(paths)} portrait(s)")
    if len(paths) > 1:
        return DropAction("reject", paths, "drop 1-4 portraits, or one video, or one avatar file at a time "
                                           f"(got {', '.join(sorted(set(kinds)))})")
    kind = kinds[0]
    message = {"video": f"loaded video {paths[0].name} for Refine", "avatar": f"opening avatar {paths[0].name}",
               "ply": f"opening {paths[0].name} (a static .ply: the sliders do not move it)"}[kind]
    return DropAction(kind, paths, message)
