"""Benchmarks: `python main.py bench render` times every renderer on two standard scenes.

Scenes:
- ``avatar``: the default avatar (plain OpenHead avatar, neutral pose, ~62.5K Gaussians,
  opaque surfaces: early termination works);
- ``synthetic``: 58K semi-transparent Gaussians filling a head-sized ellipsoid (mean
  opacity 0.27, random rotations, scales log-uniform 1-4 mm): a pixel sees hundreds of
  faint Gaussians, so almost nothing terminates early. This is the hard case.

Both are seen by `engine.camera.orbit_camera` from the front. Times are wall-clock medians
after warm-up; peak memory is the growth of the process's peak resident set during the
timed runs (Linux: VmHWM, reset through /proc/self/clear_refs), or n/a where unavailable.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from engine.camera import HEAD_TARGET, orbit_camera
from engine.render.base import Renderer
from engine.types import Camera, Gaussians

SCENES = ("avatar", "synthetic")


def synthetic_scene(n: int = 58_000, seed: int = 0, mean_opacity: float = 0.27) -> Gaussians:
    """n semi-transparent Gaussians in a head-sized ellipsoid around `HEAD_TARGET` (see module doc)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True) * torch.rand(n, 1, generator=g) ** (1 / 3)
    means = d * torch.tensor([0.08, 0.11, 0.10]) + torch.tensor(HEAD_TARGET)
    quats = torch.randn(n, 4, generator=g)
    quats = quats / quats.norm(dim=1, keepdim=True)
    scales = torch.exp(math.log(1e-3) + math.log(4.0) * torch.rand(n, 3, generator=g))
    opacities = 2 * mean_opacity * torch.rand(n, generator=g).clamp(0.02, 0.98)
    colors = torch.rand(n, 3, generator=g)
    return Gaussians(means, quats, scales, opacities, colors)


def default_avatar(device: torch.device | None = None, head_model: Path | None = None) -> Gaussians:
    """The plain avatar of the head model ``head_model`` names (OpenHead when None), neutral
    pose, on ``device`` (None: the host)."""
    from engine.animate import AnimatedAvatar
    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model

    model = load_head_model(head_model, device)
    animated = AnimatedAvatar(plain_avatar(model), model)
    with torch.no_grad():
        return animated.gaussians(animated.neutral())


def scene(name: str, device: torch.device | None = None, head_model: Path | None = None) -> Gaussians:
    if name == "avatar":
        return default_avatar(device, head_model)
    if name == "synthetic":
        g = synthetic_scene()
        return g if device is None else Gaussians(*(getattr(g, f).to(device) for f in
                                                    ("means", "quats", "scales", "opacities", "colors")))
    raise ValueError(f"unknown scene {name!r}; choose from {', '.join(SCENES)}")


class _PeakMemory:
    """Growth of the process's peak RSS (bytes) while in the block; None when not measurable."""

    def __enter__(self) -> "_PeakMemory":
        self.bytes: int | None = None
        self._ok = _reset_peak_rss()
        self._base = _rss_kb("VmRSS:") if self._ok else None
        return self

    def __exit__(self, *exc) -> None:
        if self._ok and self._base is not None:
            peak = _rss_kb("VmHWM:")
            if peak is not None:
                self.bytes = max(0, peak - self._base) * 1024


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class Timing:
    backend: str
    scene: str
    n_gaussians: int
    size: int
    mode: str            # "forward" | "fwd+bwd"
    median_ms: float | None
    runs: int
    peak_bytes: int | None

    @property
    def fps(self) -> float | None:
        return None if not self.median_ms else 1000.0 / self.median_ms


def time_renderer(renderer: Renderer, gaussians: Gaussians, camera: Camera, backward: bool, runs: int,
                  warmup: int = 2) -> tuple[float, int | None]:
    """Median wall-clock ms of ``runs`` renders (with ``backward``: render + backward of a
    loss touching rgb, alpha and depth) after ``warmup`` untimed ones, and the peak memory."""
    fields = [t.detach().clone() for t in (gaussians.means, gaussians.quats, gaussians.scales,
                                           gaussians.opacities, gaussians.colors)]

    def once() -> None:
        if backward:
            leaves = [t.requires_grad_(True) for t in fields]
            frame = renderer.render(Gaussians(*leaves), camera)
            (frame.rgb.sum() + frame.alpha.sum() + 0.1 * frame.depth.sum()).backward()
            for t in leaves:
                t.grad = None
        else:
            with torch.no_grad():
                renderer.render(Gaussians(*fields), camera)

    for _ in range(warmup):
        once()
    times = []
    with _PeakMemory() as mem:
        for _ in range(runs):
            t0 = time.perf_counter()
            once()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), mem.bytes


