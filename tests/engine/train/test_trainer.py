"""The training loop end to end on a tiny synthetic clip: steps, validation, checkpoints,
resume, the schedule, layer-wise LR decay, and gradient averaging across torchrun ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.generator.api import GeneratorChoice, generate
from engine.generator.network import NetworkAvatar, NetworkConfig
from engine.generator.projective import Source
from engine.headmodel.base import HeadModel
from engine.track.fit import intrinsics
from engine.train.clips import Clip
from engine.train.config import TrainConfig
from engine.train.trainer import FeedForwardNetwork, learning_rate, param_groups, train
from engine.types import HeadParams

TINY = NetworkConfig.tiny()
SIZE = 64


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


def fake_clip(model: HeadModel, name: str, n: int = 6, seed: int = 0) -> Clip:
    """Noise frames of a head turning a little, 0.8 m in front of the tracker's camera."""
    rng = np.random.default_rng(seed)
    z = lambda k: torch.zeros(n, k)    # noqa: E731
    yaw = torch.linspace(-0.3, 0.3, n)
    params = HeadParams(z(model.n_shape), torch.randn(n, model.n_expr) * 0.2, torch.stack([0 * yaw, yaw, 0 * yaw], 1),
                        z(3), z(3), z(6), torch.tensor([[0.0, 0.0, -0.8]]).repeat(n, 1))
    K = intrinsics(np.full(n, 180.0), np.tile([[SIZE, SIZE]], (n, 1))).astype(np.float32)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    mattes = np.full((n, SIZE, SIZE), 255, np.uint8)
    boxes = np.tile(np.array([16, 16, 48, 48], np.float32), (n, 1))
    return Clip(name, images, mattes, params, K, boxes, np.arange(n), np.zeros(n, int), np.ones(n, bool))


def test_train_writes_checkpoints_validates_and_resumes(model, tmp_path):
    data = tmp_path / "data"
    fake_clip(model, "a", seed=1).save(data / "a.clip.npz")
    fake_clip(model, "held", seed=2).save(data / "held.clip.npz")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), holdout=("held",), steps=3, warmup=1,
                      network=TINY, checkpoint_every=2, validate_every=3, validation_targets=2, log_every=1,
                      targets_per_sample=2)
    lines: list[str] = []
    train(cfg, model, log=lines.append)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["l1"] > 0 for r in steps)
    assert {"ms_ssim", "box", "tv_position", "tv_scale", "jacobian", "residual"} <= set(steps[0])
    vals = [r for r in log if "val_psnr" in r]
    assert [r["step"] for r in vals] == [0, 3] and all(np.isfinite(r["val_psnr"]) for r in vals)
    assert "step 0: held-out PSNR" in lines[0]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)     # plain containers only
    assert state["step"] == 3 and [h["step"] for h in state["history"]] == [0, 3]
    # resume: continues at step 4, keeps the history
    train(TrainConfig(**{**cfg.__dict__, "steps": 5}), model, log=lines.append)
    assert any("resumed from" in x and "at step 3" in x for x in lines)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5]
    # the weights-only checkpoint is what --generator network takes
    clip = fake_clip(model, "x", seed=3)
    src = [Source(clip.images[0], clip.mattes[0], clip.params.frame(0), clip.K[0])]
    avatar = generate(GeneratorChoice("network", tmp_path / "run" / "network.pt"), model, src, clip.params.shape[0])
    assert isinstance(avatar, NetworkAvatar)
    g = avatar.gaussians(clip.params.frame(1))
    assert torch.isfinite(g.means).all() and len(g.means) == len(avatar.slots) + len(avatar.model.outer())


