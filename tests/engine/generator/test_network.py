"""The feed-forward network (paper §2.2) on synthetic portraits, with a tiny configuration."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from engine.generator.network import (HEAD_CHANNELS, HARMONIC_DIM, RESIDUAL_CHANNELS, AttentionPool,
                                      FeedForwardNetwork, NetworkConfig, ResidualHead, harmonic, load_generator,
                                      mean_pool, save_generator, view_direction)
from engine.generator.projective import Source, projective_gaussians
from engine.headmodel.base import HeadModel
from engine.track.fit import intrinsics
from engine.types import Camera, HeadParams

TINY = NetworkConfig.tiny()
SIZE = 96


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


def source(model: HeadModel, seed: int, yaw: float = 0.0) -> Source:
    """A noise image with a matte, seen by the tracker's camera with the head 0.8 m away."""
    rng = np.random.default_rng(seed)
    p = model.neutral()
    p = HeadParams(p.shape, p.expr, torch.tensor([[0.0, yaw, 0.0]]), p.neck, p.jaw, p.eyes, torch.tensor([[0, 0, -0.8]]))
    K = intrinsics(np.array([400.0]), np.array([[SIZE, SIZE]]))[0]
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    matte = np.full((SIZE, SIZE), 255, np.uint8)
    return Source(rgb, matte, p, K)


def randomised(net: FeedForwardNetwork, seed: int = 0) -> FeedForwardNetwork:
    """The zero-initialised output layers made non-zero, so every head and the residual head act."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in net.heads.values():
            head[-1].weight.copy_(torch.randn(head[-1].weight.shape, generator=g) * 0.3)
        net.residual.out[-1].weight.copy_(torch.randn(net.residual.out[-1].weight.shape, generator=g) * 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def net(model) -> FeedForwardNetwork:
    torch.manual_seed(0)
    return randomised(FeedForwardNetwork(model, TINY))


def encode(net, model, sources):
    with torch.no_grad():
        return net.encode(model, net.prepare(model, sources), torch.zeros(model.n_shape))


def test_harmonic_embedding_is_the_papers_formula():
    d = torch.tensor([0.3, -0.5, 0.81])
    g = harmonic(d)
    assert g.shape == (HARMONIC_DIM,) == (27,)
    assert torch.allclose(g[:3], d)
    for k in range(4):
        assert torch.allclose(g[3 + 3 * k: 6 + 3 * k], torch.sin(2 ** k * math.pi * d), atol=1e-6)
        assert torch.allclose(g[15 + 3 * k: 18 + 3 * k], torch.cos(2 ** k * math.pi * d), atol=1e-6)


def test_mean_pool_is_order_invariant_and_the_identity_for_one_source():
    maps = torch.randn(3, 5, 4, 4)
    assert torch.equal(mean_pool(maps[:1]), maps[0])
    assert torch.allclose(mean_pool(maps), mean_pool(maps[[2, 0, 1]]), atol=1e-6)
    att = AttentionPool(5)
    assert torch.allclose(att(maps), att(maps[[1, 2, 0]]), atol=1e-6)
    assert torch.allclose(att(maps[:1]), maps[0], atol=1e-6)


def test_encoding_does_not_depend_on_source_order_and_repeating_a_source_changes_nothing(net, model):
    a, b = source(model, 1), source(model, 2, yaw=0.4)
    ab, ba = encode(net, model, [a, b]), encode(net, model, [b, a])
    assert torch.allclose(ab.features, ba.features, atol=1e-5)
    assert not torch.allclose(encode(net, model, [a]).features, ab.features, atol=1e-3)   # a second view counts
    # K copies of a source are the source. (Not with the projective base: its "seen" threshold is
    # on the summed source weights, so it is the network's pooling that is tested here.)
    torch.manual_seed(0)
    plain = randomised(FeedForwardNetwork(model, dataclasses.replace(TINY, projective_base=False)))
    one, twice = encode(plain, model, [a]), encode(plain, model, [a, a])
    assert torch.allclose(one.features, twice.features, atol=1e-5)


def test_every_head_has_its_shape_and_the_residual_head_never_touches_opacity(net, model):
    enc = encode(net, model, [source(model, 1)])
    n = len(net.slots)
    gamma = harmonic(torch.tensor([0.0, 0.0, 1.0]))
    out: dict = {}
    calm = net.attributes(enc, gamma, torch.zeros(net.cond_dim), out)
    assert set(calm) == set(HEAD_CHANNELS)
    for k, c in HEAD_CHANNELS.items():
        assert calm[k].shape == (n, c) and out["heads"][k].shape == (n, c)
    assert set(out["residual"]) == set(RESIDUAL_CHANNELS) and "opacity" not in out["residual"]
    cond = torch.zeros(net.cond_dim)
    cond[:5] = 2.0                                                      # some expression, jaw, neck
    cond[-12:-9] = 0.3
    loud = net.attributes(enc, gamma, cond)
    assert torch.equal(calm["opacity"], loud["opacity"])
    for k in RESIDUAL_CHANNELS:
        assert not torch.allclose(calm[k], loud[k]), k
    head = ResidualHead(8, model.n_expr + 12, 8)
    assert set(head(torch.randn(4, 8), torch.randn(model.n_expr + 12))) == set(RESIDUAL_CHANNELS)


def test_the_view_embedding_reaches_every_head(net, model):
    enc = encode(net, model, [source(model, 1)])
    a = net.attributes(enc, harmonic(torch.tensor([0.0, 0.0, 1.0])), None)
    b = net.attributes(enc, harmonic(torch.tensor([0.6, 0.0, 0.8])), None)
    for k in HEAD_CHANNELS:
        assert not torch.allclose(a[k], b[k]), k


def test_an_untrained_network_is_the_projective_stage(model):
    """Zero-initialised outputs + the projective base: before training the network's avatar is
    exactly the parameter-free stage's."""
    torch.manual_seed(0)
    net = FeedForwardNetwork(model, dataclasses.replace(TINY, uv_resolution=256)).eval()
    srcs = [source(model, 1), source(model, 2, yaw=0.5)]
    avatar = net.avatar(model, srcs, torch.zeros(model.n_shape))
    uvg, _ = projective_gaussians(model, srcs, torch.zeros(model.n_shape))
    for k, v in uvg.maps().items():
        assert torch.allclose(avatar.avatar.gaussians.maps()[k], v, atol=1e-6), k


