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
