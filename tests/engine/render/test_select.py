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


def test_a_backend_is_one_registration_and_the_command_line_offers_it(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path) -> None:
    """A new backend is its module (with ``make``) and one `BACKENDS` entry: select makes it,
    the automatic order tries it in its place, and the commands' --renderer choices list it."""
    import sys
    import typing

    import engine.render as render_pkg
    from engine.render import backends, select as select_mod
    from engine.render.reference import ReferenceRenderer

    (tmp_path / "toy_backend.py").write_text(
        "from engine.render.reference import ReferenceRenderer\n"
        "class ToyRenderer(ReferenceRenderer):\n    name = 'toy'\n"
        "def make(device, need_grad):\n    return ToyRenderer()\n")
    monkeypatch.setattr(render_pkg, "__path__", [*render_pkg.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "engine.render.toy_backend", raising=False)
    registry = {"toy": backends.Backend("toy", "toy_backend"), **backends.BACKENDS}
    monkeypatch.setattr(select_mod, "BACKENDS", registry)
    monkeypatch.setattr(select_mod, "ORDER", tuple(registry))
    r = select_mod.select("cpu", prefer="toy")
    assert isinstance(r, ReferenceRenderer) and r.name == "toy"
    assert select_mod.select("cpu").name == "toy" and select_mod.live_backend("cpu") == "toy"
    assert typing.get_args(backends.BackendName) == backends.ORDER == ("gsplat", "native", "gl", "reference")


def test_the_live_backend_is_never_one_with_its_own_gl_context() -> None:
    from engine.render.backends import BACKENDS
    from engine.render.select import live_backend

    assert live_backend("cpu") == "native" and not BACKENDS["gl"].live
