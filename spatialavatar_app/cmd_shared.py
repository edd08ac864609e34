"""What the `refine` and `eval refine` commands share: reading a tracking file, and a progress bar
per stage of the photometric tracking."""
from __future__ import annotations

from pathlib import Path


def tracked_from(path: Path, data, model):
    """``data`` on the tracking file ``path``; a file that does not fit the video ends the
    command with a message naming it (refine --tracking, eval refine)."""
    from engine.refine.session import load_tracking

    try:
        return load_tracking(path, data, model)
    except ValueError as e:
        raise SystemExit(str(e)) from e


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
