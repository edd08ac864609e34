"""The device a process computes on, chosen once (``--device auto|cpu|cuda[:N]``).

`resolve` is the one place that names a device. Everything below it takes the device from
the head model (`HeadModel.device`), which the front end loads on the resolved device, or
from the tensors it is given: the binding, the avatars, the generator, the renderer choice
(`engine.render.select.select(model.device)`), the refiner, the aligner, drive and eval.

``auto`` is CUDA when ``torch.cuda.is_available()`` and a CUDA renderer (gsplat) renders a
test frame there, else the CPU. A CUDA renderer that fails to import, build or render makes
``auto`` and an explicit ``cuda`` fall back to the CPU with one line saying why, never a
crash: the program always starts. The decision is said once (`Resolved.line`) and kept for
the process (`resolved`), so a front end can show it beside the live backend.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
HOST = torch.device("cpu")
"""The host: the CPU device, where host copies go (OpenGL uploads, numpy, files) and what the
landmark tracker and the projective warp compute on whatever the resolved device is."""


@dataclass(frozen=True)
class Resolved:
    """The process's device and how it was decided."""

    device: torch.device
    spec: str                   # what was asked: auto, cpu, cuda or cuda:N
    line: str                   # what is said once at start-up
    fallback: str | None = None  # why CUDA was not used, when it was asked for or available

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


_resolved: Resolved | None = None


def parse(spec: str) -> str:
    """``spec`` normalised, or ValueError naming the accepted forms."""
    s = str(spec).strip().lower()
    if not SPEC.match(s):
        raise ValueError(f"--device {spec!r}: choose auto, cpu, cuda or cuda:N")
    return s


def _cuda_check(device: torch.device) -> None:
    """Raise (with the reason) unless a CUDA renderer renders a test frame on ``device``."""
    from engine.camera import orbit_camera
    from engine.render.select import select
    from engine.types import Gaussians

    if device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(f"{device} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    renderer = select(device, need_grad=False, prefer="gsplat")
    n = 16
    g = torch.Generator().manual_seed(0)
    gaussians = Gaussians(
        means=(torch.rand(n, 3, generator=g) * 0.1 - 0.05).to(device),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1).to(device),
        scales=torch.full((n, 3), 0.02).to(device),
        opacities=torch.full((n,), 0.9).to(device),
        colors=torch.rand(n, 3, generator=g).to(device))
    frame = renderer.render(gaussians, orbit_camera(size=32))
    if frame.alpha.device.type != "cuda":
        raise RuntimeError(f"the {renderer.name} renderer returned a frame on {frame.alpha.device}")
    if not bool(torch.isfinite(frame.rgb).all()) or float(frame.alpha.max()) <= 0.0:
        raise RuntimeError(f"the {renderer.name} renderer's test frame is empty or not finite")


def decide(spec: str = "auto", check: Callable[[torch.device], None] = _cuda_check) -> Resolved:
    """What ``spec`` resolves to on this machine, without remembering it (see `resolve`)."""
    spec = parse(spec)
    if spec == "cpu":
        return Resolved(HOST, spec, "device: cpu (asked for)")
    if not torch.cuda.is_available():
        if spec == "auto":
            return Resolved(HOST, spec, "device: cpu (no CUDA here)")
        why = "torch.cuda.is_available() is False (no NVIDIA driver, or a CPU build of PyTorch)"
        return Resolved(HOST, spec, f"device: cpu; --device {spec} was asked for but {why}", why)
    device = torch.device("cuda:0" if spec in ("auto", "cuda") else spec)
    try:
        check(device)
    except Exception as e:  # noqa: BLE001 - any failure of the CUDA path means "use the CPU", with the reason
        why = f"{type(e).__name__}: {e}".splitlines()[0]
        return Resolved(HOST, spec, f"device: cpu; CUDA is present but its renderer failed ({why})", why)
    return Resolved(device, spec, f"device: {device} ({torch.cuda.get_device_name(device)}, gsplat)")


def resolve(spec: str = "auto", say: Callable[[str], None] | None = print,
            check: Callable[[torch.device], None] = _cuda_check) -> torch.device:
    """The process's device: decided on the first call (and said through ``say``), the same
    device on later calls with the same ``spec``. A later call with another spec decides again
    (tests; a front end calls this once)."""
    global _resolved
    spec = parse(spec)
    if _resolved is None or _resolved.spec != spec:
        _resolved = decide(spec, check)
        if say is not None:
            say(_resolved.line)
    return _resolved.device


def resolved() -> Resolved | None:
    """What `resolve` decided in this process, or None before it was called."""
    return _resolved


def forget() -> None:
    """Drop the remembered decision (tests)."""
    global _resolved
    _resolved = None
