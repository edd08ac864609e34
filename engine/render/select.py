"""Picks a renderer from the registry `BACKENDS`, in its order: gsplat (CUDA) -> native (CPU
C++) -> gl (OpenGL) -> reference (pure torch, any device, the tests' oracle).

Each backend's module is imported only when the backend is considered, so choosing never
imports gsplat on a machine without CUDA; its ``make(device, need_grad)`` says why it cannot
run (`RendererUnavailable`): gsplat without CUDA, native when its C++ code fails to build
(the automatic choice then warns and falls back), gl when gradients are needed.
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings
import torch

from engine.render.backends import BACKENDS, ORDER
from engine.render.base import Renderer, RendererUnavailable  # noqa: F401 - re-exported for callers

def _make(name: str, device: torch.device, need_grad: bool) -> Renderer:
    """Backend ``name`` for ``device``, or RendererUnavailable saying why not."""
    backend = BACKENDS.get(name)
    if backend is None:
        raise ValueError(f"unknown renderer {name!r}; choose from {', '.join(ORDER)}")
    module = f"engine.render.{backend.module}"
    if importlib.util.find_spec(module) is None:
        raise RendererUnavailable(f"engine/render/{backend.module}.py is not installed")
    return importlib.import_module(module).make(device, need_grad)


def select(device: torch.device | str, need_grad: bool = False, prefer: str | None = None) -> Renderer:
    """The fastest renderer that works for ``device`` (and gradients when ``need_grad``): the
    process's device (`engine.device.resolve`), which callers take from their head model.

    ``prefer`` names one backend of `BACKENDS` and overrides the automatic order: an unknown name raises ValueError, a backend that cannot
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


def live_backend(device: torch.device | str) -> str:
    """The fastest backend that may draw the app's stage for ``device`` (see `Backend.live`)."""
    device = torch.device(device)
    for b in BACKENDS.values():
        if b.live:
            try:
                _make(b.name, device, need_grad=False)
                return b.name
            except RendererUnavailable:
                continue
    raise AssertionError("unreachable: the reference renderer is always available")
