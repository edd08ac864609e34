"""Time SSIM forward + backward as the refiner calls it (256x256x3 prediction with grad, target
without) against the previous grouped-conv2d blur, and check both agree.
Usage: .venv/bin/python scripts/bench_ssim.py [--threads N] [--side PX] [--reps N]"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.metrics.image import _chw, _gaussian_window, ssim  # noqa: E402


def ssim_conv2d(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The implementation before the banded blur (grouped conv2d, one blur per moment)."""
    x, y = _chw(a), _chw(b)
    c = x.shape[1]
    g = _gaussian_window(window, sigma).to(x)
    wx, wy = g.reshape(1, 1, 1, -1).expand(c, 1, 1, window), g.reshape(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(args.side, args.side, 3, generator=g)
    target = (base + 0.1 * torch.randn(base.shape, generator=g)).clamp(0, 1)
    fns = {"conv2d (before)": ssim_conv2d, "banded matmul": ssim}
    out = {}
    for name, f in fns.items():
        p = base.clone().requires_grad_(True)
        v = f(p, target)
        v.backward()
        out[name] = float(v.detach()), p.grad
    (v0, g0), (v1, g1) = out.values()
    print(f"threads {torch.get_num_threads()}, {args.side}x{args.side}x3: |value diff| {abs(v0 - v1):.1e}, "
          f"max |grad diff| {float((g0 - g1).abs().max()):.1e} (grad max {float(g0.abs().max()):.1e})")
    fwd = {k: [] for k in fns}
    both = {k: [] for k in fns}
    for _ in range(args.reps):          # interleaved, so background load hits both alike
        for name, f in fns.items():
            p = base.clone().requires_grad_(True)
            t0 = time.perf_counter()
            v = f(p, target)
            t1 = time.perf_counter()
            v.backward()
            t2 = time.perf_counter()
            fwd[name].append(t1 - t0)
            both[name].append(t2 - t0)
    for name in fns:
        print(f"{name:<16} forward {statistics.median(fwd[name]) * 1e3:6.2f} ms   forward+backward "
              f"{statistics.median(both[name]) * 1e3:6.2f} ms (median; min {min(both[name]) * 1e3:.2f})")


if __name__ == "__main__":
    main()
