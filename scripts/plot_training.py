"""Plot a training log (OUT/log.jsonl of `python main.py train`): the loss terms per step and the
held-out PSNR per validation. Usage: python scripts/plot_training.py LOG.jsonl OUT.png"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(y: np.ndarray, n: int = 10) -> np.ndarray:
    return np.convolve(y, np.ones(n) / n, mode="valid") if len(y) > n else y


def main(log: Path, out: Path) -> None:
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    steps = [r for r in rows if "loss" in r]
    val = {r["step"]: r for r in rows if "val_psnr" in r}
    ckpt = log.parent / "network.pt"
    if ckpt.exists():              # its history also has step 0 (the untrained network)
        import torch

        val |= {r["step"]: r for r in torch.load(ckpt, map_location="cpu", weights_only=True).get("history", [])}
    val = [val[k] for k in sorted(val)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.array([r["step"] for r in steps])
    for key in ("loss", "l1", "ms_ssim", "box"):
        y = np.array([r.get(key, np.nan) for r in steps])
        a.plot(x[len(x) - len(smooth(y)):], smooth(y), label=key)
    a.set_xlabel("step"), a.set_yscale("log"), a.set_title("training loss (running mean of 10 log points)"), a.legend()
    b.plot([r["step"] for r in val], [r["val_psnr"] for r in val], "o-")
    if val:
        b.axhline(val[0]["val_psnr"], color="grey", ls="--", label="step 0 = projective stage")
    b.set_xlabel("step"), b.set_ylabel("dB"), b.set_title("held-out self-reenactment PSNR"), b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
