"""Atomic file replacement: every writer of the program (avatars, trackings, videos, images,
the head-model cache) replaces its target whole or not at all."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def _temp_beside(path: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder (made if missing); OSError naming ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)   # an output folder that does not exist yet is made
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as e:
        raise OSError(e.errno, f"{path}: cannot be written ({e.strerror or e})") from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only once the ``with`` block succeeds.

    The data goes to a temporary file in the same folder (so ``os.replace`` is an atomic
    rename on the same file system), is flushed and fsynced, then renamed over ``path``.
    If the block raises, the temporary file is deleted and an existing ``path`` is left
    byte-for-byte untouched: a crash never leaves a half-written file under the real name.
    """
    path = Path(path)
    fd, tmp = _temp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; keep the permissions of the file being replaced,
        # or use the usual 0644 for a new file.
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        abandon(tmp, path, e)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same suffix (for writers that take a file
    name: imageio, numpy, matplotlib); it replaces ``path`` only once the block succeeds, and is
    deleted if it raises, so an existing ``path`` is never left half-written."""
    path = Path(path)
    fd, tmp = _temp_beside(path, path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        abandon(tmp, path, e)
        raise


def abandon(tmp: str | os.PathLike, path: Path, error: BaseException) -> None:
    """After a failed write to ``tmp`` for ``path``: delete ``tmp``; an OSError (a full disk)
    becomes one naming ``path``. The caller re-raises anything else."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if isinstance(error, OSError) and str(path) not in str(error):
        raise OSError(error.errno, f"{path}: could not be written ({error.strerror or error}); "
                                   "a file that was there is kept") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path.write_text(text)``, atomically (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text.encode())


def check_writable(*paths: str | os.PathLike) -> None:
    """OSError naming the path when a file cannot be written at ``path`` (its folder cannot be
    made, is read-only or is not a folder), checked by writing and removing a temporary file
    beside it: commands that work for minutes before they write call this first."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path}: is a folder; give a file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".check")
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise OSError(f"{path}: cannot be written ({e.strerror or e}); choose another output") from None
