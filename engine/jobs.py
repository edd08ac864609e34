"""The shape every long job of the engine shares (building, tracking, photometric tracking,
refining): progress reported as ``progress(stage, fraction)`` (a stage name and the fraction of
it done, in [0, 1]), cancellation asked through a `threading.Event`, and one exception,
`Cancelled`, raised by whichever job sees the event set."""
from __future__ import annotations

import threading
from typing import Callable

Progress = Callable[[str, float], None]
"""(stage, fraction done in [0, 1])."""


class Cancelled(Exception):
    """A long job stopped because its cancel event was set. What it was building is dropped;
    a refinement's last checkpoint stays loadable."""


def check(cancel: threading.Event | None) -> None:
    """Raise `Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled()
