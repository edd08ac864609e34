"""The paper's feed-forward network (§2.2): K tracked portraits -> UV-layout Gaussians.

    per source:  image -> ViT backbone (frozen DINOv3 ViT-B/16 with user weights, else a small
                 trainable ViT) -> DPT head -> dense features + CLS
                 -> barycentric warp of the dense features (and the source's RGB) into the
                    UV raster through the tracked mesh (`projective.project_slots`)
    over sources: parameter-free mean pooling of UV maps and CLS (order-invariant, identity for
                 K = 1); attention pooling as the ablation switch
    UV:          StyleUNet (StyleGAN2 modulated convolutions, style from the pooled CLS)
                 -> 32-channel UV features  ++  γ(d) (27-d harmonic embedding of the target
                 camera direction) -> five heads: local position, rotation, scale, colour, opacity
    per frame:   FLAME-conditioned residual head (FiLM by the E+12 conditioning code, 112-d for
                 FLAME) -> residuals of position, rotation, scale and colour; never opacity.

Where this differs from the paper, and why (``NetworkConfig`` switches):
- ``projective_base``: the warped RGB and the parameter-free stage's pooled, hole-filled colour
  and matte (`engine.generator.projective.pool`) are extra inputs, and the colour and opacity
  heads predict corrections to them. All head outputs start at zero (zero-initialised last
  layers), so an untrained network *is* the projective stage, and training on a few videos
  can only start from there. With the switch off the heads predict absolute values, as in
  the paper.
- Geometry heads predict offsets from the surface initialisation (`lids.lidded_surface`):
  local position in triangle-scale units, log-scale relative to the texel footprint.
- The heads are per-texel MLPs on the valid slots ([N, C]); the paper's 1x1-conv heads are
  the same function. Per-texel heads also make the Jacobian w.r.t. γ per-texel, which is what
  the Hutchinson estimator of `engine.train.losses.jacobian_penalty` assumes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.animate import AnimatedAvatar
from engine.binding import UVSlots, place, slot_frames
from engine.generator.eyes import eye_colors, paint_eyes
from engine.generator.lids import lidded_surface
from engine.generator.projective import ProjectiveConfig, Source, pool, project_slots, sample_warp
from engine.headmodel.base import HeadModel
from engine.residual import RESIDUAL_CHANNELS
from engine.rotations import axis_angle_to_rotmat
from engine.types import Avatar, Camera, Gaussians, HeadParams, UVGaussians

HARMONIC_FREQS = 4
HARMONIC_DIM = 3 + 3 * 2 * HARMONIC_FREQS          # 27
HEAD_CHANNELS = {"local_position": 3, "rotation": 4, "log_scale": 3, "color": 3, "opacity": 1}


@dataclass(frozen=True)
class NetworkConfig:
    """The architecture. Defaults are the small CPU configuration; ``paper()`` gives the paper's."""

    uv_resolution: int = 256
    input_size: int = 256
    """Sources are centred on a square canvas and resized to this (a multiple of 16)."""
    backbone_weights: str | None = None
    """DINOv3 ViT-B/16 weights (.pth); without them a small trainable ViT."""
    dpt_channels: int = 64
    feature_channels: int = 32
    """Channels of the dense feature map the DPT head hands to the warp."""
    unet_channels: tuple[int, ...] = (16, 32, 64, 96, 128)
    """StyleUNet channels from full UV resolution down (each level halves the resolution)."""
    style_dim: int = 128
    uv_features: int = 32
    head_hidden: int = 64
    residual_hidden: int = 64
    pooling: str = "mean"
    """'mean' (the paper's default) or 'attention' (its ablation)."""
    projective_base: bool = True
    position_step: float = 0.1
    """Head output 1 moves a Gaussian by this many triangle scales (and log-scale by this)."""

    @staticmethod
    def tiny() -> "NetworkConfig":
        """A 64² UV raster and a few channels: seconds per step, for tests and smoke runs."""
        return NetworkConfig(uv_resolution=64, input_size=64, dpt_channels=8, feature_channels=8,
                             unet_channels=(8, 16), style_dim=16, uv_features=8, head_hidden=8, residual_hidden=8)

    @staticmethod
    def paper(backbone_weights: str | None = None) -> "NetworkConfig":
        """The paper's sizes (§2.2): ViT-B/16, 256-channel DPT, 32-channel UV features."""
        return NetworkConfig(input_size=512, backbone_weights=backbone_weights, dpt_channels=256,
                             feature_channels=64, unet_channels=(64, 128, 256, 512, 512), style_dim=512,
                             head_hidden=128, residual_hidden=128)


