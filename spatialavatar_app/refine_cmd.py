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
        from engine.refine.config import load_refine_config, stages
        from engine.refine.refiner import RefineCancelled, refine_stages
        from engine.refine.session import prepare
        from engine.refine.tracking import data_side

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
        avatar, data = prepare(self.video, model, data_side(cfg), start, log=lambda s: print(s, file=sys.stderr),
                               network=self.network, outer=self.outer)
        stop = threading.Event()
        if cfg.photometric_tracking or self.tracking is not None:
            data = self._tracked(cfg, model, avatar, data, stop)
        total = sum(c.iterations for c in stages(cfg))
        bar = tqdm(total=total, desc="refining", unit="it")

        def progress(p) -> None:
            bar.n = p.iteration
            bar.set_postfix(loss=f"{p.loss:.4f}", eta=f"{p.eta_seconds / 60:.1f} min")
            bar.refresh()

        try:
            refined = refine_stages(avatar, model, data, cfg, progress, stop, ckpt, self.resume)
        except KeyboardInterrupt:
            stop.set()
            bar.close()
            raise SystemExit(f"stopped; the last checkpoint is {ckpt} (continue with --resume)") from None
        except RefineCancelled:
            raise SystemExit(f"cancelled; the last checkpoint is {ckpt}") from None
        bar.close()
        save_avatar(refined, self.out)
        print(f"wrote {self.out} ({total} iterations on {len(data.train)} frames of {data.name}; "
              f"{len(data.test)} held out, {int((~data.found).sum())} without a face skipped)")

    def _tracked(self, cfg, model, avatar, data, stop: threading.Event):
        """``data`` on the photometric tracking: reused from a file when there is one (see
        --tracking), otherwise made now from ``avatar`` (`engine.refine.tracking`); written beside
        --out either way."""
        from engine.io.params import save_params
        from engine.refine.align import AlignCancelled
        from engine.refine.session import tracking_path
        from engine.refine.tracking import track_for_refine
        from spatialavatar_app.cmd_shared import StageBars, tracked_from

        out = tracking_path(self.out)
        reuse = self.tracking
        if reuse is None and self.avatar is not None and tracking_path(self.avatar).exists():
            reuse = tracking_path(self.avatar)
        if reuse is None and self.resume and out.exists():
            reuse = out
        if reuse is not None:
            data = tracked_from(reuse, data, model)
            print(f"tracking from {reuse}", file=sys.stderr)
        else:
            with StageBars() as bars:
                try:
                    data = track_for_refine(avatar, model, data, cfg, bars, stop)
                except KeyboardInterrupt:
                    raise SystemExit("stopped during the photometric tracking; nothing was written") from None
                except AlignCancelled:
                    raise SystemExit("cancelled during the photometric tracking") from None
        if reuse is None or reuse.resolve() != out.resolve():
            save_params(data.params, out)
            print(f"wrote {out}", file=sys.stderr)
        return data

