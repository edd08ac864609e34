"""`python main.py eval ff VIDEO…`: feed-forward self-reenactment metrics;
`python main.py eval refine AVATAR VIDEO`: a refined avatar on its video's held-out frames."""
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
    avatar and the feed-forward start on the video's held-out frames (MSE, PSNR, SSIM, MS-SSIM,
    and LPIPS when --lpips-weights gives its weight files, which are not shipped; otherwise
    LPIPS is reported as unavailable)."""

    what: Annotated[Literal["ff", "refine"], tyro.conf.Positional]
    """ff: the feed-forward stage on videos; refine: a refined avatar on its video's held-out frames."""
    videos: tyro.conf.Positional[list[Path]]
    """ff: talking-head videos. refine: AVATAR VIDEO (the refined bundle, then its video)."""
    side_by_side: Optional[Path] = None
    """refine: also write ground truth | render | 4x error of the held-out frames as an MP4."""
    targets: int = 50
    """Target frames per video (from the last third)."""
    lpips_weights: Optional[list[Path]] = None
    """refine: compute LPIPS (AlexNet, v0.1) from these two files, in any order: torchvision's
    alexnet-owt-7be5be79.pth (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth) and
    alex.pth (lpips/weights/v0.1/alex.pth of github.com/richzhang/PerceptualSimilarity)."""
    json: Optional[Path] = None
    """refine: also write the table's rows to this JSON file (null where a metric is unavailable)."""

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
        from engine.eval.refined import EVAL_SIDE, evaluate, write_json
        from engine.headmodel.openhead import load_head_model
        from engine.io import load_avatar
        from engine.metrics.image import ms_ssim_min_side
        from engine.metrics.lpips import load_lpips
        from engine.metrics.matte import MATTE_DEFINITION
        from engine.refine.data import MATTE_DILATE
        from engine.refine.session import prepare

        if len(self.videos) != 2:
            raise SystemExit("eval refine takes AVATAR VIDEO")
        lpips = None
        if self.lpips_weights is not None:
            if len(self.lpips_weights) > 2:
                raise SystemExit("--lpips-weights takes the AlexNet checkpoint and alex.pth (two files)")
            try:
                lpips = load_lpips(self.lpips_weights)
            except (OSError, ValueError) as e:
                raise SystemExit(str(e)) from e
        avatar_path, video = self.videos
        model = load_head_model()
        refined = load_avatar(avatar_path)
        start, data = prepare(video, model, EVAL_SIDE)
        rows = [evaluate(start, model, data, "feed-forward start", lpips=lpips),
                evaluate(refined, model, data, f"refined ({avatar_path.name})", self.side_by_side, lpips=lpips)]
        print(f"held-out frames {data.first_test}..{len(data.found) - 1} of {video.name} ({rows[0].frames} with a face), "
              f"{data.images.shape[2]}x{data.images.shape[1]} px")
        print(f"{'avatar':<34} {'MSE x1e-3':>10} {'PSNR':>7} {'SSIM':>7} {'MS-SSIM':>8} {'LPIPS':>12}")
        for r in rows:
            msssim = "n/a" if r.ms_ssim is None else f"{r.ms_ssim:.4f}"
            lp = "unavailable" if r.lpips is None else f"{r.lpips:.4f}"
            print(f"{r.name[:34]:<34} {r.mse * 1e3:>10.3f} {r.psnr:>7.2f} {r.ssim:>7.4f} {msssim:>8} {lp:>12}")
        matte = MATTE_DEFINITION.format(dilate=MATTE_DILATE)
        print(matte)
        if rows[0].ms_ssim is None:
            print(f"MS-SSIM n/a: it needs frames of at least {ms_ssim_min_side()} px on the smaller side")
        if lpips is None:
            print("LPIPS unavailable: pass --lpips-weights alexnet-owt-7be5be79.pth alex.pth to compute it")
        if self.side_by_side:
            print(f"wrote {self.side_by_side}")
        if self.json:
            write_json(self.json, rows, video.name, matte)
            print(f"wrote {self.json}")
