"""`python main.py eval ff VIDEO…`: feed-forward self-reenactment metrics."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro


@dataclass
class Eval:
    """Evaluate avatars. `eval ff VIDEO…`: build from K = 1 and K = 4 frames of each video's first
    half, render 50 frames of its last third with their tracked parameters, and print PSNR and
    SSIM inside the head-and-neck evaluation matte. `eval refine AVATAR VIDEO`: the refined
    avatar and the feed-forward start on the video's held-out frames (MSE, PSNR, SSIM; LPIPS
    needs network weights, which are not shipped, and is reported as unavailable)."""

    what: Annotated[Literal["ff", "refine"], tyro.conf.Positional]
    """ff: the feed-forward stage on videos; refine: a refined avatar on its video's held-out frames."""
    videos: tyro.conf.Positional[list[Path]]
    """ff: talking-head videos. refine: AVATAR VIDEO (the refined bundle, then its video)."""
    side_by_side: Optional[Path] = None
    """refine: also write ground truth | render | 4x error of the held-out frames as an MP4."""
    targets: int = 50
    """Target frames per video (from the last third)."""

    def run(self) -> None:
        if self.what == "refine":
            return self._refine()
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

    def _refine(self) -> None:
        from engine.eval.refined import EVAL_SIDE, evaluate
        from engine.headmodel.openhead import load_head_model
        from engine.io import load_avatar
        from engine.metrics.matte import MATTE_DEFINITION
        from engine.refine.data import MATTE_DILATE
        from engine.refine.session import prepare

        if len(self.videos) != 2:
            raise SystemExit("eval refine takes AVATAR VIDEO")
        avatar_path, video = self.videos
        model = load_head_model()
        refined = load_avatar(avatar_path)
        start, data = prepare(video, model, EVAL_SIDE)
        rows = [evaluate(start, model, data, "feed-forward start"),
                evaluate(refined, model, data, f"refined ({avatar_path.name})", self.side_by_side)]
        print(f"held-out frames {data.first_test}..{len(data.found) - 1} of {video.name} ({rows[0].frames} with a face), "
              f"{data.images.shape[2]}x{data.images.shape[1]} px")
        print(f"{'avatar':<34} {'MSE x1e-3':>10} {'PSNR':>7} {'SSIM':>7} {'LPIPS':>12}")
        for r in rows:
            print(f"{r.name[:34]:<34} {r.mse * 1e3:>10.3f} {r.psnr:>7.2f} {r.ssim:>7.4f} {'unavailable':>12}")
        print(MATTE_DEFINITION.format(dilate=MATTE_DILATE))
        if self.side_by_side:
            print(f"wrote {self.side_by_side}")
