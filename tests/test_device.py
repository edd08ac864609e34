"""One device per process: `engine.device` decides it, and every flow hands the renderer tensors
on it. Runs without a GPU: CUDA is faked (`tests/fake_cuda.py`: tensors that report cuda:0,
refuse numpy and refuse to mix with host tensors) and gsplat is replaced by a recording fake
that renders through the reference renderer."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.device as device_mod
from engine.device import HOST, decide, resolve
from engine.generator.outer import PolishConfig
from engine.render.base import RenderOptions
from engine.types import Frame

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fake_cuda", ROOT / "tests" / "fake_cuda.py")
fake_cuda = importlib.util.module_from_spec(_spec)
sys.modules["fake_cuda"] = fake_cuda
_spec.loader.exec_module(fake_cuda)
FakeCuda, FakeCudaTensor = fake_cuda.FakeCuda, fake_cuda.FakeCudaTensor

FIELDS = ("means", "quats", "scales", "opacities", "colors")


# ---- the decision
def fail(device):
    raise RuntimeError("gsplat's CUDA extension failed to build or load: nvcc not found")


def test_cpu_when_asked_or_when_there_is_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert decide("cpu").device == HOST and decide("auto").device == HOST
    r = decide("cuda:1")
    assert r.device == HOST and "was asked for" in r.line and r.fallback


def test_cuda_when_its_renderer_renders_and_the_cpu_with_the_reason_when_it_fails(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    ok = decide("auto", check=lambda d: None)
    assert ok.device == torch.device("cuda:0") and ok.cuda and "Fake GPU" in ok.line
    assert decide("cuda:1", check=lambda d: None).device == torch.device("cuda:1")
    bad = decide("auto", check=fail)
    assert bad.device == HOST and "nvcc not found" in bad.line and "\n" not in bad.line


def test_a_bad_spec_is_one_clear_error():
    with pytest.raises(ValueError, match="choose auto, cpu, cuda or cuda:N"):
        decide("gpu")


def test_resolve_decides_once_and_says_it_once(monkeypatch):
    device_mod.forget()
    said, checks = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    for _ in range(3):
        assert resolve("auto", said.append, check=checks.append) == torch.device("cuda:0")
    assert len(said) == 1 and len(checks) == 1
    device_mod.forget()


# ---- no call site chooses the device
CHOOSERS = re.compile(r'select\(\s*"cpu"|select\(\s*torch\.device\(\s*"cpu"\s*\)|torch\.device\(\s*"cpu"\s*\)'
                      r'|device\s*=\s*"cpu"|select\(\s*"cuda"')


def choosers(paths) -> list[str]:
    out = []
    for path in paths:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if CHOOSERS.search(line):
                out.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    return out


def test_no_call_site_names_a_device_outside_the_resolver():
    files = [p for d in ("engine", "spatialavatar_app", "scripts") for p in (ROOT / d).rglob("*.py")]
    files.append(ROOT / "main.py")
    found = [f for f in choosers(files) if not f.startswith("engine/device.py")]
    assert found == []


def test_the_device_grep_sees_the_forms_it_forbids(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('a = select("cpu")\nb = select(torch.device("cpu"), prefer=x)\nc = f(device="cpu")\n'
                     'd = t.to("cpu").numpy()\ne = torch.load(p, map_location="cpu")\n')
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert len(choosers([probe])) == 3          # the host copy and the map_location are fine
    finally:
        ROOT = old


# ---- every flow on the fake GPU
class RecordingGsplat:
    """Stands in for `GsplatRenderer`: refuses what the real one refuses (Gaussians not on CUDA),
    records each call's devices and renders through the native CPU renderer."""

    name = "gsplat"
    differentiable = True
    calls: list = []

    def render(self, gaussians, camera, options: RenderOptions = RenderOptions()) -> Frame:
        from engine.render.native import NativeRenderer

        devices = {getattr(gaussians, f).device.type for f in FIELDS}
        RecordingGsplat.calls.append(devices)
        if devices != {"cuda"}:
            raise ValueError(f"the gsplat renderer renders CUDA tensors; got Gaussians on {devices}")
        # Rendered from differentiable host copies, the frame moved back to the device.
        from engine.types import Gaussians

        host = Gaussians(*(getattr(gaussians, f).cpu() for f in FIELDS))
        frame = NativeRenderer().render(host, camera.to("cpu"), options)
        return Frame(*(getattr(frame, f).to("cuda") for f in ("rgb", "alpha", "depth")))


