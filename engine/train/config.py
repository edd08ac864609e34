"""Training configurations (paper §2.3–2.4, §5 and its appendix's reported optima).

`TrainConfig.phase1()` and `.phase2()` are the paper's schedules at its scale; `.cpu_small()`
is what this repository trains on one CPU as a proof (see docs/training.md).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.generator.network import NetworkConfig
from engine.train.losses import LossWeights


@dataclass(frozen=True)
class TrainConfig:
    phase: int = 1
    data: str = "out/train_data"
    """Folder of ``*.clip.npz`` (`python main.py train prepare`)."""
    holdout: tuple[str, ...] = ()
    """Clip names never trained on (their first one is the validation clip)."""
    out: str = "out/train"
    """Checkpoints (``last.pt``, ``step-N.pt``) and the log (``log.jsonl``) go here."""
    steps: int = 200_000
    lr: float = 2.5e-4
    """Peak learning rate (the paper's Phase-1 optimum)."""
    warmup: int = 1000
    schedule: str = "linear"
    """'linear' decay to 0 after the warm-up (the paper's best Phase-1 schedule) or 'constant'."""
    layer_decay: float = 0.65
    """Layer-wise LR decay of a trainable backbone: block i of n gets lr·decay^(n−i)."""
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    k_max: int = 4
    hard_temperature: float | None = 0.5
    """Hard source sampler: first source weighted ∝ exp(dissimilarity / temperature)."""
    cross_time: float = 0.25
    """Phase 2: fraction of samples whose sources come from another time."""
    anchor: str | None = None
    """Phase 2: the Phase-1 checkpoint (initialisation and L2-SP anchor)."""
    l2sp: float = 1e-3
    """Phase 2: weight of Σ‖θ − θ_phase1‖²."""
    targets_per_sample: int = 1
    """Target frames rendered per encoded source set (more amortises the encoder on a CPU)."""
    source_stride: int = 1
    """Only every n-th frame of a clip may be a source (a CPU run caches their warps)."""
    losses: LossWeights = LossWeights()
    network: NetworkConfig = NetworkConfig()
    lpips_weights: tuple[str, ...] = ()
    """LPIPS weight files (`engine.metrics.lpips.load_lpips`); the term is skipped without them."""
    checkpoint_every: int = 1000
    validate_every: int = 500
    validation_targets: int = 8
    log_every: int = 20
    seed: int = 0

    @staticmethod
    def phase1(**kw) -> "TrainConfig":
        """The paper's Phase 1: its network sizes, linear schedule from 2.5e-4."""
        return TrainConfig(**{"phase": 1, "network": NetworkConfig.paper(), **kw})

    @staticmethod
    def phase2(anchor: str, **kw) -> "TrainConfig":
        """The paper's Phase 2: continues ``anchor`` with L2-SP and 25 % cross-time samples."""
        return TrainConfig(**{"phase": 2, "anchor": anchor, "network": NetworkConfig.paper(), "steps": 50_000,
                              "lr": 1e-4, **kw})

    @staticmethod
    def cpu_small(**kw) -> "TrainConfig":
        """The configuration trained on this repository's CPU: a few thousand steps, the small
        ViT, slim StyleUNet, two targets per source set, sources from every 4th frame."""
        net = NetworkConfig(unet_channels=(8, 16, 32, 64, 96), style_dim=64, head_hidden=32, residual_hidden=32,
                            dpt_channels=32, feature_channels=16)
        base = dict(steps=3000, warmup=100, lr=5e-4, targets_per_sample=2, source_stride=4, network=net,
                    checkpoint_every=250, validate_every=250, validation_targets=8, log_every=10)
        return TrainConfig(**{**base, **kw})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        tup = lambda v: tuple(v) if isinstance(v, list) else v    # noqa: E731
        d["network"] = NetworkConfig(**{k: tup(v) for k, v in d.get("network", {}).items()})
        d["losses"] = LossWeights(**d.get("losses", {}))
        return TrainConfig(**{k: tup(v) for k, v in d.items()})

    @staticmethod
    def load(path: Path) -> "TrainConfig":
        """A JSON file with any subset of the fields (nested ``network`` / ``losses`` too)."""
        try:
            return TrainConfig.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a training config ({e})") from None
