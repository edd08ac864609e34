"""The anti-spike ablation on one video: refine from the same feed-forward start with the
preset as is and without each anti-spike component (aspect penalty, log-scale clamp, scale
freeze, then all three), then report screen-space aspect statistics, held-out PSNR and the
largest world-space scale, and draw DIR/ablation.png (crops + distribution of r) and
DIR/ablation.md (the table).

Usage: .venv/bin/python scripts/ablate_spikes.py VIDEO --out DIR [--preset fast] [--iterations N] [--size 512]

Resumable: a configuration whose DIR/<name>.savatar exists is loaded instead of refined, and
an interrupted refinement continues from DIR/<name>.ckpt."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.animate import AnimatedAvatar  # noqa: E402
from engine.eval.aspect import aspect_stats, heldout_aspect_ratios  # noqa: E402
from engine.eval.refined import evaluate  # noqa: E402
from engine.headmodel.openhead import load_head_model  # noqa: E402
from engine.io import load_avatar, save_avatar  # noqa: E402
from engine.io.media import VideoReader  # noqa: E402
from engine.refine.config import load_refine_config  # noqa: E402
from engine.refine.refiner import refine  # noqa: E402
from engine.refine.session import prepare  # noqa: E402
from engine.refine.tracking import data_side, track_for_refine  # noqa: E402
from engine.render.select import select  # noqa: E402

OFF = {"lambda_aspect": 0.0, "log_scale_max": None, "scale_freeze": 0}   # as refine_cmd's --no-* switches
CONFIGS = {"full": {}, "no-aspect": {"lambda_aspect": 0.0}, "no-clamp": {"log_scale_max": None},
           "no-scale-freeze": {"scale_freeze": 0}, "none": OFF}
CROP = 96   # crop side at the render size, pixels


def refined_avatars(start, model, data, base, out: Path) -> dict:
    """name -> refined avatar, each from ``start`` with the same seed; existing bundles are reused."""
    avatars = {}
    for name, over in CONFIGS.items():
        cfg = dataclasses.replace(base, **over)
        path = out / f"{name}.savatar"
        if path.exists():
            avatars[name] = load_avatar(path)
            stored = avatars[name].metadata.get("refined", {}).get("config", {})
            differ = sorted(k for k, v in dataclasses.asdict(cfg).items() if k in stored and stored[k] != v)
            if differ:
                print(f"warning: {path} was refined with other {', '.join(differ)}; reporting it as is",
                      file=sys.stderr)
            continue
        print(f"refining {name} ({cfg.iterations} iterations, {over or 'preset as is'})", file=sys.stderr)
        every = max(1, cfg.iterations // 10)

        def progress(p, name=name, every=every):
            if p.iteration % every == 0:
                print(f"  {name} {p.iteration}/{p.total} loss {p.loss:.4f} {p.its_per_second:.1f} it/s",
                      file=sys.stderr)

        ckpt = path.with_suffix(".ckpt")
        avatars[name] = refine(start, model, data, cfg, progress, checkpoint=ckpt, resume=True)
        save_avatar(avatars[name], path)
        ckpt.unlink(missing_ok=True)
    return avatars


def max_scale_mm(avatar, model) -> float:
    """Largest world-space Gaussian axis at the avatar's neutral pose, millimetres."""
    animated = AnimatedAvatar(avatar, model)
    with torch.no_grad():
        return float(animated.gaussians(animated.neutral()).scales.max()) * 1000


def render_on_white(avatar, model, data, t: int, cam) -> np.ndarray:
    """float [H, W, 3] render of held-out frame ``t`` composited on white."""
    params = dataclasses.replace(data.params.frame(t), shape=avatar.shape[None])
    with torch.no_grad():
        f = select(model.device).render(AnimatedAvatar(avatar, model).gaussians(params), cam)
    return (f.rgb + 1 - f.alpha[..., None]).clamp(0, 1).numpy()