@pytest.fixture
def gpu(monkeypatch):
    """A machine that reports CUDA, with gsplat replaced by `RecordingGsplat`."""
    import engine.render.gsplat_backend as gsplat_backend

    device_mod.forget()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    monkeypatch.setattr(gsplat_backend, "GsplatRenderer", RecordingGsplat)
    RecordingGsplat.calls = []
    with FakeCuda() as mode:
        yield mode
    device_mod.forget()


def test_app_start_up_resolves_cuda_and_renders_on_it(gpu, openhead):
    """What `run_app` does before its windows open: the head model on the resolved device, the
    live backend for it, a frame."""
    from engine.generator.plain import plain_avatar
    from engine.headmodel.base import HeadModel
    from engine.service import AvatarService
    from spatialavatar_app.app.app import app_renderer

    device = resolve("auto", say=None)
    assert device == torch.device("cuda:0") and RecordingGsplat.calls == [{"cuda"}]   # the test frame
    model = HeadModel(openhead, device)
    service = AvatarService(model, plain_avatar(model), renderer=app_renderer(model.device), size=48)
    assert service.renderer_name == "gsplat"
    frame = service.render()
    assert frame.alpha.device.type == "cuda" and float(frame.alpha.mean()) > 0.1
    assert len(RecordingGsplat.calls) == 2
    img = frame.to_uint8()                      # the stage's host copy
    assert img.shape == (48, 48, 3)


def test_a_cuda_frame_reaches_the_stage_through_one_pinned_copy(gpu):
    from spatialavatar_app.app.render_thread import PINNED_RING, to_rgba8

    g = torch.Generator().manual_seed(0)
    rgb, alpha = torch.rand(6, 8, 3, generator=g), torch.rand(6, 8, generator=g)
    want = to_rgba8(Frame(rgb, alpha, alpha))                                 # the host path
    frames = [Frame(rgb.to("cuda"), alpha.to("cuda"), alpha.to("cuda")) for _ in range(PINNED_RING + 2)]
    got = [to_rgba8(f) for f in frames]
    assert all(isinstance(x, np.ndarray) and x.dtype == np.uint8 for x in got)
    assert np.array_equal(got[-1], want)
    assert gpu.pinned == PINNED_RING                                          # allocated once, then reused


def test_render_command_on_the_fake_gpu(gpu, tmp_path, capsys):
    from spatialavatar_app.cli import main

    out = tmp_path / "r.png"
    main(["render", "--avatar", "plain", "--size", "40", "--out", str(out)])
    assert "device: cuda:0 (Fake GPU, gsplat)" in capsys.readouterr().out
    assert out.is_file() and len(RecordingGsplat.calls) == 2          # the test frame, the picture


def test_refine_and_eval_refine_hand_the_renderer_device_tensors(gpu, openhead, offset_clip):
    import dataclasses

    from engine.eval.refined import evaluate
    from engine.headmodel.base import HeadModel
    from engine.refine.config import RefineConfig
    from engine.refine.refiner import refine

    model = HeadModel(openhead, resolve("auto", say=None))
    plain, data = offset_clip
    cfg = dataclasses.replace(RefineConfig(), iterations=3, resolution=48, aspect_start=0, scale_freeze=1,
                              checkpoint_every=0, preview_every=0, photometric_tracking=False)
    refined = refine(plain, model, data, cfg)
    assert len(RecordingGsplat.calls) == 1 + 3
    assert all(not isinstance(v, FakeCudaTensor) for v in refined.gaussians.maps().values())  # saved from the host
    held = evaluate(refined, model, data, "refined")
    assert held.frames == 1 and np.isfinite(held.psnr)
    assert len(RecordingGsplat.calls) == 1 + 3 + 1
    assert all(c == {"cuda"} for c in RecordingGsplat.calls)


def test_photometric_alignment_on_the_fake_gpu(gpu, openhead, offset_clip):
    from engine.headmodel.base import HeadModel
    from engine.refine.align import AlignConfig, align_frames

    model = HeadModel(openhead, resolve("auto", say=None))
    plain, data = offset_clip
    params = align_frames(plain, model, data, [0], AlignConfig(iterations=2, resolution=48))
    assert not isinstance(params.translation, FakeCudaTensor) and len(RecordingGsplat.calls) == 1 + 2


