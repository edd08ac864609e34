"""Tests for engine.io.media: every kind of image becomes uint8 RGB, videos decode with the right
count and rate, bad files raise MediaError naming the file, written MP4s read back."""
from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v2 as iio
import numpy as np
import pytest
from PIL import Image
from skimage import data

from engine.io.media import MediaError, MediaNotFoundError, VideoReader, is_video, read_image, write_video

ASTRONAUT = data.astronaut()  # uint8 [512, 512, 3], public-domain NASA portrait


def save(path: Path, rgb_or_grey: np.ndarray) -> Path:
    """Write with OpenCV (BGR order for colour, any channel count / depth)."""
    img = rgb_or_grey
    if img.ndim == 3 and img.shape[2] >= 3:
        img = np.concatenate([img[:, :, 2::-1], img[:, :, 3:]], axis=2)
    assert cv2.imwrite(str(path), img)
    return path


def moving_colour(n: int = 10, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """n uint8 [h, w, 3] frames: a flat colour that changes each frame plus a moving white bar."""
    frames = []
    for i in range(n):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = (20 * i, 200 - 15 * i, 100)
        f[:, 8 * i:8 * i + 8] = 255
        frames.append(f)
    return frames


def imageio_mp4(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """A plain imageio/ffmpeg MP4, index at the end of the file (ffmpeg's default)."""
    w = iio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=16,
                       ffmpeg_log_level="error")
    for f in frames:
        w.append_data(f)
    w.close()
    return path


def truncate(src: Path, dst: Path) -> Path:
    b = src.read_bytes()
    dst.write_bytes(b[:len(b) // 2])
    return dst


# --- images ----------------------------------------------------------------------------------

def test_png_round_trip_exact(tmp_path: Path) -> None:
    img = read_image(save(tmp_path / "a.png", ASTRONAUT))
    assert img.dtype == np.uint8 and img.shape == (512, 512, 3)
    np.testing.assert_array_equal(img, ASTRONAUT)


def test_jpeg_close_to_original(tmp_path: Path) -> None:
    img = read_image(save(tmp_path / "a.jpg", ASTRONAUT))
    assert img.dtype == np.uint8 and img.shape == (512, 512, 3)
    assert np.abs(img.astype(int) - ASTRONAUT).mean() < 4  # JPEG loss only, channels not swapped


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_grey_becomes_three_equal_channels(tmp_path: Path, suffix: str) -> None:
    grey = cv2.cvtColor(ASTRONAUT, cv2.COLOR_RGB2GRAY)
    img = read_image(save(tmp_path / f"g{suffix}", grey))
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[:, :, 0], img[:, :, 1])
    np.testing.assert_array_equal(img[:, :, 0], img[:, :, 2])
    if suffix == ".png":
        np.testing.assert_array_equal(img[:, :, 0], grey)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    alpha = np.zeros((512, 512, 1), np.uint8)
    alpha[:256] = 255   # top half opaque
    alpha[256:384] = 0  # then fully transparent
    alpha[384:] = 128   # then half
    img = read_image(save(tmp_path / "a.png", np.concatenate([ASTRONAUT, alpha], axis=2)))
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[:256], ASTRONAUT[:256])
    assert (img[256:384] == 255).all()
    expected = np.round(ASTRONAUT[384:] * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(img[384:].astype(int) - expected).max() <= 1


def test_grey_alpha_is_composited_over_white(tmp_path: Path) -> None:
    grey = np.full((20, 30), 40, np.uint8)
    alpha = np.full((20, 30), 255, np.uint8)
    alpha[:, 15:] = 0
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    img = read_image(path)
    assert img.shape == (20, 30, 3)
    assert (img[:, :15] == 40).all() and (img[:, 15:] == 255).all()


def test_16_bit_becomes_8_bit(tmp_path: Path) -> None:
    img = read_image(save(tmp_path / "a16.png", ASTRONAUT.astype(np.uint16) * 257))
    assert img.dtype == np.uint8
    np.testing.assert_array_equal(img, ASTRONAUT)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)  # landscape as stored, left half red
    stored[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.shape == (40, 20, 3)  # displayed upright: portrait
    assert img[:15, :, 0].mean() > 200 and img[25:, :, 0].mean() < 50  # red (was left) now on top


def test_large_image_is_downscaled_with_warning(tmp_path: Path) -> None:
    tall = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (5000, 1, 3))
    path = save(tmp_path / "tall.png", tall)
    with pytest.warns(UserWarning, match=r"tall\.png.*downscaled by 0\.4096"):
        img = read_image(path)
    assert img.shape == (2048, 123, 3)  # 5000 x 300 scaled by 2048 / 5000
    with pytest.warns(UserWarning, match="0.1024"):
        assert read_image(path, max_side=512).shape == (512, 31, 3)


def test_image_within_max_side_is_not_resized_or_warned(tmp_path: Path, recwarn) -> None:
    assert read_image(save(tmp_path / "a.png", ASTRONAUT), max_side=512).shape == (512, 512, 3)
    assert not recwarn.list


@pytest.mark.parametrize("name, content, problem", [
    ("x.png", b"this is not an image\n", "not an image"),
    ("empty.jpg", b"", "empty file"),
    ("cut.png", None, "not an image"),  # a PNG cut in half
])
def test_bad_images_raise_media_error_naming_the_file(tmp_path: Path, name: str, content, problem: str) -> None:
    path = tmp_path / name
    if content is None:
        truncate(save(tmp_path / "full.png", ASTRONAUT), path)
    else:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=problem) as e:
        read_image(path)
    assert e.value.path == str(path) and name in str(e.value)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFoundError, match="nope.png: no such file") as e:
        read_image(tmp_path / "nope.png")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, MediaError)
    with pytest.raises(MediaError, match="not a regular file"):
        read_image(tmp_path)


