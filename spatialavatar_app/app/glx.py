"""Dear PyGui and the GLFW stage window share one thread on Linux, each with its own GLX
context. GLFW leaves its context current after a swap, and Dear PyGui does not make its own
current again, so its viewport would stay black: we save Dear PyGui's context once it exists
and make it current again before every Dear PyGui frame. Elsewhere (Windows: Dear PyGui draws
with DirectX; macOS: Metal) there is nothing to restore."""
from __future__ import annotations

import ctypes
import ctypes.util


class GLXKeeper:
    def __init__(self) -> None:
        self._gl = None
        self._saved = None
        name = ctypes.util.find_library("GL")
        if name is None:
            return
        try:
            gl = ctypes.CDLL(name)
            for fn in ("glXGetCurrentDisplay", "glXGetCurrentDrawable", "glXGetCurrentContext"):
                getattr(gl, fn).restype = ctypes.c_void_p
            gl.glXMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p]
            gl.glXMakeCurrent.restype = ctypes.c_int
        except (OSError, AttributeError):
            return
        self._gl = gl

    def save(self) -> bool:
        """Remember the current context (call right after Dear PyGui's first frame)."""
        if self._gl is None:
            return False
        ctx = self._gl.glXGetCurrentContext()
        if not ctx:
            return False
        self._saved = (self._gl.glXGetCurrentDisplay(), self._gl.glXGetCurrentDrawable(), ctx)
        return True

    def restore(self) -> None:
        if self._saved is not None:
            self._gl.glXMakeCurrent(*self._saved)
