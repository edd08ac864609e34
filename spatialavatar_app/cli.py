"""The command line: `python main.py COMMAND --help`.

Every command is a dataclass (its fields are the options, their docstrings the help) with a
``run()`` method; tyro builds the parser from them.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from engine.render.backends import BackendName
from spatialavatar_app.cmd_shared import OnDevice, OnGenerator, OnHeadModel, Source, check_render_size
from spatialavatar_app.bench_cmd import Bench
from spatialavatar_app.drive_cmd import Drive
from spatialavatar_app.eval_cmd import Eval
from spatialavatar_app.refine_cmd import Refine
from spatialavatar_app.track_cmd import Track
from spatialavatar_app.train_cmd import Train


@dataclass(frozen=True)
class Pose:
    """Expression and head pose options shared by the commands that pose an avatar."""

    preset: Optional[str] = None
    """An expression preset: a bundled name (smile, laugh, surprise, sad, angry, blink, wink_left, kiss,
    neutral) or a .json file; --expr is applied on top."""
    expr: str = ""
    """Expressions as NAME=WEIGHT pairs, e.g. jawOpen=0.6,mouthSmile_L=0.5 (`headmodel --list` names them)."""
    yaw: float = 0.0
    """Head turn to the subject's left, degrees (neck joint)."""
    pitch: float = 0.0
    """Head tilt downwards, degrees (neck joint)."""
    roll: float = 0.0
    """Head roll, degrees (neck joint)."""

    def weights(self) -> dict[str, float]:
        """The preset's weights with --expr on top; checked before any avatar is loaded."""
        import math

        from engine.expressions import parse_weights
        from engine.io.presets import load_expression_preset

        for name, v in (("yaw", self.yaw), ("pitch", self.pitch), ("roll", self.roll)):
            if not math.isfinite(v):
                raise ValueError(f"--{name} {v} is not a finite angle")
        weights = load_expression_preset(self.preset) if self.preset else {}
        return {**weights, **parse_weights(self.expr)}

    def params(self, service, weights: dict[str, float] | None = None):
        """The avatar's parameters (from ``service``, an `AvatarService`) at this pose."""
        from engine.expressions import apply_expressions, head_rotation

        p = apply_expressions(service.neutral(), service.model, self.weights() if weights is None else weights)
        return head_rotation(p, self.yaw, self.pitch, self.roll) if (self.yaw or self.pitch or self.roll) else p


"""The largest rendered side: 8192² RGBA float buffers are ~1 GB; beyond it a typo is likelier than a wish."""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4",)


@dataclass
class Render(OnDevice):
    """Render an avatar (default: the built-in one) to a PNG, or a turntable MP4 with --video."""

    out: Path = Path("out/render.png")
    """Output image (.png) or, with --video, video (.mp4)."""
    source: Annotated[Source, tyro.conf.OmitArgPrefixes] = Source()
    pose: Annotated[Pose, tyro.conf.OmitArgPrefixes] = Pose()
    size: int = 512
    """Image width and height in pixels."""
    view_yaw: float = 0.0
    """Camera orbit around the head, degrees (subject's left +)."""
    view_pitch: float = 0.0
    """Camera elevation, degrees."""
    video: bool = False
    """Write a turntable with an expression sweep (MP4) instead of one image."""
    frames: int = 48
    """Number of video frames."""
    renderer: Optional[BackendName] = None
    """Renderer backend (default: the best available here)."""

    def run(self) -> None:
        check_render_size("--size", self.size)
        if self.video and not 1 <= self.frames <= 10_000:
            raise ValueError(f"--frames {self.frames}: a turntable has 1 to 10000 frames")
        kinds = VIDEO_SUFFIXES if self.video else IMAGE_SUFFIXES
        if self.out.suffix.lower() not in kinds:
            raise ValueError(f"{self.out}: {'a turntable' if self.video else 'an image'} is written as "
                             f"{' or '.join(kinds)}; give a file name ending in one of them")
        from engine.io import check_writable

        check_writable(self.out)                # before the avatar is loaded and rendered
        weights = self.pose.weights()
        service = self.source.service(self.compute_device(), self.renderer)
        service.set_params(self.pose.params(service, weights))
        if self.video:
            service.render_turntable(self.out, self.size, self.frames)
        else:
            service.render_file(self.out, self.size, self.view_yaw, self.view_pitch)
        print(f"wrote {self.out}")


