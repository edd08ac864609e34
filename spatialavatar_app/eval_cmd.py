"""`python main.py eval ff VIDEO…`: feed-forward self- (and with --cross, cross-) reenactment
metrics; `python main.py eval refine AVATAR VIDEO`: a refined avatar on its video's held-out
frames; `python main.py eval portraits IMAGE…`: each portrait's avatar at its own camera;
`python main.py eval tracking`: the trackers on a clip rendered with known parameters."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import tyro

from spatialavatar_app.cmd_shared import OnDevice, OnGenerator, OnHeadModel


@dataclass
class _Output(OnDevice, OnHeadModel):
    """What every eval mode shares."""

    json: Optional[Path] = dataclasses.field(default=None, kw_only=True)
    """Also write the table's rows to this JSON file (null where a metric is unavailable)."""


@dataclass
class _WithLpips(_Output):
    lpips_weights: Optional[list[Path]] = dataclasses.field(default=None, kw_only=True)
    """Compute LPIPS (AlexNet, v0.1) from these two files, in any order: torchvision's
    alexnet-owt-7be5be79.pth (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth) and
    alex.pth (lpips/weights/v0.1/alex.pth of github.com/richzhang/PerceptualSimilarity)."""

    def _lpips(self):
        from engine.metrics.lpips import load_lpips

        if self.lpips_weights is None:
            return None
        if len(self.lpips_weights) > 2:
            raise ValueError("--lpips-weights takes the AlexNet checkpoint and alex.pth (two files)")
        return load_lpips(self.lpips_weights)


@dataclass
class EvalFF(_WithLpips, OnGenerator):
    """The feed-forward stage on videos: build from K = 1 and K = 4 frames of each video's first
    half, render up to --targets frames of its last third with their tracked parameters, and print
    PSNR, SSIM (and LPIPS with --lpips-weights) inside the portrait matte and the head-and-neck
    matte, CSIM, AED, APD and AKD against the real frame (our stand-ins: dlib identity, our
    tracker's codes, FaceMesh points; not comparable with the paper's numbers). --cross also
    drives each video's K = 1 avatar with every other video (CSIM vs. its source, AED/APD/AKD
    vs. the driver)."""

    videos: Annotated[list[Path], tyro.conf.Positional, tyro.conf.arg(metavar="VIDEO")]
    """Talking-head videos."""
    targets: int = 50
    """Target frames per video (from the last third). Each costs a render and, for the face
    metrics, a face fit of the render and of the real frame (seconds each on a CPU)."""
    cross: bool = False
    """Also cross-reenact every ordered pair of the given videos (K = 1)."""
    outer: bool = True
    """Build the avatars with their outer layer (hair shell and bust); with --no-outer, the head
    page alone, as avatars were before it had one."""

    def run(self) -> None:
        from engine.eval.feedforward import (DEFINITIONS, DILATE_PX, FaceMetrics, cross_reenact, evaluate_clip,
                                             format_table, load_clip, write_json)
        from engine.metrics.matte import MATTE_DEFINITION, PORTRAIT_CUT, PORTRAIT_MATTE_DEFINITION

        generator = self.generator_choice()
        if self.cross and len(self.videos) < 2:
            raise ValueError("--cross needs at least two videos")
        lpips = self._lpips()
        model = self.load_model(self.compute_device())
        faces = FaceMetrics(model.host())       # FaceMesh and landmark fits of real and rendered frames
        clips, rows, cross = [], [], []
        try:
            for v in self.videos:
                clips.append(load_clip(v, model, n_targets=self.targets))
                new = evaluate_clip(clips[-1], model, n_targets=self.targets, generator=generator,
                                    lpips=lpips, faces=faces, outer=self.outer)
                rows += new
                print("\n".join(format_table(new).splitlines()[1 : 1 + len(new)]), flush=True)
            if self.cross:
                for a in clips:
                    for b in clips:
                        if a is not b:
                            cross.append(cross_reenact(a, b, model, faces, n_targets=self.targets,
                                                       generator=generator))
                            print(format_table([], cross[-1:]).splitlines()[1], flush=True)
        finally:
            faces.close()
        print(f"\ngenerator: {generator}")
        print(format_table(rows, cross))
        matte = (f"PSNR/SSIM/LPIPS: {PORTRAIT_MATTE_DEFINITION.format(cut=PORTRAIT_CUT)}; "
                 f"hPSNR/hSSIM: {MATTE_DEFINITION.format(dilate=DILATE_PX)}")
        print(matte)
        for name, text in DEFINITIONS.items():
            print(f"{name}: {text}")
        if lpips is None:
            print("LPIPS unavailable: pass --lpips-weights alexnet-owt-7be5be79.pth alex.pth to compute it")
        if self.json:
            write_json(self.json, rows, cross, matte)
            print(f"wrote {self.json}")


