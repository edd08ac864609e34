"""What the commands share: the compute device option; for `refine` and `eval refine`, reading a
tracking file and a progress bar per stage of the photometric tracking."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path


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


MAX_RENDER_SIZE = 8192
"""The largest render side a command accepts, pixels."""


def check_render_size(flag: str, size: int) -> None:
    """ValueError naming ``flag`` unless ``size`` is a render side from 16 to `MAX_RENDER_SIZE`."""
    if not 16 <= size <= MAX_RENDER_SIZE:
        raise ValueError(f"{flag} {size}: renders are 16 to {MAX_RENDER_SIZE} pixels a side")


def tracked_from(path: Path, data, model):
    """``data`` on the tracking file ``path``; ValueError naming the file when it does not fit
    the video (refine --tracking, eval refine)."""
    from engine.refine.session import load_tracking

    return load_tracking(path, data, model)


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
