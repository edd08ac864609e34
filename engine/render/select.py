"""Picks a renderer: gsplat (CUDA) -> native (CPU C++) -> gl (OpenGL) -> reference (pure torch).

Backends other than the reference live in optional modules and are imported only when
considered, so choosing never imports gsplat on a machine without CUDA:

- ``gsplat``: ``engine/render/gsplat_backend.py``, expected to define ``GsplatRenderer``;
  considered only when ``torch.cuda.is_available()`` and the device is CUDA;
- ``native``: ``engine/render/native.py`` (``NativeRenderer``); CPU; compiled at first use, a
  build failure falls back (automatic choice) with a warning;
- ``gl``: ``engine/render/gl_backend.py``, expected to define ``GLRenderer``; not
  differentiable, so only chosen when no gradient is needed;
- ``reference``: always available, any device.
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings

import torch

from engine.render.base import Renderer, RendererUnavailable  # noqa: F401 - re-exported for callers
from engine.render.reference import ReferenceRenderer

ORDER = ("gsplat", "native", "gl", "reference")


def _optional(module: str, cls: str):
    """Class ``cls`` of ``engine.render.<module>``, or None when that module does not exist."""
    if importlib.util.find_spec(f"engine.render.{module}") is None:
        return None
    return getattr(importlib.import_module(f"engine.render.{module}"), cls)


def _make(name: str, device: torch.device, need_grad: bool) -> Renderer:
    """Backend ``name`` for ``device``, or RendererUnavailable saying why not."""
    if name == "reference":
        return ReferenceRenderer()
    if name == "gsplat":
        if not torch.cuda.is_available():
            raise RendererUnavailable("gsplat needs CUDA, and torch.cuda.is_available() is False")
        if device.type != "cuda":
            raise RendererUnavailable(f"gsplat renders CUDA tensors, the device is {device}")
        cls = _optional("gsplat_backend", "GsplatRenderer")
        if cls is None:
            raise RendererUnavailable("engine/render/gsplat_backend.py is not installed")
        return cls()
    if name == "native":
        if device.type != "cpu":
            raise RendererUnavailable(f"the native renderer runs on the CPU, the device is {device}")
        from engine.render.native import NativeBuildError, NativeRenderer, load

        try:
            load()
        except NativeBuildError as e:
            raise RendererUnavailable(str(e)) from e
        return NativeRenderer()
    if name == "gl":
        cls = _optional("gl_backend", "GLRenderer")
        if cls is None:
            raise RendererUnavailable("engine/render/gl_backend.py is not installed")
        if need_grad and not cls.differentiable:   # checked on the class: an instance holds a GL context
            raise RendererUnavailable("the gl renderer has no backward pass, and gradients are needed")
        return cls()
    raise ValueError(f"unknown renderer {name!r}; choose from {', '.join(ORDER)}")


def select(device: torch.device | str, need_grad: bool = False, prefer: str | None = None) -> Renderer:
    """The fastest renderer that works for ``device`` (and gradients when ``need_grad``): the
    process's device (`engine.device.resolve`), which callers take from their head model.

    ``prefer`` names one backend (``"gsplat"``, ``"native"``, ``"gl"``, ``"reference"``) and
    overrides the automatic order: an unknown name raises ValueError, a backend that cannot
    run here RendererUnavailable. The automatic choice warns when it skips the native
    backend because its build failed, and falls back to the next one.
    """
    device = torch.device(device)
    if prefer is not None:
        return _make(prefer.strip().lower(), device, need_grad)
    for name in ORDER:
        try:
            return _make(name, device, need_grad)
        except RendererUnavailable as e:
            if name == "native" and device.type == "cpu":
                warnings.warn(f"native renderer unavailable, falling back to a slower one: {e}", RuntimeWarning,
                              stacklevel=2)
    raise AssertionError("unreachable: the reference renderer is always available")
