"""The hostile-input suite's harness: the real command line run as a user would, in a child
process, and what it left: exit code, stderr's last line, peak memory, seconds. The rows are
printed as one table at the end of the test run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The child records its own peak resident set at exit (SystemExit included), so each case's
# memory is its own and no tool outside Python is needed. Linux's VmHWM is the high-water mark
# of the child's own address space; getrusage's ru_maxrss is not: it keeps the parent's peak
# across fork and exec, so under a pytest process of 1.8 GB every child read 1.8 GB.
_WRAPPER = """
import atexit, resource, runpy, sys
out = sys.argv.pop(1)
def peak_kb():
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
atexit.register(lambda: open(out, "w").write(str(peak_kb())))
sys.argv[0] = "main.py"
runpy.run_path("main.py", run_name="__main__")
"""


@dataclass
class Outcome:
    code: int
    stderr: str
    peak_mb: float
    seconds: float

    def assert_one_clear_line(self, *words: str, code: int = 1) -> None:
        """Exit ``code``, no traceback, and a last line that starts with ``error:`` and holds ``words``."""
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        assert self.code == code, self.stderr[-2000:]
        assert self.last_line.startswith("error: "), self.last_line
        for w in words:
            assert w in self.last_line, (w, self.last_line)

    @property
    def last_line(self) -> str:
        """The last line a user reads (mediapipe's and TensorFlow's log lines left out)."""
        lines = [ln for ln in self.stderr.splitlines()
                 if ln.strip() and not ln.startswith(("W0000", "I0000", "INFO:", "WARNING: All log"))]
        return lines[-1] if lines else ""


def run_cli(*args: str | os.PathLike, tmp: Path, timeout: float = 300) -> Outcome:
    """``python main.py ARGS`` in the repository, on the CPU (CUDA hidden, so every command,
    with a ``--device`` option or without, runs as on a machine without a GPU), with ``tmp`` for
    its peak-memory note."""
    note = tmp / f".peak-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, str(note), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""})
    seconds = time.perf_counter() - t0
    peak = int(note.read_text()) / 1024 if note.exists() else float("nan")
    note.unlink(missing_ok=True)
    return Outcome(proc.returncode, proc.stderr, peak, seconds)


class Payload:
    """A pickle that, if unpickled with full pickle, creates the file it names: what the program
    reads with full pickle would leave the marker behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file a `Payload` creates when it is run; it must never appear."""
    return tmp_path / "payload-ran"


@pytest.fixture
def payload(marker) -> Payload:
    return Payload(marker)


@pytest.fixture
def earlier() -> bytes:
    return b"an earlier render the user kept"


@pytest.fixture
def kept(tmp_path, earlier) -> Path:
    """An output file the user already has; every failing case must leave it as it was."""
    path = tmp_path / "render.png"
    path.write_bytes(earlier)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, openhead) -> Path:
    """A small valid avatar bundle (the plain OpenHead avatar)."""
    from engine.generator.plain import plain_avatar
    from engine.headmodel.base import HeadModel
    from engine.io import save_avatar

    path = tmp_path_factory.mktemp("bundle") / "plain.savatar"
    save_avatar(plain_avatar(HeadModel(openhead)), path)
    return path


_ROWS: list[dict] = []


@pytest.fixture
def cli(tmp_path, request):
    """``cli(*args)``: run ``python main.py ARGS`` and record the case's row under the test's id."""
    def run(*args, timeout: float = 300) -> Outcome:
        out = run_cli(*args, tmp=tmp_path, timeout=timeout)
        _ROWS.append({"case": request.node.name.removeprefix("test_"), "exit": out.code,
                      "last_line": out.last_line.replace(f"{tmp_path}{os.sep}", "")[:110], "peak_mb": out.peak_mb, "seconds": out.seconds})
        return out
    return run


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    tr = terminalreporter
    tr.section("hostile inputs: what each command did")
    tr.write_line(f"{'case':<44} {'exit':>4} {'peak MB':>7} {'s':>5}  last line")
    for r in _ROWS:
        tr.write_line(f"{r['case'][:44]:<44} {r['exit']:>4} {r['peak_mb']:>7.0f} {r['seconds']:>5.1f}  {r['last_line']}")
