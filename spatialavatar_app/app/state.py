"""What the panel edits (`UiState`) and what the frame loop counts (`Stats`).

Every value a widget of the panel sets lives here; controllers read it from here, never from
the widgets, so they run and are tested without a window."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from engine.expressions import Pose
from spatialavatar_app.app.orbit import OrbitView


@dataclass(frozen=True)
class DriveOptions:
    """The Drive section: where the face comes from and how it is carried over."""

    source: Literal["webcam", "loaded video"] = "webcam"
    device: int = 0                 # webcam index
    mirror: bool = True             # mirror the webcam picture
    relative: bool = True           # relative to the driver's neutral (False: absolute parameters)
    head_pose: bool = True          # carry the head's pose over
    gaze: bool = True               # carry the gaze over
    smoothing: float = 0.5          # One-Euro smoothing strength, 0..1
    record_camera: bool = True      # recordings started while driving show the camera beside the avatar


@dataclass(frozen=True)
class RefineOptions:
    """The Refine section: which preset (presets/refine) and from which avatar."""

    preset: str = "fast"
    from_current: bool = False      # start from the avatar on stage, not the video's reference frame


@dataclass
class UiState:
    """Everything the panel edits. The render reads it through the service."""

    weights: dict[str, float] = field(default_factory=dict)
    pose: Pose = Pose()
    view: OrbitView = OrbitView()
    resolution: int = 512
    video: Path | None = None
    export_dir: Path = Path("out")
    drive: DriveOptions = DriveOptions()
    refine: RefineOptions = RefineOptions()


@dataclass
class Stats:
    ui_frames: int = 0
    shown: int = 0              # new avatar frames put on stage
    since: float = 0.0
    ui_fps: float = 0.0
    avatar_fps: float = 0.0
    requested: int = 0          # render requests up to `since`
