"""`python main.py bench render|refine|ui|pose|build|web`: benchmarks, one subcommand each, so an
option of one mode is never silently ignored by another. Timings are printed with the machine's
load before and after and the other processes' CPU use during the run (noise)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Union

import tyro

from spatialavatar_app.cmd_shared import OnDevice, OnHeadModel


@dataclass
class BenchRender(OnDevice, OnHeadModel):
    """Every renderer x 256²/512² x forward / forward+backward on the head model's plain avatar
    and a hard synthetic 58K scene, with the speed-up over the reference."""

    backends: tuple[str, ...] = ("native", "gl", "reference")
    """Renderers to time (names as for engine.render.select; unavailable ones are reported and skipped)."""
    sizes: tuple[int, ...] = (256, 512)
    """Square image sizes."""
    scenes: tuple[str, ...] = ("avatar", "synthetic")
    """avatar (the plain avatar, opaque) and/or synthetic (58K semi-transparent)."""
    runs: int = 20
    """Timed runs per cell (median reported), after warm-up."""
    reference_runs: int = 3
    """Timed runs for the slow reference renderer (0 skips it)."""

    def run(self) -> None:
        from engine.bench import bench_render, format_table

        with _measured() as others:
            rows = bench_render(self.backends, self.sizes, self.scenes, self.runs, self.reference_runs,
                                device=self.compute_device(), head_model=self.head_model)
            print(format_table(rows))
        _noise(others)
        print("ms: median wall-clock; vs ref: reference ms / this ms, same run; the reference uses "
              f"{self.reference_runs} runs after 1 warm-up, the others {self.runs} after 3.")


@dataclass
class BenchRefine(OnDevice, OnHeadModel):
    """Refiner iterations per second at each training resolution on a video, with the expression
    residual and for a static avatar, and seconds per frame of its photometric tracking."""

    video: Path
    """The talking-head video to refine on."""
    sizes: tuple[int, ...] = (256, 512)
    """Training resolutions (the longer side)."""
    runs: int = 20
    """Timed iterations x 15."""

    def run(self) -> None:
        from engine.bench import bench_refine

        with _measured() as others:
            rows, aligns = bench_refine(self.video, self.sizes, iterations=15 * self.runs,
                                        device=self.compute_device(), head_model=self.head_model)
            print(f"{'size':>5s} {'avatar':>9s} {'iterations':>10s} {'it/s':>7s} {'ms/it':>7s} {'min per 10K':>11s}")
            for r in rows:
                print(f"{r.size:>5d} {'residual' if r.residual else 'static':>9s} {r.iterations:>10d} "
                      f"{r.its_per_second:>7.1f} {1000 / r.its_per_second:>7.1f} {r.minutes_per_10k:>11.1f}")
            print(f"\nphotometric tracking as refine's default preset runs it (stage 3)\n"
                  f"{'size':>5s} {'frames':>10s} {'s/frame':>7s} {'min per 1000 frames':>19s}")
            for a in aligns:
                print(f"{a.resolution:>5d} {a.frames:>10d} {a.seconds_per_frame:>7.2f} "
                      f"{a.seconds_per_frame * 1000 / 60:>19.1f}")
        _noise(others)
        print("from the feed-forward start (Gaussians grow during a run, so late iterations are slower)")


@dataclass
class BenchUi(OnDevice, OnHeadModel):
    """The app's UI and avatar frame rates while a slider is dragged, at each size, in the real
    app on the default avatar (needs an X display; Xvfb will do), with the interactive render
    size it used."""

    sizes: tuple[int, ...] = (256, 512)
    """Render heights."""
    seconds: float = 5.0
    """Seconds of slider dragging per size."""

    def run(self) -> None:
        from spatialavatar_app.app.bench_ui import bench_ui

        with _measured() as others:
            rows = bench_ui(self.sizes, self.seconds, device=self.compute_device(), head_model=self.head_model)
            print(f"{'size':>5s} {'UI FPS':>7s} {'avatar FPS':>10s} {'render ms':>9s} {'internal':>8s} {'at rest':>7s}")
            for r in rows:
                print(f"{r.size:>5d} {r.ui_fps:>7.1f} {r.avatar_fps:>10.1f} {r.render_ms:>9.1f} {r.internal:>8d} "
                      f"{r.at_rest:>7d}")
        _noise(others)
        print("jawOpen swept once a second; UI loop paced as the app paces it (60 FPS cap, 40 while a render is "
              "pending); avatar FPS = new pictures on stage per second; render = pose + rasterise + RGBA on the "
              "render thread; internal = median render height while dragging (the interactive size, upscaled on "
              "the stage); at rest = the render height once the slider stops; 720x720 stage")


@dataclass
class BenchPose(OnHeadModel):
    """Posing the plain avatar's Gaussians on the head model: the torch path against the native
    one, on 1 and 2 threads (on the host)."""

    runs: int = 20
    """Timed runs (median reported), after 3."""

    def run(self) -> None:
        from engine.bench import bench_pose, machine_load

        print(f"before: {machine_load()}")
        rows = bench_pose(self.runs, head_model=self.head_model)
        print(f"{'threads':>7s} {'path':>7s} {'place ms':>8s} {'pose ms':>7s}")
        for r in rows:
            print(f"{r.threads:>7d} {r.path:>7s} {r.ms:>8.2f} {r.full_ms:>7.2f}")
        print("place = slot frames + placement of the slots; pose = AnimatedAvatar.gaussians (head model included); "
              f"median of {self.runs} runs after 3")


@dataclass
class BenchBuild(OnDevice, OnHeadModel):
    """K = 1 builds in a warm process (as the app's second drop), whole and their tracking stage,
    with the avatar's Gaussian count."""

    portraits: tuple[Path, ...] = ()
    """The portraits, each built on its own (default: the default avatar's astronaut)."""
    build_runs: int = 3
    """Timed builds per portrait (median reported), after one warm-up build."""

    def run(self) -> None:
        import tempfile

        from engine.bench import bench_build

        with tempfile.TemporaryDirectory() as tmp, _measured() as others:
            paths = list(self.portraits)
            if not paths:
                import imageio.v3 as iio
                from skimage import data

                paths = [Path(tmp) / "astronaut.png"]
                iio.imwrite(paths[0], data.astronaut())
            rows = bench_build(paths, self.build_runs, device=self.compute_device(), head_model=self.head_model)
            print(f"{'portrait':>24s} {'build s':>7s} {'tracking s':>10s} {'the rest s':>10s} {'Gaussians':>9s}")
            for r in rows:
                print(f"{r.portrait[-24:]:>24s} {r.seconds:>7.2f} {r.tracking:>10.2f} {r.generating:>10.2f} "
                      f"{r.gaussians:>9,d}")
        _noise(others)
        print(f"median of {self.build_runs} K = 1 builds a portrait after one warm-up build; tracking = FaceMesh, "
              "person matte and landmark fit; the rest = the warp into UV, the outer layer's fit and the "
              "photometric polish")


@dataclass
class BenchWeb(OnHeadModel):
    """The default avatar's web page (export --web) in headless Chromium: frames per second while
    the view orbits (depth sort and draw every frame) and while a track plays (posing too), with
    the last frame's JavaScript timings. Needs Playwright and Chromium (setup --test, as root)."""

    sizes: tuple[int, ...] = (512,)
    """Canvas sizes (square), pixels."""
    seconds: float = 5.0
    """Seconds measured per mode and size, after one of warm-up."""

    def run(self) -> None:
        from engine.bench import bench_web

        with _measured() as others:
            rows, size = bench_web(self.sizes, self.seconds, self.head_model)
            print(f"page: {size / 1e6:.1f} MB")
            print(f"{'mode':>6s} {'size':>5s} {'FPS':>6s} {'pose ms':>8s} {'sort ms':>8s} {'draw ms':>8s}")
            for r in rows:
                print(f"{r.mode:>6s} {r.size:>5d} {r.fps:>6.1f} {r.pose_ms:>8.1f} {r.sort_ms:>8.1f} {r.draw_ms:>8.1f}")
        _noise(others)
        print("FPS: frames the page drew per second; pose, sort (with packing) and draw (upload and draw calls "
              "as submitted) are the last frame's JavaScript times; the browser's WebGL is SwiftShader (software) "
              "unless the machine gives it a GPU")


class _measured:
    """Prints the machine's load before and after the block and measures the other processes'
    CPU use during it (``.cores``; None where it cannot be read)."""

    def __enter__(self):
        from engine.bench import OtherCpuUse, machine_load

        print(f"before: {machine_load()}")
        self._others = OtherCpuUse().__enter__()
        return self._others

    def __exit__(self, *exc) -> None:
        from engine.bench import machine_load

        self._others.__exit__(*exc)
        if exc[0] is None:
            print(f"after: {machine_load()}")


def _noise(others) -> None:
    if others.cores is not None:
        print(f"other processes used {others.cores:.2f} cores on average during the run (noise)")


Bench = Union[Annotated[BenchRender, tyro.conf.subcommand("render")],
              Annotated[BenchRefine, tyro.conf.subcommand("refine")],
              Annotated[BenchUi, tyro.conf.subcommand("ui")],
              Annotated[BenchPose, tyro.conf.subcommand("pose")],
              Annotated[BenchBuild, tyro.conf.subcommand("build")],
              Annotated[BenchWeb, tyro.conf.subcommand("web")]]
"""`bench render|refine|ui|pose|build|web`: each mode takes only its own options."""
