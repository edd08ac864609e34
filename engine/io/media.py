"""Reading portraits and videos for the tracker, and writing H.264 MP4 (overlays).

Everything comes out as uint8 [H, W, 3] RGB, whatever the file holds (grey, alpha, 16-bit),
no larger than ``max_side`` pixels on its longer side. Every problem with an input file raises
:class:`MediaError` naming the file, so a batch can report it and carry on with the next item.

Decoding uses OpenCV (``cv2.imdecode`` and ``cv2.VideoCapture`` on its bundled FFmpeg): on the
shared videos it decodes 1.1-1.4x as fast as imageio's ffmpeg pipe and it reads the frame
count from the container header. Writing uses imageio's ffmpeg plugin, which has libx264.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
_JPEG_MAGIC = b"\xff\xd8\xff"
MAX_PIXELS = 64_000_000
"""Images are decoded at most this large (8000x8000): a JPEG beyond it is decoded at 1/2, 1/4 or
1/8 size by the decoder itself; any other format beyond it is refused (a 20000² PNG decoded
in full took gigabytes before it was shrunk to 2048 px anyway)."""


class MediaError(ValueError):
    """An image or video could not be read; the message is ``"<path>: <problem>"``.

    Same shape as :class:`engine.io.errors.AvatarFileError` but not a subclass of it: that one
    promises a plain ``FileNotFoundError`` for missing files, while here a missing input is a
    :class:`MediaNotFoundError`, so ``except MediaError`` alone covers every bad batch item.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NoFramesError(ValueError):
    """`write_video` was given no frames; nothing was written."""


class MediaNotFoundError(MediaError, FileNotFoundError):
    """The input file does not exist (also a ``FileNotFoundError`` for callers that expect one)."""


