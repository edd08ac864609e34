"""`python main.py refine VIDEO --out AVATAR`: the per-subject refiner with a progress bar."""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from spatialavatar_app.cmd_shared import OnDevice, OnHeadModel


@dataclass
class Refine(OnDevice, OnHeadModel):
    """Refine an avatar on a video of the person (paper §2.5): track the video, start from the
    feed-forward avatar of its reference frame (or --avatar), optimise for --iterations steps on
    the training frames (the last quarter, or 350 frames of long videos, is held out), save.
    With the default preset every frame's tracking is first aligned photometrically: to the start
    avatar, then to a tracker avatar (the start refined briefly); that tracking is written beside
    the avatar (<out>.tracking.npz) for `eval refine`.
    Ctrl-C stops cleanly; the last checkpoint stays loadable and --resume continues it."""

    video: tyro.conf.Positional[Path]
    """The talking-head video."""
    out: Path = Path("out/refined.savatar")
    """The refined avatar bundle to write."""
    avatar: Optional[Path] = None
    """Start from this avatar instead of the feed-forward one of the reference frame."""
    network: Optional[Path] = None
    """Start from the trained feed-forward network's avatar of the reference frame (OUT/network.pt
    of `python main.py train`, e.g. models/network_cpu_small.pt) instead of the projective stage's."""
    preset: str = "default"
    """Hyperparameter preset: default (10K iterations at 256 px, photometric tracking first), fast
    (1.5K at 192 px, landmark tracking), polish (3K at up to 512 px, to continue a refined --avatar),
    residual (the default plus an expression residual the avatar keeps, trained with dropout),
    quality (residual, then polish on the same tracking: 13K steps, about twice default's time),
    or a .json file."""
    iterations: Optional[int] = None
    """Override the preset's iteration count (quality: its first stage's)."""
    resolution: Optional[int] = None
    """Override the preset's training resolution (longer side, pixels; quality: its first stage's)."""
    checkpoint: Optional[Path] = None
    """Checkpoint file (default: <out>.ckpt); a preset's later stages write <stem>.stage2.ckpt, ... beside it."""
    resume: bool = False
    """Continue from the checkpoint if it exists."""
    aspect: bool = True
    """The screen-space aspect penalty (--no-aspect: the ablation without it)."""
    clamp: bool = True
    """The hard log-scale clamp (--no-clamp: the ablation without it)."""
    scale_freeze: bool = True
    """The scale freeze at the start (--no-scale-freeze: the ablation without it)."""
    random_background: bool = True
    """A shared random background each step (--no-random-background: the ablation on white)."""
    outer: bool = True
    """Start with the outer layer (hair shell and bust) and train on the portrait matte; with
    --no-outer, the head page alone on the head-and-neck matte, as avatars were before they had one."""
    landmark_tracking: bool = False
    """Train on the landmark tracker's parameters as they are (no photometric tracking stage)."""
    tracking: Optional[Path] = None
    """Train on this tracking (a .tracking.npz an earlier refine wrote) instead of tracking the
    video photometrically. Without it, a tracking beside --avatar (<avatar stem>.tracking.npz) is
    reused, so continuing a refined avatar (e.g. --preset polish) keeps the tracking it was
    refined with; with --resume, the one beside --out."""

    def run(self) -> None:
        from tqdm import tqdm

        from engine.io import check_writable, load_avatar, save_avatar
        from engine.io.params import save_params
        from engine.jobs import Cancelled
        from engine.refine.config import load_refine_config, stages
        from engine.refine.session import refine_video, tracking_of, tracking_path
        from spatialavatar_app.cmd_shared import StageBars

        over = {k: v for k, v in (("iterations", self.iterations), ("resolution", self.resolution)) if v is not None}
        if not self.aspect:
            over["lambda_aspect"] = 0.0
        if not self.clamp:
            over["log_scale_max"] = None
        if not self.scale_freeze:
            over["scale_freeze"] = 0
        if not self.random_background:
            over["random_background"] = False
        if self.landmark_tracking:
            over["photometric_tracking"] = False
        cfg = load_refine_config(self.preset, **over)
        ckpt = self.checkpoint or self.out.with_suffix(".ckpt")
        check_writable(self.out, ckpt)      # before minutes of tracking, not after
        if self.tracking is not None:       # a file that is not a tracking fails now, not after them
            from engine.io.params import load_params

            load_params(self.tracking)
        if self.resume and ckpt.exists():
            from engine.refine.refiner import read_checkpoint

            read_checkpoint(ckpt)
        model = self.load_model(self.compute_device())
        start = load_avatar(self.avatar) if self.avatar else None
        # The tracking to reuse: --tracking, else the one beside --avatar, else (resuming) the one beside --out.
        out_tracking = tracking_path(self.out)
        reuse = tracking_of(self.avatar, self.tracking) or (tracking_of(self.out) if self.resume else None)
        if reuse is not None:
            print(f"tracking from {reuse}", file=sys.stderr)
        total = sum(c.iterations for c in stages(cfg))
        bars, bar, stage = StageBars(), None, [""]

        def progress(name: str, fraction: float, step) -> None:
            nonlocal bar
            stage[0] = name
            if name == "tracking":
                return                      # the landmark tracker's lines say where it is
            if step is None:
                bars(name, fraction)
                return
            if bar is None:
                bars.close()
                bar = tqdm(total=total, desc="refining", unit="it")
            bar.n = step.iteration
            bar.set_postfix(loss=f"{step.loss:.4f}", eta=f"{step.eta_seconds / 60:.1f} min")
            bar.refresh()

        def tracked(data) -> None:
            if reuse is None and not cfg.photometric_tracking:
                return                      # the landmark tracker's parameters, as they are: nothing to keep
            if reuse is None or reuse.resolve() != out_tracking.resolve():
                save_params(data.params, out_tracking)
                print(f"wrote {out_tracking}", file=sys.stderr)

        stop = threading.Event()
        try:
            _, refined, data = refine_video(self.video, model, cfg, start, tracking=reuse, network=self.network,
                                            outer=self.outer, progress=progress, cancel=stop, checkpoint=ckpt,
                                            resume=self.resume, log=lambda s: print(s, file=sys.stderr),
                                            on_tracked=tracked)
        except (KeyboardInterrupt, Cancelled) as e:
            stop.set()
            bars.close()
            if bar is not None:
                bar.close()
            how = "stopped" if isinstance(e, KeyboardInterrupt) else "cancelled"
            if stage[0] != "refining":
                raise SystemExit(f"{how} during the tracking; nothing was written") from None
            raise SystemExit(f"{how}; the last checkpoint is {ckpt} (continue with --resume)") from None
        if bar is not None:
            bar.close()
        save_avatar(refined, self.out)
        print(f"wrote {self.out} ({total} iterations on {len(data.train)} frames of {data.name}; "
              f"{len(data.test)} held out, {int((~data.found).sum())} without a face skipped)")