def test_is_video() -> None:
    assert is_video("a/b.MP4") and is_video("c.webm") and is_video(Path("d.m4v"))
    assert not is_video("a.png") and not is_video("mp4")


# --- videos ----------------------------------------------------------------------------------

def test_video_reader_counts_rate_and_colours(tmp_path: Path) -> None:
    frames = moving_colour()
    path = imageio_mp4(tmp_path / "clip.mp4", frames, fps=12.5)
    with VideoReader(path) as video:
        assert video.fps == 12.5 and video.n_frames == 10 and video.size == (96, 64)
        got = list(video)
    assert len(got) == 10
    for want, have in zip(frames, got):
        assert have.dtype == np.uint8 and have.shape == (64, 96, 3)
        # the bar never reaches columns 88+: right colour in RGB order despite H.264 loss
        assert np.abs(have[:, 88:].astype(int) - want[:, 88:]).mean() < 6


def test_video_reader_downscales_with_warning(tmp_path: Path) -> None:
    path = imageio_mp4(tmp_path / "clip.mp4", moving_colour(3), fps=10)
    with pytest.warns(UserWarning, match=r"clip\.mp4.*downscaled by 0\.5000"):
        video = VideoReader(path, max_side=48)
    assert video.size == (48, 32)
    assert [f.shape for f in video] == [(32, 48, 3)] * 3


def test_video_reader_after_close_yields_nothing(tmp_path: Path) -> None:
    video = VideoReader(imageio_mp4(tmp_path / "clip.mp4", moving_colour(3), fps=10))
    next(video)
    video.close()
    video.close()
    assert list(video) == []


def test_truncated_mid_stream_stops_at_last_good_frame_with_warning(tmp_path: Path) -> None:
    # write_video puts the index first (+faststart), so half the file still opens and decodes
    # part of the stream; noisy frames make each frame big enough that half the file is ~half
    # the frames.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(20)]
    full = tmp_path / "full.mp4"
    write_video(full, frames, fps=10)
    cut = truncate(full, tmp_path / "cut.mp4")
    with pytest.warns(UserWarning, match=r"cut\.mp4: decoding stopped after \d+ of 20 frames"):
        with VideoReader(cut) as video:
            got = list(video)
    assert 0 < len(got) < 20


def test_truncated_before_index_raises(tmp_path: Path) -> None:
    full = imageio_mp4(tmp_path / "full.mp4", moving_colour(), fps=10)  # index at the end
    cut = truncate(full, tmp_path / "cut.mp4")
    with pytest.raises(MediaError, match="cut.mp4: not a readable video"):
        VideoReader(cut)


@pytest.mark.parametrize("name, content", [("x.mp4", b"just some text\n"), ("empty.mov", b"")])
def test_non_video_raises(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError, match=f"{name}: not a readable video") as e:
        VideoReader(path)
    assert e.value.path == str(path)


def test_missing_video() -> None:
    with pytest.raises(MediaNotFoundError, match="gone.mp4: no such file"):
        VideoReader("gone.mp4")


def test_write_video_round_trip_odd_size(tmp_path: Path) -> None:
    frames = [f[:63, :95] for f in moving_colour()]  # odd sides: padded to even
    path = tmp_path / "out.mp4"
    write_video(path, iter(frames), fps=25)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp file left
    with VideoReader(path) as video:
        assert video.fps == 25 and video.n_frames == 10 and video.size == (96, 64)
        first = next(video)
    assert np.abs(first[:63, 88:95].astype(int) - frames[0][:, 88:]).mean() < 3


def test_write_video_failure_leaves_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")

    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        yield np.zeros((16, 32, 3), np.uint8)  # size change: error mid-write

    with pytest.raises(ValueError, match="frame 1: size"):
        write_video(path, frames(), fps=10)
    with pytest.raises(ValueError, match="no frames"):
        write_video(path, [], fps=10)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (8-bit RGB) with no image data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def test_a_huge_png_is_refused_from_its_header(tmp_path: Path) -> None:
    """A 20000² PNG was decoded in full (gigabytes) before the 2048-px shrink."""
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(MediaError, match=r"huge.png: 20000x20000 is 400 megapixels, more than the 64"):
        read_image(path)


def test_a_huge_jpeg_is_decoded_at_a_fraction_of_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    img = np.zeros((8000, 9000), np.uint8)
    img[:, 4500:] = 200
    cv2.imwrite(str(path), img)
    with pytest.warns(UserWarning, match="big.jpg: 4500x4000 is larger than 2048 px"):
        rgb = read_image(path)
    assert rgb.shape == (1820, 2048, 3)
    assert rgb[:, :1000].max() < 10 and rgb[:, 1100:].min() > 190