def is_video(path: str | os.PathLike) -> bool:
    """True if ``path`` has a video suffix (case-insensitive); the content is not looked at."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _check_file(path: Path) -> None:
    """Raise MediaError unless ``path`` is an existing regular file."""
    if not path.exists():
        raise MediaNotFoundError(path, "no such file")
    if not path.is_file():
        raise MediaError(path, "not a regular file")


def _downscale_size(path: Path, width: int, height: int, max_side: int) -> tuple[int, int] | None:
    """(width, height) to resize to so the longer side is ``max_side``, or None if it fits.

    Warns once, naming the file and the scale, because the caller's pixel coordinates
    (landmarks, camera intrinsics) then refer to the smaller image.
    """
    scale = max_side / max(width, height)
    if scale >= 1.0:
        return None
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    warnings.warn(f"{path}: {width}x{height} is larger than {max_side} px, downscaled by "
                  f"{scale:.4f} to {size[0]}x{size[1]}", stacklevel=3)
    return size


def read_image(path: str | os.PathLike, max_side: int = 2048) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB with max(H, W) <= ``max_side``.

    - grey-scale is repeated into three equal channels;
    - alpha (RGBA, grey+alpha) is composited over white: a transparent cut-out then looks like
      a portrait on a plain light backdrop, instead of showing whatever colour the file stores
      under transparent pixels (often black or junk);
    - 16-bit samples are rounded to 8 bits (x / 257);
    - the EXIF orientation of JPEGs is applied (what phones write); other formats are read
      as stored, because OpenCV applies orientation only when it may also drop alpha;
    - a larger image is shrunk with area interpolation and a warning naming the file and scale.

    Raises :class:`MediaNotFoundError` for a missing file and :class:`MediaError` for an
    empty, unreadable or undecodable one.
    """
    path = Path(path)
    _check_file(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(path, f"cannot read ({e.strerror})") from None
    if not data:
        raise MediaError(path, "empty file")
    # JPEG has no alpha, so the decode mode that applies EXIF orientation loses nothing;
    # everything else is decoded untouched so alpha and 16-bit samples survive.
    jpeg = data.startswith(_JPEG_MAGIC)
    flags = cv2.IMREAD_COLOR if jpeg else cv2.IMREAD_UNCHANGED
    size = _header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        w, h = size
        if not jpeg:
            raise MediaError(path, f"{w}x{h} is {w * h / 1e6:.0f} megapixels, more than the {MAX_PIXELS / 1e6:.0f} "
                                   "read here; shrink it first (any size up to 8000x8000 is fine)")
        for factor, reduced in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (8, cv2.IMREAD_REDUCED_COLOR_8)):
            flags = reduced
            if w * h / factor ** 2 <= MAX_PIXELS:
                break
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise MediaError(path, f"not a decodable image ({e.err})") from None
    if img is None:
        raise MediaError(path, "not an image, or damaged, or in a format OpenCV cannot decode")
    rgb = _to_rgb8(path, img)
    size = _downscale_size(path, rgb.shape[1], rgb.shape[0], max_side)
    if size is not None:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image file's header, without decoding it (None if unknown)."""
    import io

    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None    # the size is wanted, not PIL's bomb check
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as im:
            warnings.simplefilter("ignore")
            return im.size
    except Exception:  # noqa: BLE001 - an unknown header: OpenCV decides
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _to_rgb8(path: Path, img: np.ndarray) -> np.ndarray:
    """OpenCV's decoded [H, W] / [H, W, 1|3|4] BGR(A), uint8 or uint16 -> uint8 [H, W, 3] RGB."""
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=1 / 257.0)      # rounded x / 257, no float copy of the image
    elif img.dtype != np.uint8:
        raise MediaError(path, f"unsupported sample type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 4:
        alpha = img[:, :, 3:].astype(np.float32) / 255.0
        img = np.round(img[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif channels != 3:
        raise MediaError(path, f"unsupported number of channels {channels}")
    return np.ascontiguousarray(img[:, :, ::-1])


class VideoReader:
    """The frames of a video, in order, as uint8 [H, W, 3] RGB with max(H, W) <= ``max_side``.

    A single-pass iterator and a context manager::

        with VideoReader("clip.mp4") as video:
            for rgb in video: ...

    ``fps`` and ``size`` = (width, height) of the frames it yields are known on opening;
    ``n_frames`` is the count in the container header: exact for MP4/MOV, an estimate from
    duration x fps for other containers, 0 if the header does not say.

    Opening raises :class:`MediaError` if the file is not a video, its codec is unsupported,
    or it is damaged so that not even the first frame decodes (e.g. an MP4 cut short before
    its index). If decoding stops more than one frame short of ``n_frames`` (an MP4 truncated
    mid-stream), iteration ends at the last good frame with a warning naming the file.
    """

    def __init__(self, path: str | os.PathLike, max_side: int = 2048) -> None:
        self.path = Path(path)
        _check_file(self.path)
        self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise MediaError(self.path, "not a readable video (unknown format, unsupported codec, "
                                        "or damaged or truncated file)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.n_frames = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        # Decode the first frame now, so a file that opens but holds no decodable picture fails
        # here with a clear message, and `size` is that of real frames (after any rotation).
        ok, first = self._cap.read()
        if not ok:
            self.close()
            raise MediaError(self.path, "no decodable video frame (damaged or truncated file)")
        if not self.fps > 0:
            self.close()
            raise MediaError(self.path, "no frame rate in the video header")
        h, w = first.shape[:2]
        self._resize_to = _downscale_size(self.path, w, h, max_side)
        self.size = self._resize_to or (w, h)
        self._pending: np.ndarray | None = first
        self._n_read = 0

    def _rgb(self, bgr: np.ndarray) -> np.ndarray:
        """One decoded BGR frame -> uint8 [H, W, 3] RGB at ``size``."""
        if self._resize_to is not None:
            bgr = cv2.resize(bgr, self._resize_to, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if self._pending is not None:
            bgr, self._pending = self._pending, None
        else:
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            if not ok:
                self._finish()
                raise StopIteration
        self._n_read += 1
        return self._rgb(bgr)

    def _finish(self) -> None:
        """Release the decoder at the end of the stream, warning if it ended early."""
        # One frame of slack: non-MP4 containers estimate the count from the duration.
        if self._cap is not None and self._n_read < self.n_frames - 1:
            warnings.warn(f"{self.path}: decoding stopped after {self._n_read} of {self.n_frames} "
                          f"frames (truncated or damaged file); using the frames read", stacklevel=3)
        self.close()

    def close(self) -> None:
        """Release the decoder; further iteration yields nothing. Safe to call twice."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> None:
    """Write uint8 [H, W, 3] RGB frames (all the same size) to an H.264 MP4 at ``fps``.

    yuv420p (what every player accepts) needs even sides, so an odd width or height is padded
    by repeating the last column/row rather than resized. ``crf`` is x264's quality (18 is
    close to visually lossless, 23 its default). The index goes at the front of the file
    (``+faststart``) so browsers can play it while loading. The file replaces ``path``
    atomically: on any error an existing file there is left untouched. No frames at all raise
    `NoFramesError` and write nothing.
    """
    import imageio.v2 as iio  # imported here: only writers need it

    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".mp4")
    os.close(fd)
    try:
        writer = None
        shape = None
        for i, frame in enumerate(frames):
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame {i}: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
            if shape is None:
                shape = frame.shape
                # macro_block_size=1: imageio must not resize; the padding below keeps sides even.
                writer = iio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                        pixelformat="yuv420p", quality=None, macro_block_size=1,
                                        ffmpeg_log_level="error",
                                        output_params=["-crf", str(crf), "-movflags", "+faststart"])
            elif frame.shape != shape:
                raise ValueError(f"frame {i}: size {list(frame.shape)} differs from frame 0's {list(shape)}")
            pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
            writer.append_data(np.pad(frame, pad, mode="edge") if any(p[1] for p in pad) else frame)
        if writer is None:
            raise NoFramesError(f"{path}: no frames to write")
        writer.close()
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        from engine.atomic import abandon

        abandon(tmp, path, e)
        raise