def ground_truth_on_white(video: Path, data, t: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(frame ``t`` at ``size`` = (w, h) with the evaluation matte applied on white, the matte)."""
    with VideoReader(video) as frames:
        rgb = next(f for i, f in enumerate(frames) if i == t)
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if rgb.shape[1] > size[0] else cv2.INTER_CUBIC)
    m = cv2.resize(data.mattes[t], size, interpolation=cv2.INTER_LINEAR)
    m = cv2.GaussianBlur(m, (0, 0), 0.5 * size[0] / data.mattes.shape[2]).clip(0, 1)[..., None]  # no staircase
    return rgb.astype(np.float32) / 255 * m + (1 - m), m[..., 0]


def worst_window(err: np.ndarray, matte: np.ndarray, k: int) -> tuple[int, int]:
    """Top-left (y, x) of the k x k window with the largest mean ``err`` inside the matte's bounding box."""
    S = np.pad(err.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = S[k:, k:] - S[:-k, k:] - S[k:, :-k] + S[:-k, :-k]     # [y, x]: window with top-left (y, x)
    ys, xs = np.nonzero(matte > 0.5)
    y0, x0 = min(ys.min(), sums.shape[0] - 1), min(xs.min(), sums.shape[1] - 1)
    y1, x1 = max(y0, min(ys.max() + 1 - k, sums.shape[0] - 1)), max(x0, min(xs.max() + 1 - k, sums.shape[1] - 1))
    sub = sums[y0 : y1 + 1, x0 : x1 + 1]
    iy, ix = np.unravel_index(int(sub.argmax()), sub.shape)
    return y0 + int(iy), x0 + int(ix)


def figure(path: Path, crops: dict, frame: np.ndarray, box: tuple[int, int], ratios: dict, tau: float,
           caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(crops) + 1
    fig = plt.figure(figsize=(2.1 * n, 6.6))
    grid = fig.add_gridspec(2, n, height_ratios=[1, 1.6], hspace=0.12, wspace=0.06)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(frame)
    ax.add_patch(Rectangle((box[1], box[0]), CROP, CROP, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_title("held-out frame", fontsize=9)
    ax.axis("off")
    for j, (name, img) in enumerate(crops.items(), 1):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(img[box[0] : box[0] + CROP, box[1] : box[1] + CROP], interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    for k, (name, r) in enumerate(ratios.items()):
        rs = np.sort(r)
        idx = np.unique(np.geomspace(1, len(rs), 600).astype(int)) - 1      # dense in the tail on a log axis
        # nested widths: curves that coincide stay visible one inside the other
        style = dict(color="0.5", linestyle="--", linewidth=1.2) if k == 0 else dict(linewidth=3.6 - 0.6 * k)
        label = f"{name}: {100 * np.mean(r > np.exp(tau)):.2f}% > e^τ, {100 * np.mean(r > 10):.3f}% > 10"
        ax.plot(rs[::-1][idx], (idx + 1) / len(rs), label=label, **style)
    ax.axvline(np.exp(tau), color="k", linewidth=0.8, linestyle=":")
    ax.text(np.exp(tau), 1.3, f" e^τ = {np.exp(tau):.2f} (penalty threshold)", fontsize=8, va="bottom")
    ax.axvline(10, color="k", linewidth=0.8, linestyle="-.")
    ax.text(10, 1.3, " r = 10", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("screen-space aspect r = sqrt(λmax / λmin) of the projected 2D covariance")
    ax.set_ylabel("fraction of visible Gaussians with aspect > r")
    ax.set_ylim(top=3)
    ax.set_xlim(left=1, right=max(12.0, ax.get_xlim()[1]))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower left")
    fig.text(0.5, 0.0, textwrap.fill(caption, 190), ha="center", va="top", fontsize=8)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's iteration count")
    ap.add_argument("--size", type=int, default=512, help="longer side of the crop renders, pixels")
    ap.add_argument("--frame-step", type=int, default=4, help="aspect statistics on every N-th held-out frame")
    args = ap.parse_args()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])

    base = load_refine_config(args.preset, **({} if args.iterations is None else {"iterations": args.iterations}))
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_head_model()
    start, data = prepare(args.video, model, data_side(base), log=lambda s: print(s, file=sys.stderr))
    if base.photometric_tracking:       # as `refine` trains: one photometric tracking for every configuration
        data = track_for_refine(start, model, data, base)
    data = data.resized(base.resolution, model)
    avatars = {"start (feed-forward)": start, **refined_avatars(start, model, data, base, args.out)}

    frames = data.test[:: args.frame_step]
    rows, ratios = [], {}
    for name, av in avatars.items():
        print(f"evaluating {name}", file=sys.stderr)
        ratios[name] = heldout_aspect_ratios(av, model, data, frames)
        s = aspect_stats(ratios[name], base.aspect_tau)
        rows.append((name, av.metadata.get("refined", {}).get("iterations", 0), evaluate(av, model, data, name).psnr,
                     s.median, s.p99, 100 * s.frac_over_tau, 100 * s.frac_over_10, max_scale_mm(av, model)))

    t = int(data.test[len(data.test) // 2])
    cam = data.cameras[t]
    scale = args.size / max(cam.width, cam.height)
    cam = cam.resized(round(cam.width * scale), round(cam.height * scale))
    gt, matte = ground_truth_on_white(args.video, data, t, (cam.width, cam.height))
    crops = {name: render_on_white(avatars[name], model, data, t, cam) for name in CONFIGS}
    # Where the components make a difference (not where the mesh or matte misses the hair).
    box = worst_window(np.abs(crops["none"] - crops["full"]).mean(-1), matte, CROP)
    crops["ground truth"] = gt
    crop_text = (f"crop: the {CROP}x{CROP} window (at {cam.width}x{cam.height}) with the largest mean "
                 f"|'none' − 'full'| inside the head's matte bounding box, held-out frame {t}; "
                 "renders and matted ground truth on white")
    caption = (f"{data.name}: preset {args.preset}, {base.resolution} px training, seed {base.seed}. {crop_text}. "
               f"Bottom: r over every {args.frame_step}th held-out frame ({len(frames)} frames) "
               f"at {base.resolution} px.")
    figure(args.out / "ablation.png", crops, gt, box, ratios, base.aspect_tau, caption)

    lines = [f"# Anti-spike ablation on {data.name}", "", f"    {command}", "",
             f"Preset `{args.preset}` ({base.resolution} px training renders, seed {base.seed}); every configuration "
             f"starts from the same feed-forward avatar of reference frame {start.metadata.get('reference_frame')}. "
             f"Held-out frames {data.first_test}..{len(data.found) - 1} ({len(data.test)} with a face). "
             f"PSNR: `engine.eval.refined.evaluate` over all of them at "
             f"{data.images.shape[2]}x{data.images.shape[1]} px "
             f"(inside the evaluation matte). r = sqrt(λmax/λmin) of each visible Gaussian's projected 2D covariance "
             f"(eps2d included, as the penalty sees it), pooled over every {args.frame_step}th held-out frame "
             f"({len(frames)} frames) at {base.resolution} px; "
             f"τ = {base.aspect_tau} (e^τ = {np.exp(base.aspect_tau):.2f}). "
             f"Max scale: largest Gaussian axis at the neutral pose.", "",
             "| configuration | iterations | held-out PSNR | median r | p99 r | % r > e^τ | % r > 10 "
             "| max scale (mm) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {it} | {p:.2f} | {med:.2f} | {p99:.2f} | {ft:.2f} | {f10:.3f} | {mm:.1f} |"
              for n, it, p, med, p99, ft, f10, mm in rows]
    lines += ["", "![ablation](ablation.png)", "", f"Figure: {crop_text}.", ""]
    (args.out / "ablation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out / 'ablation.png'} and {args.out / 'ablation.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