@dataclass
class EvalRefine(_WithLpips):
    """A refined avatar and its feed-forward start on the video's held-out frames (MSE, PSNR, SSIM,
    MS-SSIM, and LPIPS when --lpips-weights gives its weight files, which are not shipped;
    otherwise LPIPS is reported as unavailable), in the portrait matte and the head-and-neck
    matte, with the tracking `refine` trained on (the .tracking.npz beside the avatar);
    --align-test adds both avatars scored after aligning each held-out frame's tracking to it
    (the test-time protocol of IMavatar/PointAvatar)."""

    avatar: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="AVATAR")]
    """The refined avatar bundle."""
    video: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="VIDEO")]
    """The video it was refined on."""
    side_by_side: Optional[Path] = None
    """Also write ground truth | render | 4x error of the held-out frames as an MP4."""
    align_test: bool = False
    """Also score both avatars after aligning each held-out frame's tracked pose, jaw, eyes and
    expression to the frame with that avatar frozen (IMavatar/PointAvatar's test-time protocol;
    12 steps at 256 px, each frame starting from its predecessor's correction, ~0.6 s per frame
    per avatar on a CPU). The tracked-as-is rows stay in the table."""
    tracking: Optional[Path] = None
    """The tracking to score with. Default: the one `refine` wrote beside the avatar (<avatar
    stem>.tracking.npz) when it exists; otherwise the video is tracked again as refine's default
    preset tracks it (landmarks, then the photometric stages: several minutes)."""
    landmark_tracking: bool = False
    """Score with the landmark tracker's parameters as they are (no photometric stage)."""

    def run(self) -> None:
        from engine.eval.refined import MATTES, score_refined, write_json
        from engine.metrics.image import ms_ssim_min_side
        from engine.metrics.matte import MATTE_DEFINITION, PORTRAIT_CUT, PORTRAIT_MATTE_DEFINITION, REGION_DEFINITION
        from engine.metrics.matte import HEAD_MATTE_DILATE as MATTE_DILATE
        from engine.metrics.matte import REGION_MARGIN
        from spatialavatar_app.cmd_shared import StageBars

        lpips = self._lpips()
        model = self.load_model(self.compute_device())
        with StageBars() as bars:
            scores = score_refined(self.avatar, self.video, model, self.tracking, self.landmark_tracking,
                                   self.align_test, self.side_by_side, lpips, bars)
        rows, data = scores.rows, scores.data
        print(f"tracking: {scores.tracking}")
        print(f"held-out frames {data.first_test}..{len(data.found) - 1} of {self.video.name} ({rows[0].frames} with "
              f"a face), {data.images.shape[2]}x{data.images.shape[1]} px")
        print(f"{'matte':<9} {'avatar':<34} {'MSE x1e-3':>10} {'PSNR':>7} {'SSIM':>7} {'MS-SSIM':>8} {'LPIPS':>12}")
        for r in rows:
            msssim = "n/a" if r.ms_ssim is None else f"{r.ms_ssim:.4f}"
            lp = "unavailable" if r.lpips is None else f"{r.lpips:.4f}"
            print(f"{r.matte:<9} {r.name[:34]:<34} {r.mse * 1e3:>10.3f} {r.psnr:>7.2f} {r.ssim:>7.4f} {msssim:>8} "
                  f"{lp:>12}")
        region = REGION_DEFINITION.format(margin=REGION_MARGIN)
        mattes = {"portrait": PORTRAIT_MATTE_DEFINITION.format(cut=PORTRAIT_CUT),
                  "head": MATTE_DEFINITION.format(dilate=MATTE_DILATE), "eyes": region, "mouth": region}
        for m in MATTES:
            print(mattes[m])
        print(region)
        if self.align_test:
            print("aligned: each held-out frame's tracked rotation, translation, neck, jaw, eyes and expression "
                  "optimised against the frame with the avatar frozen (engine.refine.align); other rows use the "
                  "tracked parameters as they are")
        if rows[0].ms_ssim is None:
            print(f"MS-SSIM n/a: it needs frames of at least {ms_ssim_min_side()} px on the smaller side")
        if lpips is None:
            print("LPIPS unavailable: pass --lpips-weights alexnet-owt-7be5be79.pth alex.pth to compute it")
        if self.side_by_side:
            print(f"wrote {self.side_by_side}")
            if self.align_test:
                s = self.side_by_side
                print(f"wrote {s.with_name(f'{s.stem}_aligned{s.suffix}')}")
        if self.json:
            write_json(self.json, rows, self.video.name, mattes)
            print(f"wrote {self.json}")