def bench_render(backends: Sequence[str] = ("native", "gl", "reference"), sizes: Sequence[int] = (256, 512),
                 scenes: Sequence[str] = SCENES, runs: int = 20, reference_runs: int = 3,
                 log: Callable[[str], None] = print, device: torch.device | None = None,
                 head_model: Path | None = None) -> list[Timing]:
    """Time every backend (by `engine.render.select` name) on every scene, size and mode (the
    avatar scene on the head model ``head_model`` names, OpenHead when None). A
    backend of the other device kind (gsplat on a CUDA ``device``; native on the host) runs on
    its own device, so one table compares them."""
    from engine.device import HOST
    from engine.render.select import RendererUnavailable, select

    device = HOST if device is None else device
    rows: list[Timing] = []
    scenes_on: dict = {}
    for scene_name in scenes:
        for backend in backends:
            on = HOST if backend in ("native", "gl") else device
            if (scene_name, on) not in scenes_on:
                scenes_on[scene_name, on] = scene(scene_name, on, head_model)
            gaussians = scenes_on[scene_name, on]
            try:
                renderer = select(on, need_grad=False, prefer=backend)
            except RendererUnavailable as e:   # e.g. gsplat without CUDA, gl without an OpenGL driver
                log(f"  {backend}: not available here ({e})")
                continue
            n = reference_runs if backend == "reference" else runs
            if n <= 0:
                continue
            for size in sizes:
                camera = orbit_camera(size=size)
                for mode in ("forward", "fwd+bwd"):
                    if mode == "fwd+bwd" and not renderer.differentiable:
                        rows.append(Timing(backend, scene_name, len(gaussians), size, mode, None, 0, None))
                        continue
                    warmup = 1 if backend == "reference" else 3
                    ms, peak = time_renderer(renderer, gaussians, camera, mode == "fwd+bwd", n, warmup)
                    rows.append(Timing(backend, scene_name, len(gaussians), size, mode, ms, n, peak))
                    log(f"  {scene_name:9s} {backend:9s} {size}² {mode:8s} {ms:9.1f} ms")
    return rows


def format_table(rows: Sequence[Timing]) -> str:
    """A fixed-width table; ``vs ref`` is the reference's median over this backend's, same run."""
    ref = {(r.scene, r.size, r.mode): r.median_ms for r in rows if r.backend == "reference"}
    head = f"{'scene':9s} {'N':>6s} {'backend':9s} {'size':>5s} {'mode':8s} {'ms':>9s} {'FPS':>7s} " \
           f"{'peak MB':>8s} {'runs':>4s} {'vs ref':>8s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ms = "n/a" if r.median_ms is None else f"{r.median_ms:.1f}"
        fps = "n/a" if r.fps is None else f"{r.fps:.1f}"
        mem = "n/a" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:.0f}"
        base = ref.get((r.scene, r.size, r.mode))
        ratio = f"{base / r.median_ms:.0f}x" if base and r.median_ms else "-"
        lines.append(f"{r.scene:9s} {r.n_gaussians:6d} {r.backend:9s} {r.size:5d} {r.mode:8s} {ms:>9s} {fps:>7s} "
                     f"{mem:>8s} {r.runs:4d} {ratio:>8s}")
    return "\n".join(lines)