def test_view_direction_is_frontal_for_the_tracker_camera_and_turns_with_the_head(model):
    cam = Camera(torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])), torch.eye(3), 10, 10)
    p = source(model, 0).params
    verts = model.vertices(p)[0]
    d = view_direction(p, verts, cam)
    assert d[2] > 0.99                                     # the camera is in front of the face
    turned = source(model, 0, yaw=0.5).params
    d2 = view_direction(turned, model.vertices(turned)[0], cam)
    # the head turned left by 0.5 rad: in its own frame the camera is off to its right by ~0.5 rad
    assert d2[0] == pytest.approx(-math.sin(0.5), abs=0.05)
    assert torch.equal(view_direction(p, verts, None), torch.tensor([0.0, 0.0, 1.0]))


def test_checkpoint_round_trip_and_clear_errors(net, model, tmp_path):
    path = tmp_path / "net.pt"
    save_generator(net, path)
    again = load_generator(path, model)
    srcs = [source(model, 3)]
    a, b = encode(net, model, srcs), encode(again, model, srcs)
    assert torch.allclose(a.features, b.features, atol=1e-6)
    with pytest.raises(ValueError, match="no such checkpoint"):
        load_generator(tmp_path / "missing.pt", model)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a network checkpoint"):
        load_generator(tmp_path / "junk.pt", model)
    torch.save({"format": "spatialavatar-network-1", "head_model": "flame2023", "config": {}, "weights": {}},
               tmp_path / "other.pt")
    with pytest.raises(ValueError, match="head model"):
        load_generator(tmp_path / "other.pt", model)


def test_a_dinov3_backbone_is_frozen_and_its_checkpoint_stands_alone(model, tmp_path):
    """With DINOv3 weights the backbone is frozen (no gradients, eval mode even while training) and
    the saved network does not need the weight file again."""
    from engine.generator.vit import DINOV3_VITB16, ViT

    torch.manual_seed(0)
    weights = tmp_path / "dinov3_vitb16.pth"
    torch.save(ViT(DINOV3_VITB16).state_dict(), weights)
    net = FeedForwardNetwork(model, dataclasses.replace(TINY, backbone_weights=str(weights))).train()
    assert not net.backbone.training and net.unet.training
    assert not any(p.requires_grad for p in net.backbone.parameters())
    srcs = [source(model, 5)]
    before = encode(net, model, srcs)
    save_generator(net, tmp_path / "net.pt")
    weights.unlink()
    again = load_generator(tmp_path / "net.pt", model)
    assert torch.allclose(encode(again, model, srcs).features, before.features, atol=1e-5)


def test_network_avatar_reposes_with_cached_heads_like_the_uncached_network(model, net):
    """Cached view heads are reused within NetworkAvatar.VIEW_STEP (~0.6°) of the view direction
    (an expression moves the head's centre a little), so agreement is to that tolerance."""
    from engine.binding import place, slot_frames
    from engine.camera import orbit_camera

    src = source(model, 7)
    avatar = net.avatar(model, [src], torch.zeros(model.n_shape))
    cams = [orbit_camera(size=64), orbit_camera(30.0, size=64)]
    p0 = src.params
    p1 = HeadParams(p0.shape, p0.expr + 0.5, p0.rotation, p0.neck, p0.jaw + 0.1, p0.eyes, p0.translation)
    for p, cam in [(p0, cams[0]), (p1, cams[0]), (p1, cams[1]), (p0, cams[1])]:
        got = avatar.gaussians(p, cam)
        verts = model.vertices(p)[0]
        with torch.no_grad():
            attrs = net.attributes(avatar.enc, harmonic(view_direction(p, verts, cam)), p.condition()[0])
        want = place(slot_frames(avatar.slots, verts, model.faces), **attrs)
        assert torch.allclose(got.means, want.means, atol=1e-5) and torch.allclose(got.colors, want.colors, atol=2e-3)
    assert not torch.allclose(avatar.gaussians(p0, cams[0]).colors, avatar.gaussians(p0, cams[1]).colors)
