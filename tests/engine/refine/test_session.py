"""`refine.session.prepare`: the refinement starts from the feed-forward avatar of the reference
frame — the projective stage's, or the trained network's when its checkpoint is given."""
from __future__ import annotations

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.expressions import apply_expressions
from engine.generator.network import FeedForwardNetwork, NetworkConfig, load_generator, save_generator
from engine.generator.plain import plain_avatar
from engine.generator.projective import Source
from engine.headmodel.base import HeadModel
from engine.io.media import write_video
from engine.refine.session import prepare
from engine.render.select import select
from engine.track.fit import intrinsics
from engine.track.tracker import Tracked
from engine.types import Camera, HeadParams

N, SIZE, FOCAL = 40, 96, 300.0


def clip(model: HeadModel, path):
    """A rendered clip of the plain avatar whose jaw opens except around frame 5, with its exact
    'tracking' (the parameters it was rendered with)."""
    animated = AnimatedAvatar(plain_avatar(model), model)
    K = intrinsics(np.full(N, FOCAL), np.tile([[SIZE, SIZE]], (N, 1)))
    cam = Camera(torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])), torch.tensor(K[0], dtype=torch.float32), SIZE, SIZE)
    frames, mattes, params = [], [], []
    for i in range(N):
        p = apply_expressions(model.neutral(), model, {"jawOpen": 0.05 + 0.5 * abs(np.sin((i - 5) / 6))})
        p = HeadParams(p.shape, p.expr, p.rotation, p.neck, p.jaw, p.eyes, torch.tensor([[0.0, 0.0, -0.8]]))
        with torch.no_grad():
            f = select("cpu").render(animated.gaussians(p), cam)
        frames.append(f.to_uint8((0.5, 0.5, 0.5)))
        mattes.append((f.alpha.numpy() * 255).astype(np.uint8))
        params.append(p)
    write_video(path, frames, 25)
    stack = HeadParams(*(torch.cat([getattr(p, k) for p in params]) for k in
                         ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
    tracked = Tracked("clip", [str(path)], stack, K, np.tile([SIZE, SIZE], (N, 1)), np.ones(N, bool), np.zeros(N),
                      np.zeros((N, 478, 2)), np.zeros((N, 478, 2)), mattes)
    return tracked


def test_prepare_starts_from_the_network_avatar_of_the_reference_frame(openhead, tmp_path):
    model = HeadModel(openhead)
    tracked = clip(model, tmp_path / "clip.mp4")
    torch.manual_seed(0)
    save_generator(FeedForwardNetwork(model, NetworkConfig.tiny()), tmp_path / "net.pt")
    avatar, data = prepare(tmp_path / "clip.mp4", model, SIZE, tracked=tracked, network=tmp_path / "net.pt",
                           log=lambda s: None)
    ref = avatar.metadata["reference_frame"]
    assert ref == data.reference_frame() == 5 and avatar.metadata["generator"] == "network"
    from engine.io.media import VideoReader

    with VideoReader(tmp_path / "clip.mp4") as video:
        rgb = [f for i, f in enumerate(video) if i == ref][0]
    src = Source(rgb, tracked.person_matte(ref), tracked.params.frame(ref), tracked.K[ref])
    want = load_generator(tmp_path / "net.pt", model).avatar(model, [src], tracked.params.shape[0]).avatar.gaussians
    for k, v in want.maps().items():
        assert torch.allclose(avatar.gaussians.maps()[k], v, atol=1e-6), k
    projective, _ = prepare(tmp_path / "clip.mp4", model, SIZE, tracked=tracked, log=lambda s: None)
    assert projective.metadata["generator"] == "projective" and projective.gaussians.resolution == 256
