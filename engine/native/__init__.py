"""The engine's native code: one C++/OpenMP torch extension, built and loaded once per machine.

It holds the CPU tile rasterizer (``rasterize.cpp``, used by `engine.render.native`), the
expression residual's per-slot map (``residual.cpp``, used by `engine.residual`) and posing
without autograd (``pose.cpp``, used by `engine.binding.pose_slots`); their
entry points are declared in ``native.h`` and bound in ``bindings.cpp``.

The extension is compiled at first use with ``-O3 -march=native`` into
``$XDG_CACHE_HOME/spatialavatar/torch_extensions/<key>`` (default ``~/.cache/...``). The key
hashes the C++ sources and headers, the torch version, the compiler flags and the CPU's feature flags,
so a cache shared between machines (an NFS home, a copied container) never loads code
built for instructions this CPU lacks, and an edited source is rebuilt.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

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

    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    name = f"spatialavatar_native_{cache_key()}"
    cached = any(directory.glob(f"{name}*.so"))
    if not cached:
        print(f"spatialavatar: compiling the native CPU code (once per machine, about a minute) into "
              f"{directory} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    module = load_extension(name=name, sources=[str(s) for s in SOURCES], extra_cflags=CFLAGS,
                            extra_ldflags=LDFLAGS, build_directory=str(directory), verbose=False)
    if not cached:
        print(f"spatialavatar: native code compiled in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
    return module
