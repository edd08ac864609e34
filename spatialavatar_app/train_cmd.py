"""`python main.py train prepare|phase1|phase2`: the feed-forward network's data and training."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from spatialavatar_app.cmd_shared import OnDevice, OnHeadModel


@dataclass
class Train(OnDevice, OnHeadModel):
    """Train the paper's feed-forward network (docs/training.md).

    `train prepare INPUTS… --data DIR`: track videos (and CelebV-HQ folders, NeRSemble sequences,
    portrait groups) once into DIR/*.clip.npz. `train phase1 --data DIR`: monocular-temporal
    training; `train phase2 --data DIR --anchor PHASE1.pt`: multi-view continuation with the
    L2-SP anchor and the cross-time mix. Several GPUs or nodes:
    `torchrun --nproc_per_node=G main.py train phase1 …`. Training resumes from OUT/last.pt;
    OUT/network.pt is what `--generator network --checkpoint` takes."""

    what: Annotated[Literal["prepare", "phase1", "phase2"], tyro.conf.Positional]
    inputs: tyro.conf.Positional[list[Path]] = dataclasses.field(default_factory=list)
    """prepare: videos (.mp4…), CelebV-HQ folders (with 35666/ or *.mp4), NeRSemble sequence folders
    (with transforms_train.json; FLAME head model only), or `group:NAME=a.jpg,b.jpg` portrait groups."""
    data: Path = Path("out/train_data")
    """Folder of tracked clips (*.clip.npz)."""
    out: Path = Path("out/train")
    """Checkpoints and log.jsonl go here."""
    config: Optional[Path] = None
    """A JSON TrainConfig (any subset of its fields); the options below override it."""
    preset: Literal["paper", "cpu-small"] = "paper"
    """paper: the paper's sizes and schedule; cpu-small: what this repository trains on one CPU."""
    steps: Optional[int] = None
    holdout: Optional[list[str]] = None
    """Clip names never trained on; the first is validated every --validate-every steps."""
    anchor: Optional[Path] = None
    """phase2: the Phase-1 checkpoint to continue from (and to anchor to with L2-SP)."""
    backbone_weights: Optional[Path] = None
    """DINOv3 ViT-B/16 weights (dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth from
    github.com/facebookresearch/dinov3 after accepting its licence); a small trainable ViT without."""
    lpips_weights: Optional[list[Path]] = None
    """LPIPS weight files (see `eval --help`); the LPIPS term is skipped without them."""
    limit: Optional[int] = None
    """prepare: at most this many clips per CelebV-HQ folder."""

    def run(self) -> None:

        model = self.load_model()
        if self.what == "prepare":
            return self._prepare(model)
        from engine.train.config import TrainConfig
        from engine.train.trainer import train

        cfg = TrainConfig.load(self.config) if self.config else (
            TrainConfig.cpu_small() if self.preset == "cpu-small" else
            TrainConfig.phase1() if self.what == "phase1" else TrainConfig.phase2(anchor=""))
        net = cfg.network
        if self.backbone_weights:
            net = dataclasses.replace(net, backbone_weights=str(self.backbone_weights))
        over = {"phase": 1 if self.what == "phase1" else 2, "data": str(self.data), "out": str(self.out),
                "network": net}
        if self.steps is not None:
            over["steps"] = self.steps
        if self.holdout is not None:
            over["holdout"] = tuple(self.holdout)
        if self.anchor is not None:
            over["anchor"] = str(self.anchor)
        elif not cfg.anchor:
            over["anchor"] = None
        if self.lpips_weights:
            over["lpips_weights"] = tuple(str(p) for p in self.lpips_weights)
        cfg = dataclasses.replace(cfg, **over)
        if cfg.phase == 2 and not cfg.anchor:
            raise ValueError("train phase2 continues from Phase 1: give --anchor OUT/network.pt of a phase1 run")
        last = train(cfg, model, device=self.compute_device())
        print(f"checkpoint: {last.parent / 'network.pt'} (resumable state: {last})")

    def _prepare(self, model) -> None:
        from engine.io.media import is_video
        from engine.train.clips import prepare_portraits, prepare_video
        from engine.train.datasets import celebvhq_clips, nersemble_clip

        if not self.inputs:
            raise ValueError("train prepare: give videos, CelebV-HQ folders, NeRSemble sequences or "
                             "group:NAME=a.jpg,b.jpg")
        for item in self.inputs:
            s = str(item)
            if s.startswith("group:"):
                name, _, files = s[len("group:"):].partition("=")
                out = prepare_portraits([Path(f) for f in files.split(",")], model, self.data, name)
            elif item.is_dir() and any(item.glob("transforms*.json")):
                out = nersemble_clip(item, model).save(self.data / f"{item.name}.clip.npz")
            elif item.is_dir():
                paths = celebvhq_clips(item, model, self.data, self.limit,
                                       progress=lambda d, n: print(f"  {d}/{n} clips", flush=True))
                out = f"{len(paths)} clips in {self.data}"
            elif is_video(item):
                out = prepare_video(item, model, self.data)
            else:
                raise ValueError(f"train prepare: {item} is not a video, a folder or a group:NAME=… list")
            print(f"{item}: {out}", flush=True)
