"""What the commands share: the compute device, head model and generator options, the avatar a
command poses (`Source`), the render-size bound, and a progress bar per stage of a long job."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.generator.registry import GeneratorChoice, GeneratorName


@dataclass
class OnDevice:
    """The ``--device`` option of every command that computes: resolved once per process
    (`engine.device.resolve`, which `main` calls before the command runs) and passed down
    through the head model."""

    device: str = dataclasses.field(default="auto", kw_only=True)
    """Compute device: auto (CUDA when a CUDA renderer renders here, else the CPU), cpu, cuda or
    cuda:N. A CUDA renderer that fails falls back to the CPU with one line saying why."""

    def compute_device(self):
        """The process's device for ``--device`` (decided on the first call, said once)."""
        from engine.device import resolve

        return resolve(self.device)


@dataclass
class OnHeadModel:
    """The ``--head-model`` option of every command that loads a head model."""

    head_model: Optional[Path] = dataclasses.field(default=None, kw_only=True)
    """A FLAME folder or .pkl to use instead of OpenHead (avatars, checkpoints and trackings must
    have been made for it)."""

    def load_model(self, device=None):
        """The head model ``--head-model`` names (OpenHead without it) on ``device``."""
        from engine.headmodel.openhead import load_head_model

        return load_head_model(self.head_model, device)


@dataclass
class OnGenerator:
    """The ``--generator`` and ``--checkpoint`` options of every command that builds avatars."""

    generator: GeneratorName = dataclasses.field(default="projective", kw_only=True)
    """How portraits become an avatar (engine.generator.registry): projective, the parameter-free
    stage; network, the paper's trained network (needs --checkpoint; its avatars follow the view
    and the expression)."""
    checkpoint: Optional[Path] = dataclasses.field(default=None, kw_only=True)
    """The trained generator's weights: OUT/network.pt of `python main.py train`."""

    def generator_choice(self) -> GeneratorChoice:
        """The generator asked for, checked (an unknown name or a missing file fails now)."""
        choice = GeneratorChoice(self.generator, self.checkpoint)
        choice.check()
        return choice


@dataclass(frozen=True)
class Source:
    """Which avatar, on which head model."""

    avatar: Optional[Path] = None
    """Avatar bundle (.savatar); the built-in default avatar (built from a public-domain NASA
    portrait) when omitted; `plain` for the untextured mannequin."""
    head_model: Optional[Path] = None
    """A FLAME folder or .pkl to use instead of OpenHead (the avatar must have been made for it)."""

    def service(self, device=None, renderer: str | None = None):
        """The engine's `AvatarService` on this avatar, the head model on ``device`` (the resolved
        one), rendering with ``renderer`` (None: the best here)."""
        from engine.headmodel.openhead import load_head_model
        from engine.service import AvatarService, open_avatar

        model = load_head_model(self.head_model, device)
        return AvatarService(model, open_avatar(self.avatar, model), renderer=renderer)

    def load(self, device=None):
        """(AnimatedAvatar, HeadModel), the head model on ``device`` (the resolved one): for the
        evaluations, which pose the avatar frame by frame themselves."""
        from engine.animate import AnimatedAvatar
        from engine.headmodel.openhead import load_head_model
        from engine.service import open_avatar

        model = load_head_model(self.head_model, device)
        return AnimatedAvatar(open_avatar(self.avatar, model), model), model


MAX_RENDER_SIZE = 8192
"""The largest render side a command accepts, pixels."""


def check_render_size(flag: str, size: int) -> None:
    """ValueError naming ``flag`` unless ``size`` is a render side from 16 to `MAX_RENDER_SIZE`."""
    if not 16 <= size <= MAX_RENDER_SIZE:
        raise ValueError(f"{flag} {size}: renders are 16 to {MAX_RENDER_SIZE} pixels a side")


class StageBars:
    """A progress bar per stage of a ``progress(stage, fraction)`` callback, one after the other."""

    def __init__(self) -> None:
        self.stage, self.bar = None, None

    def __call__(self, stage: str, fraction: float) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, tqdm(total=100, desc=stage, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                                                                                 "{elapsed}<{remaining}")
        self.bar.n = round(100 * fraction)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "StageBars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
