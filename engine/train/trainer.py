"""The feed-forward network's training loop (paper §2.3–2.4), one CPU to many GPUs.

Each step: the sampler picks a clip, K ∈ {1..4} source frames and a target frame (Phase 1:
another time of the same clip; Phase 2: another camera at the same time, or another time in
25 % of samples); the network encodes the sources, predicts the Gaussians for the target's
view and expression, they are bound to the target's mesh and rendered, and the loss of
`engine.train.losses` is taken against the target composited on the same random background.

Several processes (``torchrun --nproc_per_node=G main.py train ...``): each rank draws its own
samples; gradients are averaged with ``all_reduce`` before every optimiser step (NCCL on GPUs,
Gloo on CPUs), so all ranks hold the same weights; rank 0 logs, validates and writes
checkpoints. Training resumes from ``<out>/last.pt`` when it exists.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from engine.binding import place, slot_frames
from engine.device import HOST
from engine.generator.network import (FeedForwardNetwork, SourceInput, harmonic, load_generator, save_generator,
                                      view_direction)
from engine.generator.projective import Source
from engine.headmodel.base import HeadModel
from engine.atomic import write_text_atomic
from engine.metrics import psnr
from engine.metrics.matte import head_matte
from engine.refine.data import tracker_camera
from engine.train import losses as L
from engine.train.clips import Clip, load_clips
from engine.train.config import TrainConfig
from engine.train.datasets import Pair, Phase1Sampler, Phase2Sampler


@dataclass
class Context:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = HOST

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_context(device: torch.device = HOST) -> Context:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1). ``device``: the
    process's (`engine.device.resolve`); with CUDA each rank takes the GPU of its LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=device)
    cuda = device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Context(rank, dist.get_world_size(), torch.device("cuda", torch.cuda.current_device()) if cuda else
                   device)


def average_gradients(params: list[torch.Tensor], ctx: Context) -> None:
    """Mean of every gradient over the ranks (missing gradients count as zero)."""
    if ctx.world <= 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= ctx.world


def param_groups(net: FeedForwardNetwork, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: trainable backbone blocks with layer-wise LR decay (block i of n at
    lr·decay^(n−i), the patch embedding and tokens at decay^(n+1)); everything else at lr."""
    groups: dict[float, list] = {}
    n = len(getattr(net.backbone, "blocks", []))
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0
        if name.startswith("backbone."):
            parts = name.split(".")
            depth = int(parts[2]) + 1 if parts[1] == "blocks" else (n + 1 if parts[1] == "norm" else 0)
            scale = cfg.layer_decay ** (n + 1 - depth)
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr": cfg.lr * s, "lr_scale": s} for s, ps in sorted(groups.items())]


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then linear decay to zero (or constant)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, 1 - (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))


class SourceCache:
    """Prepared sources (`SourceInput`) by (clip, frame): warping a frame costs ~0.3 s on a CPU
    and the same frames come back as sources again and again."""

    def __init__(self, net: FeedForwardNetwork, model: HeadModel, limit: int = 4000) -> None:
        self.net, self.model, self.limit, self.items = net, model, limit, {}

    def get(self, clips: list[Clip], c: int, i: int) -> SourceInput:
        key = (c, i)
        hit = self.items.get(key)
        if hit is None:
            clip = clips[c]
            with torch.no_grad():
                hit = self.net.prepare(self.model, [frame_source(clip, i)])[0]
            if len(self.items) >= self.limit:
                self.items.pop(next(iter(self.items)))
            self.items[key] = hit
        return hit


def frame_source(clip: Clip, i: int) -> Source:
    return Source(clip.images[i], clip.mattes[i], clip.params.frame(i), clip.K[i])


def target_camera(clip: Clip, t: int):
    """The tracker's camera of frame t at the clip's stored size."""
    h, w = clip.images.shape[1:3]
    return tracker_camera(clip.K[t], (h, w), 10**9)


def target_view(model: HeadModel, clip: Clip, t: int) -> tuple:
    """(camera, image [H, W, 3] in [0, 1], head matte [H, W, 1], face box) of frame t."""
    cam = target_camera(clip, t)
    m = head_matte(model, clip.params.frame(t), clip.mattes[t], float(cam.K[0, 0]), (cam.height, cam.width))
    return cam, torch.from_numpy(clip.images[t]).float() / 255, torch.from_numpy(m)[..., None], clip.boxes[t]


def render_target(net: FeedForwardNetwork, model: HeadModel, enc, clip: Clip, t: int, cam, renderer,
                  outputs: dict | None = None, gamma_grad: bool = False):
    """(frame, gamma) of the network's Gaussians for target t seen by ``cam``."""
    p = clip.params.frame(t)
    with torch.no_grad():
        verts = model.vertices(p)[0]
        frames = slot_frames(net.slots, verts, model.faces)
    gamma = harmonic(view_direction(p, verts, cam)).expand(len(net.slots), -1).clone().requires_grad_(gamma_grad)
    attrs = net.attributes(enc, gamma, p.condition()[0], outputs)
    return renderer.render(place(frames, **attrs), cam), gamma


