"""Atomic writers by file name (for imageio, numpy, matplotlib) and the up-front writability check."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.io import check_writable
from engine.atomic import atomic_path, write_text_atomic


def test_atomic_path_replaces_only_when_the_block_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "a.npz"
    out.write_bytes(b"earlier")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            assert tmp.suffix == ".npz" and tmp.parent == tmp_path
            np.savez(tmp, x=np.arange(3))
            raise RuntimeError("the writer failed half-way")
    assert out.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
    with atomic_path(out) as tmp:
        np.savez(tmp, x=np.arange(3))
    assert np.load(out)["x"].tolist() == [0, 1, 2] and sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def test_write_text_atomic_makes_the_folder(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "new" / "c.json", "{}\n")
    assert (tmp_path / "new" / "c.json").read_text() == "{}\n"


def test_check_writable_names_the_path_and_leaves_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path / "sub" / "x.savatar")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"file/x.savatar: cannot be written"):
        check_writable(tmp_path / "file" / "x.savatar")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_writable(tmp_path / "sub")
