"""The native extension's build folder: atomic, shared by checkouts, never stuck on what a killed
build left. A fake compiler stands in for the minute-long C++ build (every other test loads the
real extension through the same code)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.native import NativeBuildError, ensure_built

NAME = "ext_x"


def fake_compiler(calls: list, delay: float = 0.0, fail: bool = False):
    def compile_into(folder: Path) -> None:
        calls.append(folder)
        time.sleep(delay)
        (folder / "build.ninja").write_text("partial")
        if fail:
            raise KeyboardInterrupt                       # Ctrl-C during the compile
        (folder / f"{NAME}.so").write_bytes(b"ELF")
    return compile_into


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_build_is_renamed_into_place_and_then_reused(tmp_path):
    final, calls, lines = tmp_path / "native_k", [], []
    so = ensure_built(final, NAME, fake_compiler(calls), log=lines.append)
    assert so == final / f"{NAME}.so" and so.read_bytes() == b"ELF" and len(calls) == 1
    assert calls[0] != final and not calls[0].exists()          # compiled elsewhere, moved whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["native_k"]
    assert any("compiling" in x for x in lines)
    assert ensure_built(final, NAME, fake_compiler(calls)) == so and len(calls) == 1


def test_what_a_killed_build_left_is_cleared_not_waited_on(tmp_path):
    """The old failure: a run killed during the compile left a lock, and every later start slept on it."""
    final, calls = tmp_path / "native_k", []
    final.mkdir()
    (final / "lock").write_text("")                              # an interrupted build of older code
    pid = dead_pid()
    (tmp_path / "native_k.building").write_text(str(pid))
    (tmp_path / f"native_k.tmp-{pid}-abc").mkdir()               # its half-built folder
    t0 = time.monotonic()
    so = ensure_built(final, NAME, fake_compiler(calls), log=lambda s: None)
    assert time.monotonic() - t0 < 5 and so.exists() and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["native_k"]
    assert not (final / "lock").exists()


def test_an_interrupted_build_leaves_nothing_behind(tmp_path):
    final, calls = tmp_path / "native_k", []
    with pytest.raises(KeyboardInterrupt):
        ensure_built(final, NAME, fake_compiler(calls, fail=True), log=lambda s: None)
    assert list(tmp_path.iterdir()) == []
    assert ensure_built(final, NAME, fake_compiler(calls), log=lambda s: None).exists()


def test_a_compiler_that_leaves_no_library_is_an_error(tmp_path):
    with pytest.raises(NativeBuildError, match="left no ext_x.so"):
        ensure_built(tmp_path / "native_k", NAME, lambda folder: None, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_a_build_in_progress_elsewhere_is_waited_for_and_said(tmp_path):
    """Another live process compiling: this one says so, waits, and uses its build."""
    final, calls, lines = tmp_path / "native_k", [], []
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "native_k.building").write_text(str(other.pid))

        def finish() -> None:
            time.sleep(1.0)
            (tmp_path / "staged").mkdir()
            (tmp_path / "staged" / f"{NAME}.so").write_bytes(b"THEIRS")
            (tmp_path / "staged").rename(final)
            (tmp_path / "native_k.building").unlink()

        threading.Thread(target=finish).start()
        so = ensure_built(final, NAME, fake_compiler(calls), log=lines.append)
    finally:
        other.kill()
    assert so.read_bytes() == b"THEIRS" and calls == []
    assert any(f"waiting for process {other.pid}" in x for x in lines)


def test_two_builders_at_once_end_with_one_build(tmp_path):
    final, calls, results = tmp_path / "native_k", [], []
    threads = [threading.Thread(target=lambda: results.append(
        ensure_built(final, NAME, fake_compiler(calls, delay=0.3), log=lambda s: None))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(r == final / f"{NAME}.so" and r.exists() for r in results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["native_k"]
