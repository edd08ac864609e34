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


def test_the_data_carries_the_detected_landmarks_at_any_resolution(openhead, tmp_path):
    """The alignment compares the mesh's landmarks with the detected ones at its own resolution:
    the data keeps them as fractions of the frame, so any size's pixels are a product away, after
    `VideoData.resized` too; a frame without a face stays nan."""
    model = HeadModel(openhead)
    tracked = clip(model, tmp_path / "clip.mp4")
    rng = np.random.default_rng(0)
    tracked.landmarks = rng.uniform(0, SIZE, (N, 478, 2))
    tracked.landmarks[3] = np.nan
    _, data = prepare(tmp_path / "clip.mp4", model, SIZE // 2, tracked=tracked, log=lambda s: None)
    h, w = data.images.shape[1:3]
    assert (w, h) == (SIZE // 2, SIZE // 2)
    np.testing.assert_allclose(data.landmarks[5] * [w, h], tracked.landmarks[5] / 2, rtol=1e-5)
    assert np.isnan(data.landmarks[3]).all()
    small = data.resized(SIZE // 4, model)
    np.testing.assert_allclose(small.landmarks[5] * small.images.shape[1:3][::-1], tracked.landmarks[5] / 4, rtol=1e-5)
