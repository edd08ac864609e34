"""MP4 recording of what the stage shows, at a steady frame rate: the newest frame is repeated
or dropped so the video plays in real time. Encoding runs on its own thread; the UI thread
never waits for it: a frame the encoder cannot take at once is dropped and counted, and an
encoder that fails (a full disk, an ffmpeg error) ends the recording with its message."""
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
        self.dropped = 0        # frames the encoder's queue had no room for
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
        """Call every UI frame with the time and the newest stage image (uint8 [h, w, 3]).
        Never blocks; raises OSError once the encoder has failed."""
        if self.error is not None or not self._thread.is_alive():
            raise OSError(f"recording to {self.path} failed: {self.error or 'the encoder stopped'}")
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
            try:
                self._queue.put_nowait(self._latest)
            except queue.Full:
                self.dropped += 1
            self.frames += 1

    def stop(self) -> Path:
        """Finish the file (blocks until the encoder has written what it was given)."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        if self.frames == 0:
            raise ValueError("nothing was recorded")
        if self.error:
            raise OSError(f"recording to {self.path} failed: {self.error}")
        return self.path