class _Payload:
    """A pickle that, if unpickled with full pickle, creates the file it names."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_last_pt_is_refused_not_run(model, tmp_path):
    """A pickle planted as OUT/last.pt is a one-line error naming it; its code never runs."""
    from engine.train.trainer import load_resume_state

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "spatialavatar-network-1", "weights": {}, "optimizer": {}, "step": 1,
                "evil": _Payload(marker)}, run / "last.pt")
    with pytest.raises(ValueError, match="last.pt: not a resumable training checkpoint"):
        load_resume_state(run / "last.pt")
    data = tmp_path / "data"
    fake_clip(model, "a", seed=1).save(data / "a.clip.npz")
    cfg = TrainConfig(data=str(data), out=str(run), steps=1, warmup=1, network=TINY, validation_targets=1,
                      targets_per_sample=2)
    with pytest.raises(ValueError, match="not a resumable training checkpoint"):
        train(cfg, model, log=lambda s: None)
    assert not marker.exists()


def test_training_lowers_the_loss_of_a_learnable_task(model, tmp_path):
    """Two frames, one red and one blue, each the other's source: the untrained network (the
    projective stage) paints the source's colour; the view- and expression-conditioned heads
    can learn to paint the target's, and the loss must fall as they do."""
    data = tmp_path / "data"
    c = fake_clip(model, "a", n=2, seed=4)
    c.images[0], c.images[1] = (200, 60, 60), (60, 60, 200)
    c.save(data / "a.clip.npz")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=25, warmup=1, lr=3e-3, schedule="constant",
                      network=TINY, checkpoint_every=1000, log_every=1, hard_temperature=None, k_max=1)
    train(cfg, model, log=lambda s: None)
    loss = [json.loads(x)["l1"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert np.mean(loss[-5:]) < 0.9 * np.mean(loss[:5]), loss


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    cfg = TrainConfig(lr=1.0, warmup=10, steps=110)
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == pytest.approx(1.0)
    assert learning_rate(cfg, 60) == pytest.approx(0.5)
    assert learning_rate(cfg, 110) == 0.0
    assert learning_rate(TrainConfig(lr=1.0, warmup=10, schedule="constant"), 500) == 1.0


def test_layer_wise_lr_decay_of_the_backbone(model):
    net = FeedForwardNetwork(model, TINY)
    cfg = TrainConfig(lr=1.0, layer_decay=0.5)
    groups = param_groups(net, cfg)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    n = len(net.backbone.blocks)
    assert scale_of[id(net.backbone.blocks[n - 1].attn.qkv.weight)] == 0.5
    assert scale_of[id(net.backbone.blocks[0].attn.qkv.weight)] == 0.5 ** n
    assert scale_of[id(net.backbone.patch_embed.proj.weight)] == 0.5 ** (n + 1)
    assert scale_of[id(net.backbone.norm.weight)] == 1.0
    assert scale_of[id(next(net.unet.parameters()))] == 1.0
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert set(scale_of) == trainable


def test_gradients_are_averaged_across_torchrun_ranks(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        from engine.train.trainer import average_gradients, distributed_context
        ctx = distributed_context()
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = torch.full((3,), float(ctx.rank + 1))
        q = torch.nn.Parameter(torch.zeros(2))          # no gradient on this rank: counts as zero
        if ctx.rank == 0:
            q.grad = torch.ones(2)
        average_gradients([p, q], ctx)
        open({str(tmp_path)!r} + f"/rank{{ctx.rank}}.txt", "w").write(f"{{ctx.world}} {{p.grad.tolist()}} {{q.grad.tolist()}}")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                    str(script)], check=True, env=env, capture_output=True, timeout=120)
    for r in (0, 1):
        assert (tmp_path / f"rank{r}.txt").read_text() == "2 [1.5, 1.5, 1.5] [0.5, 0.5]"


def test_phase2_continues_from_phase1_and_is_anchored_to_it(model, tmp_path):
    data = tmp_path / "data"
    c = fake_clip(model, "mv", n=6, seed=5)
    c.time, c.camera = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 0, 1, 2])
    c.save(data / "mv.clip.npz")
    one = TrainConfig(data=str(data), out=str(tmp_path / "p1"), steps=2, warmup=1, network=TINY, log_every=1)
    train(one, model, log=lambda s: None)
    with pytest.raises(ValueError, match="anchor"):
        train(TrainConfig(**{**one.__dict__, "phase": 2, "out": str(tmp_path / "bad")}), model, log=lambda s: None)
    two = TrainConfig(**{**one.__dict__, "phase": 2, "out": str(tmp_path / "p2"), "steps": 3, "lr": 1e-2,
                         "anchor": str(tmp_path / "p1" / "network.pt"), "l2sp": 1.0})
    train(two, model, log=lambda s: None)
    log = [json.loads(x) for x in (tmp_path / "p2" / "log.jsonl").read_text().splitlines()]
    sp = [r["l2sp"] for r in log if "loss" in r]
    assert sp[0] == 0.0 and sp[-1] > 0.0                     # starts at the anchor, then moves away


def test_torchrun_trains_with_two_ranks_from_the_command_line(model, tmp_path):
    """`torchrun --nproc_per_node=2 main.py train phase1 --config …` on the CPU (Gloo): both ranks
    train, rank 0 alone logs and writes the checkpoint."""
    import dataclasses

    data = tmp_path / "data"
    fake_clip(model, "a", seed=6).save(data / "a.clip.npz")
    cfg = {"steps": 2, "warmup": 1, "log_every": 1, "checkpoint_every": 100,
           "network": dataclasses.asdict(TINY)}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                           str(root / "main.py"), "train", "phase1", "--config", str(tmp_path / "cfg.json"),
                           "--data", str(data), "--out", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]          # one writer: rank 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 2