@dataclass
class Export(OnDevice):
    """Export a posed avatar as a standard 3DGS .ply (world space), an avatar bundle, and/or one
    self-contained web page that plays it (WebGL2: sliders, presets, tracks; no network)."""

    ply: Optional[Path] = None
    """Write the posed Gaussians here as a 3DGS point cloud."""
    bundle: Optional[Path] = None
    """Write the avatar bundle (.savatar) here."""
    web: Optional[Path] = None
    """Write the avatar here as one web page (.html) that any WebGL2 browser plays offline."""
    track: Optional[Path] = None
    """With --web: an expression track to embed and play (.npz of per-frame parameters, from
    `drive --save-track` or `track VIDEO`)."""
    fps: float = 25.0
    """With --track: its frame rate, when the file does not carry one (`drive --save-track` writes it)."""
    source: Annotated[Source, tyro.conf.OmitArgPrefixes] = Source()
    pose: Annotated[Pose, tyro.conf.OmitArgPrefixes] = Pose()

    def run(self) -> None:
        if not (self.ply or self.bundle or self.web):
            raise ValueError("export: nothing to do; give --ply PATH, --bundle PATH and/or --web PATH")
        if self.track is not None and self.web is None:
            raise ValueError("export: --track is embedded in a web page; give --web PATH.html")
        from engine.io import check_writable

        check_writable(*(p for p in (self.ply, self.bundle, self.web) if p))
        track, fps = None, self.fps
        if self.track is not None:          # a file that is not a track fails before anything is loaded
            from engine.io.params import load_params

            track, extra = load_params(self.track)
            if "fps" in extra and extra["fps"].size == 1 and float(extra["fps"]) > 0:
                fps = float(extra["fps"])
        weights = self.pose.weights()
        service = self.source.service(self.compute_device())
        service.set_params(self.pose.params(service, weights))
        if self.ply:
            n = service.export_ply(self.ply)
            print(f"wrote {self.ply} ({n:,} Gaussians)")
        if self.bundle:
            service.save(self.bundle)
            print(f"wrote {self.bundle}")
        if self.web:
            size = service.export_web(self.web, track, fps)
            print(f"wrote {self.web} ({size / 1e6:.1f} MB" + (f", a {track.batch_size}-frame track" if track is not None
                                                               else "") + ")")


@dataclass
class HeadModelCmd:
    """Build OpenHead (the default head model) and inspect it: counts, expression names, a contact sheet."""

    out: Optional[Path] = None
    """Also save the model's .npz here."""
    smplx: Optional[Path] = None
    """Export a folder that smplx.FLAME loads (FLAME_NEUTRAL.npz + flame_static_embedding.pkl)."""
    sheet: Optional[Path] = None
    """Write a contact sheet PNG: neutral, jawOpen, every expression, three head poses."""
    list: bool = False
    """Print the expression names."""
    check_smplx: bool = False
    """Export to a temporary folder, load it with smplx.FLAME and print the largest vertex
    difference from our own skinning over random shapes, expressions and poses."""

    def run(self) -> None:
        from engine.binding import rasterize_uv
        from engine.expressions import expression_names
        from engine.headmodel.base import HeadModel
        from engine.headmodel.openhead import cache_path, load_openhead

        data = load_openhead()
        slots = rasterize_uv(data.uvs, data.uv_faces, 256)
        print(f"{data.name} ({cache_path()}): {len(data.v_template)} vertices, {len(data.faces)} faces, "
              f"{data.n_shape} shape / {data.n_expr} expression components, {len(slots)} valid texels at 256²")
        if self.list:
            print("\n".join(expression_names(HeadModel(data))))
        if self.out:
            data.save(self.out)
            print(f"wrote {self.out}")
        if self.smplx:
            from engine.headmodel.build import export_smplx

            export_smplx(data, self.smplx)
            print(f"wrote {self.smplx}/")
        if self.check_smplx:
            import tempfile

            from engine.headmodel.build import export_smplx, smplx_max_error

            with tempfile.TemporaryDirectory() as tmp:
                export_smplx(data, Path(tmp))
                print(f"smplx.FLAME vs our LBS, max vertex difference: {smplx_max_error(data, Path(tmp)):.2e} m")
        if self.sheet:
            from engine.headmodel.preview import contact_sheet

            contact_sheet(data, self.sheet)
            print(f"wrote {self.sheet}")


