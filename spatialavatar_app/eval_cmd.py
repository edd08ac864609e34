"""`python main.py eval ff VIDEO…`: feed-forward self-reenactment metrics."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


@dataclass
class Eval:
    """Evaluate avatars. `eval ff VIDEO…`: build from K = 1 and K = 4 frames of each video's first
    half, render 50 frames of its last third with their tracked parameters, and print PSNR and
    SSIM inside the head-and-neck evaluation matte."""

    what: Annotated[Literal["ff"], tyro.conf.Positional]
    """What to evaluate (ff: the feed-forward stage)."""
    videos: tyro.conf.Positional[list[Path]]
    """Talking-head videos."""
    targets: int = 50
    """Target frames per video (from the last third)."""

    def run(self) -> None:
        from engine.eval.feedforward import DILATE_PX, evaluate_video
        from engine.headmodel.openhead import load_head_model
        from engine.metrics.matte import MATTE_DEFINITION

        model = load_head_model()
        rows = []
        for v in self.videos:
            rows += evaluate_video(v, model, n_targets=self.targets)
            for r in rows[-2:]:
                print(f"  {r.video}: K={r.k} PSNR {r.psnr:.2f} SSIM {r.ssim:.4f}")
        print(f"\n{'video':<30} {'K':>2} {'PSNR':>7} {'SSIM':>7} {'targets':>8}")
        for r in rows:
            print(f"{r.video[:30]:<30} {r.k:>2} {r.psnr:>7.2f} {r.ssim:>7.4f} {r.n_targets:>8}")
        for k in sorted({r.k for r in rows}):
            sel = [r for r in rows if r.k == k]
            print(f"{'mean':<30} {k:>2} {sum(r.psnr for r in sel) / len(sel):>7.2f} "
                  f"{sum(r.ssim for r in sel) / len(sel):>7.4f}")
        print(MATTE_DEFINITION.format(dilate=DILATE_PX))
