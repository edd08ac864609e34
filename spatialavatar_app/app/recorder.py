"""MP4 recording of what the stage shows, at a steady frame rate: the newest frame is repeated
or dropped so the video plays in real time. Encoding runs on its own thread."""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np


class Recorder:
    def __init__(self, path: Path, fps: float = 30.0) -> None:
        from engine.io.media import write_video

        self.path, self.fps = Path(path), fps
        self.frames = 0
        self.error: str | None = None
        self._queue: "queue.Queue[np.ndarray | None]" = queue.Queue(maxsize=120)
        self._start: float | None = None
        self._latest: np.ndarray | None = None

        def frames():
            while (f := self._queue.get()) is not None:
                yield f

        def run() -> None:
            try:
                write_video(self.path, frames(), fps)
            except Exception as e:  # noqa: BLE001 - reported by the app
                self.error = str(e)

        self._thread = threading.Thread(target=run, name="recorder", daemon=True)
        self._thread.start()

    def tick(self, now: float, image: np.ndarray | None) -> None:
        """Call every UI frame with the time and the newest stage image (uint8 [h, w, 3])."""
        if image is not None:
            if self._latest is not None and image.shape != self._latest.shape:
                return              # the stage changed size mid-recording: keep the first size
            self._latest = image
        if self._latest is None:
            return
        if self._start is None:
            self._start = now
        due = int((now - self._start) * self.fps) + 1
        while self.frames < due:
            self._queue.put(self._latest)
            self.frames += 1

    def stop(self) -> Path:
        """Finish the file (blocks until it is written)."""
        self._queue.put(None)
        self._thread.join()
        if self.frames == 0:
            raise ValueError("nothing was recorded")
        if self.error:
            raise OSError(f"recording to {self.path} failed: {self.error}")
        return self.path