@dataclass
class Build(OnDevice, OnHeadModel, OnGenerator):
    """Build an avatar from 1-4 portraits of one person (tracked, then warped into the head
    model's UV layout and mean-pooled), and save it as a bundle."""

    portraits: tyro.conf.Positional[list[Path]]
    """1 to 4 portrait images of one person."""
    out: Path = Path("out/avatar.savatar")
    """The avatar bundle to write."""
    preview: Optional[Path] = None
    """Also write a PNG strip of the avatar: yaw -35°, 0°, 35°, then smiling and surprised."""

    def run(self) -> None:
        from tqdm import tqdm

        from engine.generator.plain import plain_avatar
        from engine.io import check_writable
        from engine.service import AvatarService

        check_writable(self.out, *([self.preview] if self.preview else []))
        model = self.load_model(self.compute_device())
        service = AvatarService(model, avatar=plain_avatar(model),      # cheap: the build replaces it
                                generator=self.generator_choice())
        bar = tqdm(total=100, desc="building", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

        def progress(stage: str, fraction: float) -> None:
            bar.set_description_str(stage)
            bar.n = int(100 * fraction)
            bar.refresh()

        try:
            avatar = service.build_avatar(self.portraits, progress)
        finally:
            bar.close()             # before any error line, so that line is the last one
        service.save(self.out)
        for note in avatar.metadata.get("notes", []):
            print(f"note: {note}")
        if self.preview:
            write_preview(service, self.preview)
            print(f"wrote {self.preview}")
        print(f"wrote {self.out} (built in {avatar.metadata['seconds']:.2f} s from {len(avatar.metadata['sources'])} "
              f"portrait(s); mean texel confidence {avatar.metadata['mean_confidence']:.2f})")


def write_preview(service, path: Path, size: int = 256) -> None:
    """A strip of the service's avatar: three head turns, then two expressions."""
    import imageio.v3 as iio
    import numpy as np

    from engine.atomic import atomic_path
    from engine.camera import orbit_camera
    from engine.expressions import apply_expressions
    from engine.io.presets import load_expression_preset

    neutral = service.neutral()
    shots = [(neutral, yaw) for yaw in (-35, 0, 35)]
    shots += [(apply_expressions(neutral, service.model, load_expression_preset(p)), 0) for p in ("smile", "surprise")]
    views = []
    for params, yaw in shots:
        service.set_params(params)
        views.append(service.render(orbit_camera(yaw, size=size)).to_uint8())
    service.set_params(neutral)

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.concatenate(views, 1))


@dataclass
class App(OnDevice, OnHeadModel, OnGenerator):
    """The desktop app (what `python main.py` opens): a control panel and a stage window.
    Drop 1-4 portraits on the stage to build an avatar, a video to refine on, or a .savatar /
    .ply to open it; move the expression and pose sliders; refine; export."""

    paths: tyro.conf.Positional[list[Path]] = dataclasses.field(default_factory=list)
    """Portraits (1-4), a video, an avatar bundle or a .ply to open; the default avatar when none."""
    renderer: Optional[BackendName] = None
    """Live renderer (gl draws in the stage window's own OpenGL context). Automatic when omitted:
    gsplat on a CUDA device; on the CPU, gl when the stage's OpenGL is a GPU's (not
    llvmpipe/softpipe/swrast), else native."""
    resolution: int = 512
    """Render height in pixels (the width follows the stage window's aspect)."""
    export_dir: Path = Path("out")
    """Where screenshots, exports, recordings and refined avatars are written."""

    def run(self) -> None:
        import os
        import sys

        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SystemExit("error: no display to open the app on (DISPLAY is not set). On a server run it "
                             "under a virtual display (xvfb-run -s '-screen 0 1600x1000x24' python main.py), "
                             "or use the headless commands: python main.py --help")
        from spatialavatar_app.app.app import run_app

        run_app(self.paths, self.renderer, self.resolution, self.export_dir, self.generator_choice(),
                self.compute_device(), self.head_model)


@dataclass
class Demo(OnDevice, OnHeadModel):
    """Headless showcase: render the default avatar to out/default_avatar.png and a turntable
    to out/default_avatar.mp4."""

    out_dir: Path = Path("out")
    """Folder for the outputs."""

    def run(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        source = Source(head_model=self.head_model)
        Render(out=self.out_dir / "default_avatar.png", source=source, device=self.device).run()
        Render(out=self.out_dir / "default_avatar.mp4", source=source, video=True, size=384, device=self.device).run()


COMMANDS = {"app": App, "build": Build, "render": Render, "export": Export, "track": Track, "refine": Refine, "drive": Drive, "headmodel": HeadModelCmd, "demo": Demo, "bench": Bench, "eval": Eval, "train": Train}


def one_line(e: BaseException) -> str:
    """What the user reads of an error: an OSError as "FILE: what is wrong" (without Python's
    "[Errno N]"), anything else as its message."""
    if isinstance(e, OSError) and e.strerror:
        what = e.strerror[:1].lower() + e.strerror[1:] if e.filename is not None else e.strerror
        return f"{e.filename}: {what}" if e.filename is not None else what
    return str(e)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["app"]
    cmd = tyro.extras.subcommand_cli_from_dict(
        COMMANDS, args=argv, prog="python main.py",
        description="SpatialAvatar-0: 4D Gaussian head avatars. With no command: the desktop app.")
    from engine.render.select import RendererUnavailable

    try:
        if isinstance(cmd, OnDevice):
            cmd.compute_device()        # chosen once, said once, before anything is loaded
        cmd.run()
    except (ValueError, OSError, RendererUnavailable) as e:   # bad input: one clear line, no traceback
        raise SystemExit(f"error: {one_line(e)}") from None
    except KeyboardInterrupt:
        print("stopped (Ctrl-C); outputs are written whole or not at all", file=sys.stderr)
        raise SystemExit(130) from None
    except MemoryError:
        raise SystemExit("error: out of memory; try smaller inputs (fewer or shorter videos, smaller images)") from None
