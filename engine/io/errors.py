"""The one exception raised for unreadable avatar, point-cloud and parameter files."""
from __future__ import annotations

import os


class AvatarFileError(ValueError):
    """A file could not be read because its content is wrong (not because it is missing).

    The message always starts with the file's path, followed by what is wrong, e.g.
    ``"face.savatar: checksum mismatch for maps/color.npy"``. A missing file raises the
    ordinary ``FileNotFoundError`` instead.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