class OtherCpuUse:
    """CPU time used by *other* processes while in the block, in cores (Linux /proc/stat)."""

    def __enter__(self) -> "OtherCpuUse":
        self.cores: float | None = None
        self._start = (_busy_jiffies(), _own_cpu_s(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        busy0, own0, t0 = self._start
        busy1, own1, t1 = _busy_jiffies(), _own_cpu_s(), time.perf_counter()
        if busy0 is not None and busy1 is not None and t1 > t0:
            hz = os.sysconf("SC_CLK_TCK")
            self.cores = max(0.0, ((busy1 - busy0) / hz - (own1 - own0)) / (t1 - t0))


def _busy_jiffies() -> int | None:
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle and iowait


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def machine_load() -> str:
    """The 1-minute load average and core count, to judge how noisy the numbers are."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return "load average: n/a"
    return f"load average {load1:.2f} on {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


@dataclass(frozen=True)
class RefineTiming:
    size: int               # training resolution (longer side)
    iterations: int
    its_per_second: float
    residual: bool          # the residual preset (an expression residual); else the default (static)

    @property
    def minutes_per_10k(self) -> float:
        return 10_000 / self.its_per_second / 60


@dataclass(frozen=True)
class AlignTiming:
    resolution: int         # longer side of the alignment's renders
    frames: int
    seconds_per_frame: float


def bench_refine(video, sizes: Sequence[int] = (256, 512), iterations: int = 300, warmup: int = 20,
                 log: Callable[[str], None] = print, align_frames: int = 10,
                 device: torch.device | None = None,
                 head_model: Path | None = None) -> tuple[list[RefineTiming], list[AlignTiming]]:
    """Refiner iterations per second on ``video`` at each training resolution: the default
    preset's step (L1 + SSIM + aspect penalty, scales unfrozen, clamp on), from the feed-forward
    start, for the default preset (static) and the residual preset; and
    seconds per frame of the photometric tracking at the default preset's two resolutions
    (`engine.refine.tracking`), on ``align_frames`` consecutive training frames.
    The landmark tracking runs once; it is not timed."""
    import dataclasses as dc

    from engine.headmodel.openhead import load_head_model
    from engine.refine.config import load_refine_config
    from engine.refine.data import load_video_data
    from engine.refine.refiner import refine
    from engine.refine.session import prepare
    from engine.track.tracker import track_video

    model = load_head_model(head_model, device)
    rows = []
    tracked = track_video(video, model)               # once, for every size
    avatar = None
    for size in sizes:
        if avatar is None:
            avatar, data = prepare(video, model, size, log=log, tracked=tracked)
        else:
            data = load_video_data(video, tracked, model, size, data.matte)
        for preset in ("default", "residual"):
            cfg = load_refine_config(preset, iterations=warmup, aspect_start=0, scale_freeze=0, checkpoint_every=0,
                                     preview_every=0, resolution=size)
            refine(avatar, model, data, cfg)
            t0 = time.perf_counter()
            refine(avatar, model, data, dc.replace(cfg, iterations=iterations))
            rate = iterations / (time.perf_counter() - t0)
            rows.append(RefineTiming(size, iterations, rate, cfg.residual_features > 0))
            log(f"  {size}², {'with the residual' if rows[-1].residual else 'static'}: {rate:.1f} it/s")
    return rows, bench_alignment(avatar, model, data, align_frames)


def bench_alignment(avatar, model, data, frames: int = 10) -> list[AlignTiming]:
    """Seconds per frame of the photometric tracking (warm-started, as `track_photometric` runs):
    the default preset's alignment to the start and to the tracker avatar."""
    from engine.refine.align import align_frames
    from engine.refine.config import load_refine_config

    cfg = load_refine_config("default")
    picked = data.train[:frames]
    out = []
    for stage in (cfg.track_config(), cfg.track_config(tracker=True)):
        t0 = time.perf_counter()
        align_frames(avatar, model, data, picked, stage, warm_start=True)
        out.append(AlignTiming(stage.resolution, len(picked), (time.perf_counter() - t0) / len(picked)))
    return out


@dataclass(frozen=True)
class PoseTiming:
    threads: int
    path: str            # "torch" (slot frames + placement as tensor ops) or "native" (one C++ pass)
    ms: float            # median per pose of the default avatar's Gaussians (after the head model)
    full_ms: float       # median of the whole `AnimatedAvatar.gaussians` (head model included), this path


def bench_pose(runs: int = 30, threads: Sequence[int] = (1, 2), head_model: Path | None = None) -> list[PoseTiming]:
    """Time posing the plain default avatar (62K slots) at an expression and head turn: the
    torch path of `engine.binding` against the native `pose_slots`, with and without the head model."""
    import dataclasses as dc
    import statistics
    from unittest import mock

    import engine.binding as binding
    from engine.animate import AnimatedAvatar
    from engine.expressions import apply_expressions
    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model

    model = load_head_model(head_model)
    animated = AnimatedAvatar(plain_avatar(model), model)
    weights = {"jawOpen": 0.4, **({"mouthSmile_L": 0.6} if "mouthSmile_L" in model.expr_names else {})}
    p = apply_expressions(animated.neutral(), model, weights)
    p = dc.replace(p, neck=torch.tensor([[0.1, 0.4, 0.0]]))
    torch_path = lambda slots, verts, faces, a: binding.place_activated(binding.slot_frames(slots, verts, faces), a)  # noqa: E731

    def median_ms(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    rows = []
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            verts = model.vertices(p)[0]
            attrs = animated.activated(p.condition()[0])
            for n in threads:
                torch.set_num_threads(n)
                for name in ("torch", "native"):
                    fn = torch_path if name == "torch" else binding.pose_slots
                    place_ms = median_ms(lambda: fn(animated.slots, verts, model.faces, attrs))
                    with mock.patch("engine.animate.pose_slots", fn):
                        full = median_ms(lambda: animated.gaussians(p))
                    rows.append(PoseTiming(n, name, place_ms, full))
    finally:
        torch.set_num_threads(before)
    return rows


@dataclass(frozen=True)
class BuildTiming:
    portrait: str
    runs: int
    seconds: float          # median of the whole K = 1 build (`engine.service.build_animated`)
    tracking: float         # median of its tracking stage: FaceMesh, person matte, landmark fit
    gaussians: int          # Gaussians of the avatar (head page and outer layer)

    @property
    def generating(self) -> float:
        """The rest: the warp into UV, the outer layer's fit and the photometric polish."""
        return self.seconds - self.tracking


def bench_build(paths: Sequence[Path], runs: int = 3, device: torch.device | None = None,
                head_model: Path | None = None) -> list[BuildTiming]:
    """K = 1 builds of each portrait in a warm process, as the app's second drop runs them: one
    untimed build first loads FaceMesh, the segmenter and the native code. The tracking stage is
    timed through the build's own progress reports (it ends when "warping into UV" begins)."""
    from engine.headmodel.openhead import load_head_model
    from engine.service import build_animated

    model = load_head_model(head_model, device)
    build_animated([Path(paths[0])], model)
    rows = []
    for path in paths:
        totals, tracks = [], []
        for _ in range(runs):
            marks: dict[str, float] = {}
            t0 = time.perf_counter()
            animated = build_animated([Path(path)], model,
                                      progress=lambda stage, f: marks.setdefault(stage, time.perf_counter()))
            totals.append(time.perf_counter() - t0)
            tracks.append(marks["warping into UV"] - t0)
        rows.append(BuildTiming(Path(path).name, runs, statistics.median(totals), statistics.median(tracks),
                                animated.avatar.n_gaussians))
    return rows


@dataclass(frozen=True)
class WebTiming:
    mode: str            # "orbit" (the view turns: sort and draw each frame) or "play" (a track: pose too)
    size: int
    fps: float           # frames the page drew per second
    pose_ms: float       # posing the Gaussians in JavaScript (last frame)
    sort_ms: float       # the depth sort and packing (last frame)
    draw_ms: float       # the upload and draw calls as submitted (the GPU's work is not in it)


def bench_web(sizes: Sequence[int] = (512,), seconds: float = 5.0, head_model: Path | None = None,
              chromium: str | None = None) -> tuple[list[WebTiming], int]:
    """The default avatar's web page in headless Chromium (software WebGL2 unless the machine's
    browser has a GPU): frames per second while the view orbits and while a track plays, at each
    size. Needs Playwright and Chromium (``scripts/setup.sh --test`` installs both as root).
    Returns the rows and the page's size in bytes."""
    import shutil
    import tempfile

    from playwright.sync_api import sync_playwright

    from engine.animate import AnimatedAvatar
    from engine.headmodel.openhead import load_head_model
    from engine.service import default_avatar, export_web
    from engine.types import HeadParams

    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise ValueError("bench web needs Chromium (scripts/setup.sh --test installs Debian's chromium as root)")
    model = load_head_model(head_model)
    animated = AnimatedAvatar(default_avatar(model), model)
    n = 100
    track = HeadParams.neutral(model.n_shape, model.n_expr, n)
    track.jaw[:, 0] = 0.15 * (1 - torch.cos(torch.linspace(0, 2 * math.pi, n)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        path = Path(tmp) / "avatar.html"
        size_bytes = export_web(animated, path, track)
        browser = p.chromium.launch(executable_path=exe, args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                                                                "--ignore-gpu-blocklist"])
        for size in sizes:
            page = browser.new_page(viewport={"width": size, "height": size})
            page.goto(path.as_uri())
            page.wait_for_function("window.avatar !== undefined", timeout=120_000)
            page.evaluate(f"window.avatar.bare(true).size({size}, {size})")
            for mode in ("orbit", "play"):
                start = "window.avatar.pause().spin(true)" if mode == "orbit" else "window.avatar.spin(false).play()"
                page.evaluate(start)
                if mode == "orbit":       # turn the view a little every frame, as a drag does
                    page.evaluate("window.__orbit = setInterval(() => "
                                  "window.avatar.view({yaw: (performance.now() / 50) % 60 - 30}), 16)")
                page.wait_for_timeout(1000)                                   # warm-up
                d0, t0 = page.evaluate("[window.avatar.drawn, performance.now()]")
                page.wait_for_timeout(int(seconds * 1000))
                d1, t1, tm = page.evaluate("[window.avatar.drawn, performance.now(), window.avatar.timings]")
                page.evaluate("clearInterval(window.__orbit); window.avatar.spin(false).pause()")
                rows.append(WebTiming(mode, size, (d1 - d0) * 1000 / (t1 - t0), tm["pose"], tm["sort"], tm["draw"]))
            page.close()
        browser.close()
    return rows, size_bytes
