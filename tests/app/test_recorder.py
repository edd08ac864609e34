from pathlib import Path

import numpy as np
import pytest

from engine.io.media import VideoReader
from spatialavatar_app.app.recorder import Recorder


def test_recording_plays_in_real_time(tmp_path):
    rec = Recorder(tmp_path / "r.mp4", fps=20)
    img = np.zeros((32, 48, 3), np.uint8)
    for k, t in enumerate(np.arange(0, 1.0, 0.13)):          # irregular UI frames over ~1 s
        img = img.copy()
        img[..., 0] = 25 * k
        rec.tick(float(t), img if k % 2 == 0 else None)
    path = rec.stop()
    assert rec.frames == int(0.91 * 20) + 1
    with VideoReader(path) as v:
        assert v.size == (48, 32) and v.fps == pytest.approx(20)
        assert sum(1 for _ in v) == rec.frames


def test_stopping_before_any_frame_says_so(tmp_path):
    with pytest.raises(ValueError, match="nothing was recorded"):
        Recorder(tmp_path / "r.mp4").stop()


def test_a_failing_encoder_never_blocks_the_ui_and_ends_with_its_message(tmp_path, monkeypatch):
    """An encoder that dies after one frame: ticks beyond its queue's size return at once, the
    next tick raises the failure, and stop() says it too."""
    import threading
    import time

    import engine.io.media as media

    def dies(path, frames, fps):
        next(iter(frames))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(media, "write_video", dies)
    rec = Recorder(tmp_path / "r.mp4", fps=30)
    img = np.zeros((16, 16, 3), np.uint8)
    done = threading.Event()
    seen: list[str] = []

    def ui() -> None:
        try:
            for k in range(400):                     # 400 frames due: far more than the queue holds
                rec.tick(k / 30, img)
                time.sleep(0.001)
        except OSError as e:
            seen.append(str(e))
        done.set()

    threading.Thread(target=ui, daemon=True).start()
    assert done.wait(10), "a tick blocked on the dead encoder"
    assert seen and "No space left on device" in seen[0] and str(tmp_path / "r.mp4") in seen[0]
    with pytest.raises(OSError, match="No space left on device"):
        rec.stop()


def test_a_full_disk_while_recording_keeps_the_file_that_was_there(tmp_path):
    """The real encoder under a file-size limit (a full disk, RLIMIT_FSIZE in a child process):
    the recording ends with a message within a second of the failure, the UI's ticks never
    wait, and the MP4 that was at that path before is untouched."""
    import json
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "r.mp4"
    out.write_bytes(b"an earlier recording")
    script = textwrap.dedent(f"""
        import json, resource, signal, sys, time
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from spatialavatar_app.app.recorder import Recorder
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        rng = np.random.default_rng(0)
        rec, worst, error = Recorder({str(out)!r}, fps=30), 0.0, None
        for k in range(600):
            t = time.perf_counter()
            try:
                rec.tick(k / 30, rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
            except OSError as e:
                error = str(e)
                break
            worst = max(worst, time.perf_counter() - t)
            time.sleep(0.01)
        try:
            rec.stop()
        except OSError as e:
            error = error or str(e)
        print(json.dumps({{"error": error, "worst_tick": worst}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["error"] and "recording to" in res["error"]
    assert res["worst_tick"] < 0.5
    assert out.read_bytes() == b"an earlier recording"
    assert not [p for p in tmp_path.iterdir() if p.name != "r.mp4"]        # no hidden temp file left
