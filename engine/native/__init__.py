"""The engine's native code: one C++/OpenMP torch extension, built and loaded once per machine.

It holds the CPU tile rasterizer (``rasterize.cpp``, used by `engine.render.native`), the
expression residual's per-slot map (``residual.cpp``, used by `engine.residual`) and posing
without autograd (``pose.cpp``, used by `engine.binding.pose_slots`); their
entry points are declared in ``native.h`` and bound in ``bindings.cpp``.

The extension is compiled at first use with ``-O3 -march=native`` into
``$XDG_CACHE_HOME/spatialavatar/torch_extensions/<key>`` (default ``~/.cache/...``). The key
hashes the C++ sources and headers, the torch version, the compiler flags and the CPU's feature flags,
so a cache shared between machines (an NFS home, a copied container) never loads code
built for instructions this CPU lacks, and an edited source is rebuilt; two checkouts of the
same sources share one build (it does not depend on where the sources lie).

The build is atomic: it compiles in a private ``<key>.tmp-<pid>-*`` folder that is renamed
into place when complete, and a finished build is loaded directly, without torch's build lock.
While one process compiles, ``<key>.building`` holds its pid; another process that needs the
extension says so and waits for it, and a marker or a half-built folder left by a process that
died (killed during its first-use compile) is cleared, never waited on.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

_HERE = Path(__file__).parent
SOURCES = tuple(_HERE / f for f in ("rasterize.cpp", "residual.cpp", "pose.cpp", "bindings.cpp"))
HEADERS = tuple(_HERE / f for f in ("native.h", "fastmath.h"))
# No -ffast-math: it lets the compiler assume no NaN/inf, and the renderer's culling of
# non-finite Gaussians relies on NaN comparisons. -fno-math-errno is enough to vectorise.
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=c++17"]
LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_module: ModuleType | None = None
_error: BaseException | None = None


class NativeBuildError(RuntimeError):
    """The extension could not be compiled or loaded."""


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key() -> str:
    h = hashlib.sha256()
    for src in SOURCES + HEADERS:
        h.update(src.read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    h.update(platform.machine().encode())
    h.update(_cpu_flags().encode())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "spatialavatar" / "torch_extensions" / f"native_{cache_key()}"


def load() -> ModuleType:
    """The compiled extension; compiles it first if it is not cached. Raises NativeBuildError."""
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise NativeBuildError(str(_error)) from _error
        try:
            _module = _compile_or_load()
        except Exception as e:  # noqa: BLE001 - any failure of the toolchain means "unavailable"
            _error = e
            raise NativeBuildError(f"could not build the native extension: {type(e).__name__}: {e}") from e
        return _module


def available() -> bool:
    """Whether the extension is (or can be) built and loaded; compiles it on first call."""
    try:
        load()
        return True
    except NativeBuildError:
        return False


def _compile_or_load() -> ModuleType:
    from torch.utils.cpp_extension import load as load_extension

    name = f"spatialavatar_native_{cache_key()}"
    built: list[ModuleType] = []

    def compile_into(directory: Path) -> None:
        built.append(load_extension(name=name, sources=[str(s) for s in SOURCES], extra_cflags=CFLAGS,
                                    extra_ldflags=LDFLAGS, build_directory=str(directory), verbose=False))

    so = ensure_built(build_dir(), name, compile_into)
    if built:                              # compiled (and imported) by this process
        return built[0]
    spec = importlib.util.spec_from_file_location(name, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # another user's process: alive
        return True
    return True


def _owner(path: Path) -> int | None:
    """The pid in a ``.building`` marker or a ``.tmp-<pid>-*`` folder's name, if readable."""
    try:
        text = path.read_text() if path.is_file() else path.name.split(".tmp-", 1)[1].split("-", 1)[0]
        return int(text.strip())
    except (OSError, ValueError, IndexError):
        return None


def ensure_built(final: Path, name: str, compile_into: Callable[[Path], None], wait_s: float = 1800.0,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> Path:
    """The path of ``final/<name>.so``, compiling it first with ``compile_into(folder)`` when it
    is not there: in a private folder renamed to ``final`` when complete (see the module's
    docstring for the marker and the clearing of what dead processes left)."""
    so = final / f"{name}.so"
    if so.exists():
        return so
    final.parent.mkdir(parents=True, exist_ok=True)
    marker = final.with_name(final.name + ".building")
    for left in final.parent.glob(final.name + ".tmp-*"):      # half-built by processes that died
        pid = _owner(left)
        if pid is not None and not _alive(pid):
            shutil.rmtree(left, ignore_errors=True)
    told, t0 = False, time.monotonic()
    while marker.exists() and not so.exists():
        pid = _owner(marker)
        if pid is None or pid == os.getpid() or not _alive(pid):
            marker.unlink(missing_ok=True)                          # left by a process that died
            break
        if not told:
            log(f"spatialavatar: waiting for process {pid}, which is compiling the native CPU code into {final} ...")
            told = True
        if time.monotonic() - t0 > wait_s:
            raise TimeoutError(f"process {pid} has been compiling the native code for over {wait_s:.0f} s; "
                               f"stop it or delete {marker}")
        time.sleep(0.5)
    if so.exists():
        return so
    if final.exists():                                          # an interrupted build of older code
        shutil.rmtree(final, ignore_errors=True)
    marker.write_text(str(os.getpid()))
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{final.name}.tmp-{os.getpid()}-"))
    try:
        log(f"spatialavatar: compiling the native CPU code (once per machine, about a minute) into {final} ...")
        t1 = time.perf_counter()
        compile_into(tmp)
        if not (tmp / so.name).exists():
            raise NativeBuildError(f"the compiler left no {so.name} in {tmp}")
        try:
            os.rename(tmp, final)
        except OSError:                                         # another process finished first: use its build
            if not so.exists():
                raise
        log(f"spatialavatar: native code compiled in {time.perf_counter() - t1:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        marker.unlink(missing_ok=True)
    return so
