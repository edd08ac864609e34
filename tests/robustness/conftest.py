"""The hostile-input suite's harness: the real command line run as a user would, in a child
process, and what it left: exit code, stderr, peak memory, seconds. The rows are printed as one
table at the end of the test run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each case runs in a child forked from one warm process (the "zygote") that has imported
# torch, OpenCV, tyro and the program once: a fresh interpreter spent ~2.5 s of every case on
# those imports. The child then runs main.py as `python main.py ARGS` would (its own stderr, exit
# status and SystemExit handling) and records its own peak resident set: Linux's VmHWM, the
# high-water mark of the child's address space, which starts at the zygote's ~0.3 GB (getrusage's
# ru_maxrss is not the child's own: it keeps a parent's peak across fork and exec).
_ZYGOTE = r"""
import json, os, runpy, sys, traceback
import cv2, numpy, torch, tyro
import spatialavatar_app.cli, engine.io, engine.headmodel.openhead

def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))

def child(req):
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.argv = ["main.py", *req["args"]]
    code = 0
    try:
        runpy.run_path("main.py", run_name="__main__")
    except SystemExit as e:                      # as the interpreter treats it
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    with open(req["note"], "w") as f:
        f.write(str(peak_kb()))
    os._exit(code)

for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
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


class _Zygote:
    """The warm process that forks one child per case; started on first use."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, args: list[str], stderr: Path, note: Path, timeout: float) -> int:
        import json
        import signal
        import threading

        self.proc.stdin.write(json.dumps({"args": args, "stderr": str(stderr), "note": str(note)}) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]
        done: dict = {}             # read on a thread: the line may already sit in the stream's buffer
        reader = threading.Thread(target=lambda: done.update(json.loads(self.proc.stdout.readline())), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            os.kill(pid, signal.SIGKILL)
            reader.join(30)
            raise subprocess.TimeoutExpired(args, timeout)
        return done["code"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


_zygote: _Zygote | None = None


def run_cli(*args: str | os.PathLike, tmp: Path, timeout: float = 300) -> Outcome:
    """``python main.py ARGS`` in the repository, on the CPU (CUDA hidden, so every command,
    with a ``--device`` option or without, runs as on a machine without a GPU), with ``tmp`` for
    its stderr and peak-memory note."""
    global _zygote
    if _zygote is None or _zygote.proc.poll() is not None:
        _zygote = _Zygote()
    stamp = time.monotonic_ns()
    note, err = tmp / f".peak-{stamp}", tmp / f".stderr-{stamp}"
    t0 = time.perf_counter()
    code = _zygote.run([str(a) for a in args], err, note, timeout)
    seconds = time.perf_counter() - t0
    peak = int(note.read_text()) / 1024 if note.exists() else float("nan")
    stderr = err.read_text(errors="replace") if err.exists() else ""
    note.unlink(missing_ok=True)
    err.unlink(missing_ok=True)
    return Outcome(code, stderr, peak, seconds)


def pytest_sessionfinish(session, exitstatus):
    if _zygote is not None:
        _zygote.close()


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