def sample_loss(net: FeedForwardNetwork, model: HeadModel, clips: list[Clip], pair: Pair, targets: list[int],
                cfg: TrainConfig, cache: SourceCache, renderer, rng: np.random.Generator, lpips=None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one sample (its sources encoded once, every target rendered)."""
    clip = clips[pair.clip]
    inputs = [cache.get(clips, pair.clip, i) for i in pair.sources]
    enc = net.encode(model, inputs, clip.params.shape[pair.sources[0]])
    w = cfg.losses
    total, parts = 0.0, {}

    def add(name, value, weight):
        nonlocal total
        if weight:
            total = total + weight * value
            parts[name] = parts.get(name, 0.0) + float(value.detach()) / len(targets)

    for t in targets:
        cam, img, m, box = target_view(model, clip, t)
        out: dict = {}
        frame, gamma = render_target(net, model, enc, clip, t, cam, renderer, out, gamma_grad=w.jacobian > 0)
        bg = torch.from_numpy(rng.random(3).astype(np.float32))
        pred = frame.rgb + (1 - frame.alpha[..., None]) * bg
        target = img * m + bg * (1 - m)
        n = len(targets)
        add("l1", (pred - target).abs().mean(), w.l1 / n)
        add("ms_ssim", L.ms_ssim_loss(pred, target), w.ms_ssim / n)
        add("box", L.box_l1(pred, target, box), w.box / n)
        if lpips is not None:
            add("lpips", lpips(pred, target), w.lpips / n)
        heads, res = out["heads"], out["residual"]
        delta_pos = heads["local_position"] + res["local_position"]
        delta_scale = heads["log_scale"] + res["log_scale"]
        add("tv_position", L.uv_tv(delta_pos, net.slots), w.tv_position / n)
        add("tv_scale", L.uv_tv(delta_scale, net.slots), w.tv_scale / n)
        if w.jacobian:
            add("jacobian", L.jacobian_penalty(heads["local_position"], heads["log_scale"], gamma), w.jacobian / n)
        add("residual", L.residual_shrinkage(res), w.residual / n)
    return total, parts


def validation_pairs(clip: Clip, count: int) -> tuple[list[int], list[int]]:
    """Self-reenactment as the paper evaluates it: the source is the clip's first usable frame,
    targets spread over its second half."""
    usable = np.flatnonzero(clip.usable)
    src = int(usable[0])
    late = usable[usable >= len(clip) // 2]
    return [src], sorted({int(x) for x in late[np.linspace(0, len(late) - 1, count).round().astype(int)]})


@torch.no_grad()
def validate(net: FeedForwardNetwork, model: HeadModel, clip: Clip, count: int, renderer,
             cache: SourceCache) -> float:
    """Mean held-out PSNR (inside the head matte, on black) of the network on ``clip``."""
    sources, targets = validation_pairs(clip, count)
    enc = net.encode(model, [cache.get([clip], 0, i) for i in sources], clip.params.shape[sources[0]])
    values = []
    for t in targets:
        cam, img, m, _ = target_view(model, clip, t)
        frame, _ = render_target(net, model, enc, clip, t, cam, renderer)
        values.append(float(psnr(frame.rgb.clamp(0, 1) * m, img * m)))
    return float(np.mean(values))


def train(cfg: TrainConfig, model: HeadModel, log: Callable[[str], None] = print, stop=None,
          device: torch.device = HOST) -> Path:
    """Train (or resume) and return the last checkpoint's path. ``stop``: a threading.Event."""
    from engine.render.select import select

    ctx = distributed_context(device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    all_clips = load_clips(Path(cfg.data))
    clips = [c for c in all_clips if c.name not in cfg.holdout]
    held = [c for c in all_clips if c.name in cfg.holdout]
    if not clips:
        raise ValueError(f"{cfg.data}: every clip is held out; nothing to train on")
    sampler = (Phase1Sampler(clips, cfg.k_max, cfg.hard_temperature, cfg.source_stride) if cfg.phase == 1 else
               Phase2Sampler(clips, cfg.cross_time, cfg.k_max, cfg.hard_temperature, cfg.source_stride))
    net = FeedForwardNetwork(model, cfg.network)
    anchor = None
    if cfg.phase == 2:
        if not cfg.anchor:
            raise ValueError("phase 2 continues from a Phase-1 checkpoint: give --anchor PATH")
        net.load_state_dict(load_generator(Path(cfg.anchor), model).state_dict())
        anchor = {k: v.detach().clone() for k, v in net.named_parameters() if v.requires_grad}
    net.to(ctx.device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(net, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    last = out / "last.pt"
    if last.exists():
        state = load_resume_state(last)
        net.load_state_dict(state["weights"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), state.get("history", [])
        if ctx.main:
            log(f"resumed from {last} at step {start}")
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", cfg.to_json())
    renderer = select(ctx.device, need_grad=True)
    lpips = None
    if cfg.lpips_weights:
        from engine.metrics.lpips import load_lpips

        lpips = load_lpips([Path(p) for p in cfg.lpips_weights])
    cache = SourceCache(net, model)
    val_cache = SourceCache(net, model)
    logf = open(out / "log.jsonl", "a") if ctx.main else None
    t0, done_here, done = time.perf_counter(), 0, start
    if ctx.main and held and start == 0:
        history.append({"step": 0, "val_psnr": validate(net, model, held[0], cfg.validation_targets, renderer,
                                                         val_cache)})
        logf.write(json.dumps(history[-1]) + "\n")
        same = " (= the projective stage)" if cfg.network.projective_base and cfg.phase == 1 else ""
        log(f"step 0: held-out PSNR {history[-1]['val_psnr']:.2f} dB on {held[0].name}{same}")
    interrupted = False
    try:
        for step in range(start, cfg.steps):
            if stop is not None and stop.is_set():
                break
            rng = np.random.default_rng([cfg.seed, ctx.rank, step])
            pair = sampler.sample(rng)
            clip = clips[pair.clip]
            pool = np.flatnonzero(clip.usable)
            targets = [pair.target] + [int(x) for x in rng.choice(pool, min(cfg.targets_per_sample - 1, len(pool)),
                                                                   replace=False)]
            net.train()
            loss, parts = sample_loss(net, model, clips, pair, targets, cfg, cache, renderer, rng, lpips)
            if anchor is not None and cfg.l2sp:
                sp = L.l2_sp(dict(net.named_parameters()), anchor)
                loss = loss + cfg.l2sp * sp
                parts["l2sp"] = float(sp.detach())
            lr = learning_rate(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(params, ctx)
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            opt.step()
            done, done_here = step + 1, done_here + 1
            if not ctx.main:
                continue
            rate = done_here / (time.perf_counter() - t0)
            if done % cfg.log_every == 0 or done == cfg.steps:
                rec = {"step": done, "loss": float(loss.detach()), **parts, "grad_norm": gnorm, "lr": lr,
                       "k": len(pair.sources), "steps_per_s": rate}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                log(f"step {done}/{cfg.steps}  loss {rec['loss']:.4f}  l1 {parts.get('l1', 0):.4f}  {rate:.2f} it/s  "
                    f"eta {(cfg.steps - done) / max(rate, 1e-9) / 60:.0f} min")
            if held and (done % cfg.validate_every == 0 or done == cfg.steps):
                net.eval()
                history.append({"step": done, "val_psnr": validate(net, model, held[0], cfg.validation_targets, renderer,
                                                                    val_cache)})
                logf.write(json.dumps(history[-1]) + "\n")
                log(f"step {done}: held-out PSNR {history[-1]['val_psnr']:.2f} dB on {held[0].name}")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                _checkpoint(net, opt, done, cfg, history, out)
    except KeyboardInterrupt:       # Ctrl-C: keep the steps done (resume continues from them)
        interrupted = True
    if ctx.main:
        if done % cfg.checkpoint_every and done != cfg.steps:     # stopped early: keep what was done
            _checkpoint(net, opt, done, cfg, history, out)
        if interrupted:
            log(f"interrupted at step {done}; {last} resumes from there")
        logf.close()
    if ctx.world > 1:
        dist.destroy_process_group()
    return last


def load_resume_state(last: Path) -> dict:
    """The state in a trainer's ``last.pt``, read as tensors and plain containers only
    (``weights_only``): a file planted in an output folder is refused, never run. ValueError
    names the file when it is not a resumable checkpoint."""
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as e:    # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{last}: not a resumable training checkpoint ({type(e).__name__}); "
                         "move it away to start afresh") from None
    if not isinstance(state, dict) or state.get("format") != "spatialavatar-network-1" or \
            not {"weights", "optimizer", "step"} <= state.keys():
        raise ValueError(f"{last}: not a resumable training checkpoint written by `python main.py train`")
    return state


def _checkpoint(net: FeedForwardNetwork, opt, step: int, cfg: TrainConfig, history: list, out: Path) -> None:
    """``last.pt`` (resumable: weights, optimiser, step, validation history) and ``network.pt``
    (weights only: what `--checkpoint` takes). Both hold only tensors and plain containers, so
    they are read back with ``weights_only``."""
    save_generator(net, out / "last.pt", {"optimizer": opt.state_dict(), "step": step, "history": history,
                                          "train_config": json.loads(cfg.to_json())})
    save_generator(net, out / "network.pt", {"step": step, "history": history})
