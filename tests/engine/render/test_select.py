"""engine.render.select: order, overrides, errors and the fallback when the native build fails."""
from __future__ import annotations

import pytest
import torch

import engine.native as native_build
from engine.render.native import NativeRenderer
from engine.render.reference import ReferenceRenderer
from engine.render.select import RendererUnavailable, select


def test_cpu_prefers_native() -> None:
    r = select("cpu", need_grad=True)
    assert isinstance(r, NativeRenderer)
    assert r.name == "native"


def test_prefer_overrides_the_order() -> None:
    assert select("cpu", prefer="reference").name == "reference"
    assert select("cpu", prefer=" Native ").name == "native"


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown renderer 'vulkan'; choose from gsplat, native, gl, reference"):
        select("cpu", prefer="vulkan")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gsplat_without_cuda_is_unavailable() -> None:
    with pytest.raises(RendererUnavailable, match="CUDA"):
        select("cpu", prefer="gsplat")


def test_native_is_cpu_only() -> None:
    with pytest.raises(RendererUnavailable, match="CPU"):
        select("meta", prefer="native")


def test_build_failure_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_build, "_module", None)
    monkeypatch.setattr(native_build, "_error", OSError("g++: command not found"))
    with pytest.warns(RuntimeWarning, match="native renderer unavailable.*g\\+\\+: command not found"):
        r = select("cpu", need_grad=True)
    assert isinstance(r, ReferenceRenderer)  # gl has no backward pass: skipped when gradients are needed
    with pytest.raises(RendererUnavailable, match="g\\+\\+: command not found"):
        select("cpu", prefer="native")