def harmonic(d: Tensor) -> Tensor:
    """γ(d) = [d, sin(2^k π d), cos(2^k π d)]_{k=0..3}: [..., 3] -> [..., 27]."""
    f = (2.0 ** torch.arange(HARMONIC_FREQS, dtype=d.dtype, device=d.device)) * math.pi
    x = d[..., None, :] * f[:, None]                                   # [..., 4, 3]
    return torch.cat([d, x.sin().flatten(-2), x.cos().flatten(-2)], -1)


# ---------------------------------------------------------------- DPT head

class _ResidualConv(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(F.relu(self.a(F.relu(x))))


class DPTHead(nn.Module):
    """Dense prediction transformer head (Ranftl et al. 2021): four token maps at stride 16 are
    reassembled to strides 4, 8, 16, 32 and fused coarse to fine; out: stride-4 features."""

    def __init__(self, embed_dim: int, channels: int, out_channels: int) -> None:
        super().__init__()
        c = channels
        self.reassemble = nn.ModuleList([
            nn.Sequential(nn.Conv2d(embed_dim, c, 1), nn.ConvTranspose2d(c, c, 4, stride=4)),
            nn.Sequential(nn.Conv2d(embed_dim, c, 1), nn.ConvTranspose2d(c, c, 2, stride=2)),
            nn.Conv2d(embed_dim, c, 1),
            nn.Sequential(nn.Conv2d(embed_dim, c, 1), nn.Conv2d(c, c, 3, stride=2, padding=1)),
        ])
        self.fuse = nn.ModuleList([_ResidualConv(c) for _ in range(4)])
        self.refine = nn.ModuleList([_ResidualConv(c) for _ in range(4)])
        self.out = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, out_channels, 1))

    def forward(self, tokens: Sequence[Tensor]) -> Tensor:
        maps = [r(t) for r, t in zip(self.reassemble, tokens)]         # strides 4, 8, 16, 32
        x = self.refine[3](self.fuse[3](maps[3]))
        for i in (2, 1, 0):
            x = F.interpolate(x, size=maps[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.refine[i](x + self.fuse[i](maps[i]))
        return self.out(x)


# ---------------------------------------------------------------- StyleUNet

class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: weights scaled per input channel by an affine map of
    the style, then demodulated so each output channel has unit expected variance."""

    def __init__(self, cin: int, cout: int, style_dim: int, k: int = 3, demodulate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = nn.Linear(style_dim, cin)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)
        self.demodulate, self.pad = demodulate, k // 2

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, cin, h, w = x.shape
        s = self.affine(style)                                        # [B, cin]
        wgt = self.weight[None] * s[:, None, :, None, None]           # [B, cout, cin, k, k]
        if self.demodulate:
            wgt = wgt * torch.rsqrt(wgt.pow(2).sum((2, 3, 4), keepdim=True) + 1e-8)
        out = F.conv2d(x.reshape(1, b * cin, h, w), wgt.reshape(-1, cin, *wgt.shape[-2:]), padding=self.pad,
                       groups=b)
        return out.reshape(b, -1, h, w) + self.bias[None, :, None, None]


class _StyleBlock(nn.Module):
    def __init__(self, cin: int, cout: int, style_dim: int) -> None:
        super().__init__()
        self.c1, self.c2 = ModulatedConv2d(cin, cout, style_dim), ModulatedConv2d(cout, cout, style_dim)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        return F.leaky_relu(self.c2(F.leaky_relu(self.c1(x, style), 0.2), style), 0.2)


class StyleUNet(nn.Module):
    """A U-Net over the UV raster whose convolutions are all style-modulated."""

    def __init__(self, cin: int, channels: Sequence[int], style_dim: int, cout: int) -> None:
        super().__init__()
        ch = list(channels)
        self.inp = nn.Conv2d(cin, ch[0], 1)
        self.down = nn.ModuleList([_StyleBlock(ch[max(i - 1, 0)], ch[i], style_dim) for i in range(len(ch))])
        self.up = nn.ModuleList([_StyleBlock(ch[i + 1] + ch[i], ch[i], style_dim) for i in range(len(ch) - 1)])
        self.out = nn.Conv2d(ch[0], cout, 1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        x = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.avg_pool2d(x, 2)
            x = block(x, style)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], 1), style)
        return self.out(x)


# ---------------------------------------------------------------- heads

def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    m = nn.Sequential(nn.Linear(cin, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, cout))
    nn.init.zeros_(m[-1].weight)
    nn.init.zeros_(m[-1].bias)
    return m


class ResidualHead(nn.Module):
    """Per-texel MLP whose hidden layer is FiLM-modulated by the conditioning code
    (expression + jaw + neck + eyes); outputs residuals of position, rotation, scale, colour."""

    def __init__(self, cin: int, cond_dim: int, hidden: int) -> None:
        super().__init__()
        self.inp = nn.Linear(cin, hidden)
        self.film = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, sum(RESIDUAL_CHANNELS.values())))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, features: Tensor, cond: Tensor) -> dict[str, Tensor]:
        scale, shift = self.film(cond).chunk(2, -1)
        h = self.inp(features) * (1 + scale) + shift
        return dict(zip(RESIDUAL_CHANNELS, self.out(h).split(list(RESIDUAL_CHANNELS.values()), -1)))


class AttentionPool(nn.Module):
    """The paper's ablation: a learned per-texel score, softmax over the K sources."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(cin, 1, 1)

    def forward(self, maps: Tensor) -> Tensor:                        # [K, C, R, R] -> [C, R, R]
        return (maps * torch.softmax(self.score(maps), 0)).sum(0)


def mean_pool(maps: Tensor) -> Tensor:
    """Parameter-free pooling over the source axis 0: order-invariant, identity for K = 1."""
    return maps.mean(0)


# ---------------------------------------------------------------- inputs

@dataclass
class SourceInput:
    """One source, prepared (no gradients needed): the square network input and where every
    UV slot lands in it."""

    image: Tensor        # [3, S, S] in [0, 1]
    grid: Tensor         # [N, 2] grid_sample coordinates of each slot in ``image``
    warp: tuple          # projective (colour [N, 3], matte [N], weight [N]; 0 = not seen)
    eyes: dict = field(default_factory=dict)   # the source's iris and sclera (`eyes.eye_colors`)

    @property
    def weight(self) -> Tensor:
        return self.warp[2]


@dataclass
class Encoded:
    """What the network knows about a subject before a target frame is chosen."""

    features: Tensor     # [N, uv_features] per slot
    base: dict[str, Tensor]   # per-slot starting attributes (surface init + projective colour/opacity)
    confidence: Tensor   # [N] pooled projective source weight (how well the sources saw each slot)


def prepare_source(model: HeadModel, slots: UVSlots, src: Source, size: int,
                   cfg: ProjectiveConfig = ProjectiveConfig()) -> SourceInput:
    """Centre the source on a square canvas (the principal point stays central), resize it to
    ``size`` and project the slots into it."""
    h, w = src.rgb.shape[:2]
    side = max(h, w)
    oy, ox = (side - h) / 2, (side - w) / 2
    img = torch.zeros(3, side, side)
    iy, ix = int(oy), int(ox)
    img[:, iy:iy + h, ix:ix + w] = torch.from_numpy(src.rgb).permute(2, 0, 1).float() / 255
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    uv, weight = project_slots(model, slots, src, cfg)
    grid = torch.stack([(uv[:, 0] + ix) / side * 2 - 1, (uv[:, 1] + iy) / side * 2 - 1], -1)
    return SourceInput(img, grid, sample_warp(src, uv, weight), eye_colors(model, src))


def view_direction(params: HeadParams, verts: Tensor, camera: Camera | None) -> Tensor:
    """Unit direction [3] from the head's centre to the camera, in the head's own frame (root and
    neck rotation removed): (0, 0, 1) is a frontal view. ``camera`` None: frontal."""
    if camera is None:
        return torch.tensor([0.0, 0.0, 1.0])
    w2c = camera.world_to_cam.float()
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    d = F.normalize(centre - verts.mean(0), dim=0)
    R = axis_angle_to_rotmat(params.rotation[:1])[0] @ axis_angle_to_rotmat(params.neck[:1])[0]
    return R.T @ d


# ---------------------------------------------------------------- the network

class FeedForwardNetwork(nn.Module):
    """Sources -> `Encoded` (once per subject) -> per-frame attributes (`attributes`)."""

    def __init__(self, model: HeadModel, cfg: NetworkConfig = NetworkConfig(), read_backbone: bool = True) -> None:
        """``read_backbone=False``: build the DINOv3 backbone without reading its weight file (a
        checkpoint that holds the weights is loaded next)."""
        super().__init__()
        from engine.generator.vit import DINOV3_VITB16, ViT, backbone

        self.cfg = cfg
        self.head_model_name = model.name
        self.cond_dim = model.cond_dim
        if cfg.backbone_weights and not read_backbone:
            self.backbone = ViT(DINOV3_VITB16).eval().requires_grad_(False)
        else:
            self.backbone = backbone(Path(cfg.backbone_weights) if cfg.backbone_weights else None)
        d = self.backbone.embed_dim
        self.dpt = DPTHead(d, cfg.dpt_channels, cfg.feature_channels)
        self.style = nn.Sequential(nn.Linear(d, cfg.style_dim), nn.SiLU(), nn.Linear(cfg.style_dim, cfg.style_dim))
        # UV input per source: warped features, warped RGB, seen weight; shared: projective colour
        # and opacity, rest-surface position of the texel (where on the head it is)
        self.per_source = cfg.feature_channels + 3 + 1
        cin = self.per_source + (4 if cfg.projective_base else 0) + 3
        self.attention = AttentionPool(self.per_source) if cfg.pooling == "attention" else None
        self.unet = StyleUNet(cin, cfg.unet_channels, cfg.style_dim, cfg.uv_features)
        self.heads = nn.ModuleDict({k: _mlp(cfg.uv_features + HARMONIC_DIM, cfg.head_hidden, c)
                                    for k, c in HEAD_CHANNELS.items()})
        self.residual = ResidualHead(cfg.uv_features, self.cond_dim, cfg.residual_hidden)
        self.slots = model.uv_slots(cfg.uv_resolution)
        self.register_buffer("rest_position", self._rest_points(model), persistent=False)
        self._surface: dict[bytes, tuple[Tensor, Tensor]] = {}

    def train(self, mode: bool = True) -> "FeedForwardNetwork":
        """A frozen backbone stays in eval mode (DINOv3's train-mode RoPE jitter is for its own
        pretraining, not for a frozen feature extractor)."""
        super().train(mode)
        if not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        return self

    def _rest_points(self, model: HeadModel) -> Tensor:
        tri = model.v_template[model.faces[self.slots.face]]
        p = torch.einsum("nk,nkc->nc", self.slots.bary, tri)
        return (p - p.mean(0)) / p.std(0)

    # -- per subject
    def prepare(self, model: HeadModel, sources: Sequence[Source]) -> list[SourceInput]:
        return [prepare_source(model, self.slots, s, self.cfg.input_size) for s in sources]

    def encode(self, model: HeadModel, inputs: Sequence[SourceInput], shape: Tensor) -> Encoded:
        """Backbone, DPT, warp, pooling and StyleUNet: the subject's per-slot features."""
        images = torch.stack([s.image for s in inputs])
        tokens, cls = self.backbone(images)
        dense = self.dpt(tokens)                                       # [K, C, S/4, S/4]
        per_src = []
        for k, s in enumerate(inputs):
            feat = F.grid_sample(dense[k:k + 1], s.grid[None, None], mode="bilinear", align_corners=False)[0, :, 0].T
            rgb = F.grid_sample(s.image[None], s.grid[None, None], mode="bilinear", align_corners=False)[0, :, 0].T
            seen = (s.weight > 0).float()[:, None]
            per_src.append(torch.cat([feat * seen, rgb * seen, s.weight[:, None]], 1))
        maps = torch.stack([self.slots.scatter(p) for p in per_src])  # [K, C, R, R]
        pooled = self.attention(maps) if self.attention is not None else mean_pool(maps)
        style = self.style(mean_pool(cls))[None]
        extra, (base, confidence) = [], self._base(model, inputs, shape)
        if self.cfg.projective_base:
            extra.append(torch.cat([base["color"], torch.sigmoid(base["opacity"])], 1))
        extra.append(self.rest_position)
        uv_in = torch.cat([pooled, self.slots.scatter(torch.cat(extra, 1))], 0)[None]
        features = self.slots.gather(self.unet(uv_in, style)[0])
        return Encoded(features, base, confidence)

    def _base(self, model: HeadModel, inputs: Sequence[SourceInput], shape: Tensor
              ) -> tuple[dict[str, Tensor], Tensor]:
        n = len(self.slots)
        local, log_scale = self._surface_init(model, shape)
        base = {"local_position": local, "rotation": torch.tensor([1.0, 0, 0, 0]).expand(n, 4), "log_scale": log_scale}
        with torch.no_grad():
            color, opacity, confidence = pool(model, self.slots, [], warps=[s.warp for s in inputs])
            color = paint_eyes(model, self.slots, [s.eyes for s in inputs], color)
        if self.cfg.projective_base:
            a = (0.99 * opacity).clamp(1e-4, 1 - 1e-4)
            base |= {"color": color, "opacity": torch.log(a / (1 - a))[:, None]}
        else:
            base |= {"color": torch.full((n, 3), 0.5), "opacity": torch.full((n, 1), 4.0)}
        return base, confidence

    def _surface_init(self, model: HeadModel, shape: Tensor) -> tuple[Tensor, Tensor]:
        """Per-slot local position and log-scale of flat Gaussians on the subject's neutral surface
        (`lids.lidded_surface`, as the projective stage places them); cached per shape."""
        key = shape.detach().cpu().numpy().tobytes()
        hit = self._surface.get(key)
        if hit is None:
            p = model.neutral()
            rest = model.vertices(HeadParams(shape.reshape(1, -1).to(p.shape), p.expr, p.rotation, p.neck, p.jaw,
                                             p.eyes, p.translation))[0]
            uvg = lidded_surface(model, self.slots, rest, torch.zeros(len(self.slots), 3))
            hit = (self.slots.gather(uvg.local_position), self.slots.gather(uvg.log_scale))
            if len(self._surface) > 64:
                self._surface.clear()
            self._surface[key] = hit
        return hit

    # -- per frame
    def head_outputs(self, enc: Encoded, gamma: Tensor) -> dict[str, Tensor]:
        """The five heads' raw outputs for a view (``gamma`` [27] or [N, 27])."""
        n = len(enc.features)
        g = gamma.expand(n, HARMONIC_DIM) if gamma.dim() == 1 else gamma
        x = torch.cat([enc.features, g], 1)
        return {k: head(x) for k, head in self.heads.items()}

    def residual_outputs(self, enc: Encoded, cond: Tensor) -> dict[str, Tensor]:
        """The residual head's outputs for an expression (``cond`` [E+12])."""
        return self.residual(enc.features, cond.expand(len(enc.features), -1))

    def combine(self, enc: Encoded, raw: dict[str, Tensor], res: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """Per-slot attributes: the base plus head outputs plus residuals."""
        step = self.cfg.position_step
        out = {}
        for k in HEAD_CHANNELS:
            delta = raw[k] + (res[k] if res is not None and k in res else 0)
            out[k] = enc.base[k] + (step * delta if k in ("local_position", "log_scale") else delta)
        return out

    def attributes(self, enc: Encoded, gamma: Tensor, cond: Tensor | None,
                   outputs: dict | None = None) -> dict[str, Tensor]:
        """Per-slot attributes for a target view (``gamma`` [27] or [N, 27]) and expression
        (``cond`` [E+12]; None skips the residual head). ``outputs``, when given, receives the
        raw head outputs and residuals (for the Jacobian and shrinkage losses)."""
        raw = self.head_outputs(enc, gamma)
        res = self.residual_outputs(enc, cond) if cond is not None else None
        if outputs is not None:
            outputs["heads"], outputs["residual"] = raw, res
        return self.combine(enc, raw, res)

    # -- convenience
    def avatar(self, model: HeadModel, sources: Sequence[Source], shape: Tensor) -> "NetworkAvatar":
        with torch.no_grad():
            enc = self.encode(model, self.prepare(model, sources), shape)
        return NetworkAvatar(self, enc, model, shape)


class NetworkAvatar(AnimatedAvatar):
    """An avatar whose Gaussians follow the target view (γ) and expression (residual head).
    ``.avatar`` holds the frontal, neutral-expression Gaussians for bundles, `.ply` and the app."""

    def __init__(self, net: FeedForwardNetwork, enc: Encoded, model: HeadModel, shape: Tensor) -> None:
        self.net, self.enc, self.confidence = net, enc, enc.confidence
        with torch.no_grad():
            attrs = net.attributes(enc, harmonic(torch.tensor([0.0, 0.0, 1.0])), torch.zeros(net.cond_dim))
        uvg = UVGaussians(**{k: net.slots.scatter(v) for k, v in attrs.items()}, valid=net.slots.valid)
        super().__init__(Avatar(uvg, model.name, shape, {"generator": "network", "config": dataclasses.asdict(net.cfg)}),
                         model)
        self._view: tuple = (None, None)     # (view key, head outputs) of the last view
        self._cond: tuple = (None, None)     # (expression key, residuals) of the last expression

    VIEW_STEP = 0.01
    """View directions closer than this (about 0.6°) share the view heads' outputs."""

    def gaussians(self, params: HeadParams, camera: Camera | None = None) -> Gaussians:
        """Posed Gaussians. The view heads run again only when the view direction moves (by more
        than VIEW_STEP) and the residual head only when the expression changes, so a slider
        drag costs the residual head and an orbit the view heads, not both."""
        p = params.frame(0)
        verts = self.model.vertices(p)[0]
        d = view_direction(p, verts, camera)
        view_key = tuple((d / self.VIEW_STEP).round().int().tolist())
        cond = p.condition()[0]
        cond_key = cond.numpy().tobytes()
        with torch.no_grad():
            if self._view[0] != view_key:
                self._view = (view_key, self.net.head_outputs(self.enc, harmonic(d)))
            if self._cond[0] != cond_key:
                self._cond = (cond_key, self.net.residual_outputs(self.enc, cond))
            attrs = self.net.combine(self.enc, self._view[1], self._cond[1])
        return self._with_outer(place(slot_frames(self.slots, verts, self.model.faces), **attrs), p)


def save_generator(net: FeedForwardNetwork, path: Path, extra: dict | None = None) -> None:
    """Weights (a frozen DINOv3 backbone's too, so the file stands alone) + config (+ anything
    else, e.g. optimiser state) in one ``torch.save`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": "spatialavatar-network-1", "config": dataclasses.asdict(net.cfg),
                    "head_model": net.head_model_name, "weights": net.state_dict(), **(extra or {})}, tmp)
        tmp.replace(path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (RuntimeError, OSError)):     # torch.save reports a full disk as a RuntimeError
            raise OSError(f"{path}: could not be written ({e}); an earlier file there is kept") from None
        raise


def load_generator(path: Path, model: HeadModel) -> FeedForwardNetwork:
    """A trained network from a checkpoint written by `save_generator` (or the trainer)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint (train one with `python main.py train phase1`)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:    # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{path}: not a network checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != "spatialavatar-network-1":
        raise ValueError(f"{path}: not a network checkpoint written by `python main.py train`")
    if state["head_model"] != model.name:
        raise ValueError(f"{path} was trained for head model {state['head_model']!r}, not {model.name!r}")
    cfg = NetworkConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
    net = FeedForwardNetwork(model, cfg, read_backbone=False)
    net.load_state_dict(state["weights"])
    return net.eval()