@pytest.fixture(scope="module")
def face_video(openhead, tmp_path_factory):
    """(avatar, a 3-frame 192² clip of it with its jaw open), rendered on the host before the fake
    GPU exists, so the driver's tracker finds a face."""
    from engine.animate import AnimatedAvatar
    from engine.camera import orbit_camera
    from engine.expressions import apply_expressions
    from engine.headmodel.base import HeadModel
    from engine.io.media import write_video
    from engine.render.select import select
    from engine.service import default_avatar

    model = HeadModel(openhead)
    animated = AnimatedAvatar(default_avatar(model), model)
    p = apply_expressions(animated.neutral(), model, {"jawOpen": 0.5})
    with torch.no_grad():
        img = select(HOST).render(animated.gaussians(p), orbit_camera(size=192)).to_uint8((0.45, 0.5, 0.55))
    path = tmp_path_factory.mktemp("drive") / "face.mp4"
    write_video(path, [img] * 3, 25.0)
    return animated.avatar, path


def test_drive_a_few_frames_on_the_fake_gpu(face_video, gpu, openhead, tmp_path):
    """Drive's tracker works on the host; its poses reach the avatar on the device."""
    from engine.drive.drive import drive_video
    from engine.headmodel.base import HeadModel

    model = HeadModel(openhead, resolve("auto", say=None))
    avatar, path = face_video
    stats = drive_video(avatar, model, path, tmp_path / "o.mp4", size=32, smoothing=0.5)    # relative, smoothed
    assert len(stats.driven.expr) == 3 and stats.found_mask.all()
    assert not isinstance(stats.driven.jaw, FakeCudaTensor)     # transfer and smoothing on the host
    assert len(RecordingGsplat.calls) == 1 + 3 and all(c == {"cuda"} for c in RecordingGsplat.calls)


@pytest.mark.gpu
def test_on_a_real_gpu_auto_picks_cuda_and_the_app_service_renders_there(openhead):
    from engine.generator.plain import plain_avatar
    from engine.headmodel.base import HeadModel
    from engine.service import AvatarService
    from spatialavatar_app.app.app import app_renderer

    device_mod.forget()
    device = resolve("auto", say=None)
    assert device.type == "cuda", device_mod.resolved().line
    model = HeadModel(openhead, device)
    service = AvatarService(model, plain_avatar(model), renderer=app_renderer(device), size=64)
    assert service.renderer_name == "gsplat"
    frame = service.render()
    assert frame.alpha.device.type == "cuda" and float(frame.alpha.mean()) > 0.1
    device_mod.forget()


def test_build_and_export_commands_on_the_fake_gpu(face_video, gpu, tmp_path, capsys):
    """A portrait built into an avatar (tracking and the warp on the host, the preview strip and
    the bundle's thumbnail rendered on the device), then exported as .ply and bundle."""
    import imageio.v3 as iio

    from engine.io import load_avatar
    from engine.io.media import VideoReader
    from engine.io.ply import read_ply
    from spatialavatar_app.cli import main

    _, video = face_video
    with VideoReader(video) as v:
        portrait = next(iter(v))
    src = tmp_path / "face.png"
    iio.imwrite(src, portrait)
    out = tmp_path / "a.savatar"
    main(["build", str(src), "--out", str(out), "--preview", str(tmp_path / "strip.png")])
    assert "device: cuda:0" in capsys.readouterr().out
    assert load_avatar(out).thumbnail is not None and iio.imread(tmp_path / "strip.png").shape[0] == 256
    # the test frame, the build's photometric polish, the thumbnail, the strip's five views
    assert len(RecordingGsplat.calls) == 1 + PolishConfig().steps + 1 + 5
    main(["export", "--avatar", str(out), "--ply", str(tmp_path / "a.ply"), "--bundle", str(tmp_path / "b.savatar")])
    saved = load_avatar(out)
    assert len(read_ply(tmp_path / "a.ply").means) == int(saved.gaussians.valid.sum()) + int(saved.outer.valid.sum())
    assert all(c == {"cuda"} for c in RecordingGsplat.calls)
