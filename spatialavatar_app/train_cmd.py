"""`python main.py train prepare|phase1|phase2`: the feed-forward network's data and training
(docs/training.md), one subcommand each, so an option of one mode is never silently ignored by
another. Several GPUs or nodes: `torchrun --nproc_per_node=G main.py train phase1 …`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import tyro

from spatialavatar_app.cmd_shared import OnDevice, OnHeadModel


@dataclass
class TrainPrepare(OnHeadModel):
    """Track videos (and CelebV-HQ folders, NeRSemble sequences, portrait groups) once into
    DATA/*.clip.npz, the clips `train phase1|phase2` read."""

    inputs: tyro.conf.Positional[list[Path]] = dataclasses.field(default_factory=list)
    """Videos (.mp4…), CelebV-HQ folders (with 35666/ or *.mp4), NeRSemble sequence folders
    (with transforms_train.json; FLAME head model only), or `group:NAME=a.jpg,b.jpg` portrait groups."""
    data: Path = Path("out/train_data")
    """Folder the tracked clips (*.clip.npz) are written to."""
    limit: Optional[int] = None
    """At most this many clips per CelebV-HQ folder."""

    def run(self) -> None:
        self._prepare(self.load_model())

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


@dataclass
class _TrainRun(OnDevice, OnHeadModel):
    """What Phase 1 and Phase 2 share. Training resumes from OUT/last.pt; OUT/network.pt is what
    `--generator network --checkpoint` takes."""

    data: Path = Path("out/train_data")
    """Folder of tracked clips (*.clip.npz, from `train prepare`)."""
    out: Path = Path("out/train")
    """Checkpoints and log.jsonl go here."""
    config: Optional[Path] = None
    """A JSON TrainConfig (any subset of its fields); the options below override it."""
    preset: Literal["paper", "cpu-small"] = "paper"
    """paper: the paper's sizes and schedule; cpu-small: what this repository trains on one CPU."""
    steps: Optional[int] = None
    holdout: Optional[list[str]] = None
    """Clip names never trained on; the first is validated every --validate-every steps."""
    backbone_weights: Optional[Path] = None
    """DINOv3 ViT-B/16 weights (dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth from
    github.com/facebookresearch/dinov3 after accepting its licence); a small trainable ViT without."""
    lpips_weights: Optional[list[Path]] = None
    """LPIPS weight files (see `eval ff --help`); the LPIPS term is skipped without them."""

    phase = 1
    anchor: Optional[Path] = dataclasses.field(default=None, init=False)

    def run(self) -> None:
        from engine.train.config import TrainConfig
        from engine.train.trainer import train

        model = self.load_model()
        cfg = TrainConfig.load(self.config) if self.config else (
            TrainConfig.cpu_small() if self.preset == "cpu-small" else
            TrainConfig.phase1() if self.phase == 1 else TrainConfig.phase2(anchor=""))
        net = cfg.network
        if self.backbone_weights:
            net = dataclasses.replace(net, backbone_weights=str(self.backbone_weights))
        over = {"phase": self.phase, "data": str(self.data), "out": str(self.out), "network": net}
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


@dataclass
class TrainPhase1(_TrainRun):
    """Phase 1: monocular-temporal training on the prepared clips."""


@dataclass
class TrainPhase2(_TrainRun):
    """Phase 2: the multi-view continuation of a Phase-1 network, with the L2-SP anchor to it
    and the cross-time mix."""

    anchor: Optional[Path] = None
    """The Phase-1 checkpoint to continue from and to anchor to with L2-SP (its OUT/network.pt)."""
    phase = 2


Train = Union[Annotated[TrainPrepare, tyro.conf.subcommand("prepare")],
              Annotated[TrainPhase1, tyro.conf.subcommand("phase1")],
              Annotated[TrainPhase2, tyro.conf.subcommand("phase2")]]
"""`train prepare|phase1|phase2`: each mode takes only its own options."""
