"""Long work (build, refine, export) on one worker thread, reporting through a queue that the
UI thread drains every frame. One job at a time; a new one is refused while one runs."""
from __future__ import annotations

import queue
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Literal

from engine.jobs import Cancelled


@dataclass(frozen=True)
class JobEvent:
    job: str
    kind: Literal["progress", "done", "failed", "cancelled"]
    fraction: float = 0.0
    text: str = ""
    value: Any = None     # done: the job's result; progress: an optional payload (e.g. a preview)
    then: Callable[[Any], None] | None = None   # done: what the UI thread does with the result


class Reporter:
    """What a job gets: report progress, see whether it was cancelled."""

    def __init__(self, name: str, events: "queue.Queue[JobEvent]", cancel: threading.Event) -> None:
        self.name, self._events, self.cancel = name, events, cancel

    def progress(self, fraction: float, text: str = "", value: Any = None) -> None:
        self._events.put(JobEvent(self.name, "progress", fraction, text, value))


class Jobs:
    def __init__(self) -> None:
        self.events: "queue.Queue[JobEvent]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self.current: str | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, name: str, work: Callable[[Reporter], Any], then: Callable[[Any], None] | None = None) -> bool:
        """Run ``work(reporter)`` on the worker thread; False (nothing started) while a job runs.
        Its done event carries ``then``, which the UI thread calls with the result: each job
        says what its result means, so nothing dispatches on job names."""
        if self.busy:
            return False
        self._cancel = threading.Event()
        self.current = name
        reporter = Reporter(name, self.events, self._cancel)

        def run() -> None:
            try:
                value = work(reporter)
            except Cancelled:
                self.events.put(JobEvent(name, "cancelled", text=f"{name} cancelled"))
            except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a crash
                traceback.print_exc()
                self.events.put(JobEvent(name, "failed", text=f"{name} failed: {e}"))
            else:
                self.events.put(JobEvent(name, "done", 1.0, value=value, then=then))

        self._thread = threading.Thread(target=run, name=f"job-{name}", daemon=True)
        self._thread.start()
        return True

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> list[JobEvent]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out