@dataclass
class EvalPortraits(_Output):
    """Each portrait's own K = 1 avatar rendered back at its tracked camera: silhouette IoU against
    the portrait matte (hair, ears, neck and the top of the shoulders), PSNR/SSIM inside it, and
    PSNR inside the head-and-neck matte."""

    portraits: Annotated[list[Path], tyro.conf.Positional, tyro.conf.arg(metavar="IMAGE")]
    """Portrait images."""
    outer: bool = True
    """Build the avatars with their outer layer (hair shell and bust); with --no-outer, the head
    page alone, as avatars were before it had one."""

    def run(self) -> None:
        from engine.eval.portraits import SIDE, evaluate_portrait, format_table, write_json
        from engine.io.media import MediaError
        from engine.metrics.matte import PORTRAIT_CUT, PORTRAIT_MATTE_DEFINITION
        from engine.render.select import select

        model = self.load_model(self.compute_device())
        renderer = select(model.device)
        rows = []
        for path in self.portraits:
            try:
                rows.append(evaluate_portrait(path, model, renderer, outer=self.outer))
            except (MediaError, ValueError) as e:
                print(f"skipped {path.name}: {e}", file=sys.stderr)
        print(format_table(rows))
        matte = PORTRAIT_MATTE_DEFINITION.format(cut=PORTRAIT_CUT)
        print(f"each portrait's own K = 1 projective avatar at its tracked camera, longer side {SIDE} px; IoU = "
              f"avatar alpha > 0.5 against the portrait matte, above its cut; {matte}; head PSNR: inside the "
              "head-and-neck matte")
        if self.json:
            write_json(self.json, rows, matte)
            print(f"wrote {self.json}")


@dataclass
class EvalTracking(_Output):
    """The trackers (a portrait's fit, a video's, the real-time tracker of `drive`) on a clip the
    avatar renders with known jaw opening, blinks and gaze: their mean error and bias."""

    avatar: Optional[Path] = None
    """Avatar bundle (.savatar) to render the clip with; the built-in default avatar when omitted."""
    frames: int = 60
    """Frames of the clip (25 fps; its schedules fit any length)."""
    trackers: tuple[Literal["portrait", "video", "real-time"], ...] = ("portrait", "video", "real-time")
    """The trackers to score."""

    def run(self) -> None:
        from engine.eval.tracking import evaluate_tracking, format_table, known_clip, write_json
        from spatialavatar_app.cmd_shared import Source

        if self.frames < 2:
            raise ValueError(f"--frames {self.frames}: the clip needs at least 2 frames")
        animated, model = Source(self.avatar, self.head_model).load(self.compute_device())
        clip = known_clip(animated, model, self.frames)
        rows = evaluate_tracking(clip, model, self.trackers, log=lambda s: print(s, file=sys.stderr))
        print(format_table(rows))
        print(f"{self.frames} frames of {'the default avatar' if self.avatar is None else self.avatar.name} at "
              f"{clip.frames.shape[2]}², jaw 0-{clip.truth.jaw[:, 0].max():.2f} rad, blinks, gaze ±25° yaw and "
              "±12° pitch, head ±8° yaw; lid = closure in units of the full range; gaze = angle between eyeball "
              "directions")
        if self.json:
            write_json(self.json, rows)
            print(f"wrote {self.json}")


Eval = Union[Annotated[EvalFF, tyro.conf.subcommand("ff")], Annotated[EvalRefine, tyro.conf.subcommand("refine")],
             Annotated[EvalPortraits, tyro.conf.subcommand("portraits")],
             Annotated[EvalTracking, tyro.conf.subcommand("tracking")]]
"""`eval ff`, `eval refine`, `eval portraits` and `eval tracking`: each mode takes only its own options."""
