"""Image backbone of the feed-forward network: a Vision Transformer with the architecture of
Meta's DINOv3 ViT-B/16 (facebookresearch/dinov3, `DinoVisionTransformer` as built by the hub
entry `dinov3_vitb16`), written so Meta's released checkpoint loads into it key for key.

Architecture (pre-norm blocks, no learned position table, so any resolution works):

    image [B, 3, H, W] in [0, 1] -> ImageNet mean/std -> 16x16 patch conv (patch_embed.proj)
    tokens = [CLS | 4 storage (register) tokens | H/16 * W/16 patch tokens]
    12 x  x = x + ls1 * attn(norm1(x));  x = x + ls2 * mlp(norm2(x))
    attention: 12 heads, 2D axial RoPE on the patch tokens' q and k only (CLS and storage
    tokens carry no position); the qkv bias is multiplied by a stored `bias_mask`, which
    DINOv3 uses to switch the k bias off
    out: the patch tokens of blocks `out_layers`, each through the final `norm` (as
    `get_intermediate_layers(norm=True, reshape=True)`), and the final-norm CLS token.

ViT-B/16 values from the hub entry: embed 768, depth 12, heads 12, MLP ratio 4 (GELU),
LayerScale init 1e-5, LayerNorm eps 1e-5 ("layernormbf16"), RoPE base 100 with coordinates
normalised per axis to [-1, 1] ("separate"), RoPE coordinate rescale augmentation x[1/2, 2]
during training only, qkv bias with k-bias mask, no separate CLS norm.

Checkpoint keys (`dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth`, 188 tensors; N = 0..11):

    cls_token                       [1, 1, 768]
    storage_tokens                  [1, 4, 768]
    mask_token                      [1, 768]      (pretraining masks only; never read here)
    patch_embed.proj.weight         [768, 3, 16, 16]
    patch_embed.proj.bias           [768]
    rope_embed.periods              [16]          (head_dim / 4, float32)
    blocks.N.norm1.weight / .bias   [768]
    blocks.N.attn.qkv.weight        [2304, 768]
    blocks.N.attn.qkv.bias          [2304]
    blocks.N.attn.qkv.bias_mask     [2304]        (buffer; multiplies the bias)
    blocks.N.attn.proj.weight       [768, 768]
    blocks.N.attn.proj.bias         [768]
    blocks.N.ls1.gamma              [768]
    blocks.N.norm2.weight / .bias   [768]
    blocks.N.mlp.fc1.weight / .bias [3072, 768] / [3072]
    blocks.N.mlp.fc2.weight / .bias [768, 3072] / [768]
    blocks.N.ls2.gamma              [768]
    norm.weight / norm.bias         [768]

ViT-B has no `cls_norm` or `local_cls_norm` (those exist only where DINOv3 unties the CLS
norm, e.g. ViT-7B). Some re-exports of the weights drop the `bias_mask` buffers; the loader
accepts that and keeps DINOv3's own initial mask (q and v bias on, k bias off).

Weights are never downloaded here: Meta gates them behind a licence, so the user fetches the
file and passes its path (`load_dinov3`). Without weights, `backbone(None)` gives the SMALL
preset, randomly initialised and trained with the rest of the network.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV3_VITB16_FILE = "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth"
DINOV3_RELEASE = "https://github.com/facebookresearch/dinov3"


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a DINOv3-style ViT. The defaults are Meta's ViT-B/16."""

    patch_size: int = 16
    """Side of the square patches, in pixels; input sides must be multiples of it."""
    embed_dim: int = 768
    """Token width."""
    depth: int = 12
    """Number of transformer blocks."""
    num_heads: int = 12
    """Attention heads; embed_dim / num_heads must be a multiple of 4 for the 2D RoPE."""
    mlp_ratio: float = 4.0
    """MLP hidden width / embed_dim."""
    n_storage_tokens: int = 4
    """Register tokens between CLS and the patches (DINOv3 calls them storage tokens)."""
    layerscale_init: float = 1e-5
    """Initial LayerScale gamma (only matters for random initialisation)."""
    qkv_bias: bool = True
    """qkv projection has a bias (then also a `bias_mask` buffer, as in DINOv3)."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon (DINOv3's "layernormbf16" for ViT-B/16)."""
    rope_base: float = 100.0
    """RoPE periods run from 1 to rope_base (in units of the normalised [-1, 1] coordinates)."""
    rope_normalize: Literal["separate", "max", "min"] = "separate"
    """How patch centres map to [-1, 1]: each axis by its own length, or both by the longer
    ("max") or shorter ("min") side."""
    rope_rescale: float | None = 2.0
    """In training mode, RoPE coordinates are scaled by a random factor in [1/r, r], the
    augmentation DINOv3 was trained with; None disables it. Eval mode never rescales."""
    out_layers: tuple[int, ...] = (2, 5, 8, 11)
    """Blocks whose patch tokens feed the DPT head (four of them, shallow to deep)."""

    def __post_init__(self) -> None:
        if self.embed_dim % (4 * self.num_heads) != 0:
            raise ValueError(f"embed_dim / num_heads must be a multiple of 4 for 2D RoPE. Got {self.embed_dim} / {self.num_heads}")
        layers = self.out_layers
        if len(layers) != 4 or list(layers) != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= self.depth:
            raise ValueError(f"out_layers must be 4 increasing block indices in [0, {self.depth}). Got {layers}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


DINOV3_VITB16 = ViTConfig()
"""Meta's DINOv3 ViT-B/16 (hub entry `dinov3_vitb16`, LVD-1689M weights)."""

SMALL = ViTConfig(embed_dim=192, depth=4, num_heads=3, layerscale_init=0.1, rope_rescale=None, out_layers=(0, 1, 2, 3))
"""Small ViT trained from scratch on CPU when no DINOv3 weights are available. LayerScale
starts at 0.1 (CaiT's value for shallow nets): 1e-5 would keep four blocks near-identity for
the first hundreds of steps. No RoPE rescale: that is a pretraining augmentation for
resolution robustness, not needed when training on the task's own crops."""


# --- RoPE ---------------------------------------------------------------------------------


def rope_periods(head_dim: int, base: float) -> Tensor:
    """Periods [head_dim // 4] growing geometrically from 1 towards `base`: each of the two
    axes gets head_dim / 4 frequencies, and each frequency rotates one pair of channels."""
    n = head_dim // 4
    return base ** (torch.arange(n, dtype=torch.float32) / n)


def patch_coords(h: int, w: int, normalize: str) -> Tensor:
    """Patch centres of an h x w grid as [h * w, 2] (row, col) in [-1, 1], row-major.

    >>> patch_coords(1, 2, "separate")
    tensor([[ 0.0000, -0.5000],
            [ 0.0000,  0.5000]])
    """
    scale_h, scale_w = {"separate": (h, w), "max": (max(h, w),) * 2, "min": (min(h, w),) * 2}[normalize]
    rows = torch.arange(0.5, h, dtype=torch.float32) / scale_h
    cols = torch.arange(0.5, w, dtype=torch.float32) / scale_w
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).flatten(0, 1)
    return 2.0 * grid - 1.0


def rope_sincos(coords: Tensor, periods: Tensor) -> tuple[Tensor, Tensor]:
    """sin, cos [N, 4P] for coords [N, 2] and periods [P].

    Layout follows DINOv3 so the checkpoint's heads see the rotations they were trained
    with: angles are [row freqs | col freqs], then tiled twice so channel i and channel
    i + D/2 (the pair `_rotate_half` mixes) share one angle.
    """
    angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]   # [N, 2, P]
    angles = angles.flatten(1, 2).tile(2)                                 # [N, 4P]
    return torch.sin(angles), torch.cos(angles)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate x [..., N, D] by the angles in sin, cos [N, D]: q.k of two rotated vectors then
    depends on their positions only through the difference."""
    return x * cos + _rotate_half(x) * sin


# --- Layers -------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, C, H/p, W/p]"""
        return self.proj(x)


class RopeEmbed(nn.Module):
    """Holds the periods as a buffer because Meta's checkpoint stores them
    (`rope_embed.periods`); loading them keeps a checkpoint's own values authoritative."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.normalize = cfg.rope_normalize
        self.rescale = cfg.rope_rescale
        self.register_buffer("periods", rope_periods(cfg.head_dim, cfg.rope_base))

    def forward(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """sin, cos [h * w, head_dim] for an h x w patch grid."""
        coords = patch_coords(h, w, self.normalize).to(self.periods.device)
        if self.training and self.rescale is not None:
            log_r = math.log(self.rescale)
            coords = coords * torch.empty((), device=coords.device).uniform_(-log_r, log_r).exp()
        return rope_sincos(coords, self.periods)


class MaskedBiasLinear(nn.Linear):
    """nn.Linear whose bias is multiplied by a `bias_mask` buffer, DINOv3's way of training
    with the k part of the qkv bias switched off. The buffer is part of the state dict
    because Meta's checkpoint has it (`attn.qkv.bias_mask`)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=True)
        self.register_buffer("bias_mask", default_bias_mask(out_features))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask)


def default_bias_mask(out_features: int) -> Tensor:
    """DINOv3's initial qkv bias mask [3C]: q and v bias on, k bias off."""
    mask = torch.ones(out_features)
    mask[out_features // 3: 2 * out_features // 3] = 0
    return mask


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.qkv = MaskedBiasLinear(dim, 3 * dim) if cfg.qkv_bias else nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        """x [B, T, C] with the last sin.shape[0] tokens being patches; returns [B, T, C]."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = _rope_patches(q, sin, cos), _rope_patches(k, sin, cos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


def _rope_patches(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """RoPE on the trailing patch tokens of x [B, heads, T, D]; the leading CLS and storage
    tokens have no position and pass unchanged."""
    n_prefix = x.shape[-2] - sin.shape[0]
    return torch.cat([x[..., :n_prefix, :], apply_rope(x[..., n_prefix:, :], sin, cos)], dim=-2)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(dim, cfg.layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.ls2 = LayerScale(dim, cfg.layerscale_init)

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), sin, cos))
        return x + self.ls2(self.mlp(self.norm2(x)))


# --- Model --------------------------------------------------------------------------------


class ViT(nn.Module):
    """DINOv3-style ViT returning DPT-ready multi-level features.

    >>> vit = ViT(SMALL)
    >>> features, cls = vit(torch.rand(2, 3, 64, 96))
    >>> features[0].shape, cls.shape
    (torch.Size([2, 192, 4, 6]), torch.Size([2, 192]))
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        dim = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.storage_tokens = nn.Parameter(torch.empty(1, cfg.n_storage_tokens, dim))
        # Only DINOv3's masked-image pretraining reads the mask token; it is kept (frozen) so
        # the key set matches Meta's checkpoint.
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.rope_embed = RopeEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """DINOv3's initialisation: truncated-normal linears with zero bias, N(0, 0.02) tokens;
        the patch conv keeps PyTorch's default, which equals DINOv3's U(+-1/sqrt(fan_in))."""
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.storage_tokens, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """images [B, 3, H, W] in [0, 1], H and W multiples of patch_size ->
        features: 4 x [B, C, H/p, W/p] (blocks `out_layers`, final-normed patch tokens),
        cls: [B, C] (final-normed CLS token of the last block)."""
        self._check_images(images)
        b, _, h, w = images.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        mean, std = (images.new_tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        x = self._tokens((images - mean) / std)
        sin, cos = self.rope_embed(gh, gw)
        n_prefix = 1 + self.config.n_storage_tokens
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x, sin, cos)
            if i in self.config.out_layers:
                patches = self.norm(x[:, n_prefix:])
                features.append(patches.transpose(1, 2).reshape(b, self.embed_dim, gh, gw))
        return features, self.norm(x[:, 0])

    def _tokens(self, images: Tensor) -> Tensor:
        """Normalised images -> [B, 1 + storage + patches, C] token sequence."""
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)
        b = patches.shape[0]
        return torch.cat([self.cls_token.expand(b, -1, -1), self.storage_tokens.expand(b, -1, -1), patches], dim=1)

    def _check_images(self, images: Tensor) -> None:
        p = self.patch_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % p or images.shape[3] % p:
            raise ValueError(f"images must be [B, 3, H, W] with H, W multiples of {p}. Got {tuple(images.shape)}")


# --- Weights ------------------------------------------------------------------------------


def load_dinov3(path: Path) -> ViT:
    """Meta's DINOv3 ViT-B/16 from a local `.pth` (or `.safetensors`, if that package is
    installed), frozen and in eval mode. Keys must match exactly (the optional `bias_mask`
    buffers aside); any problem is one ValueError saying what is wrong. Tensors are loaded
    as float32.

    >>> vit = load_dinov3(Path("weights/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth"))  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"DINOv3 weights not found at {path}. Get {DINOV3_VITB16_FILE} from Meta's DINOv3 release "
            f"({DINOV3_RELEASE}: request access, accept the DINOv3 licence, then download with the "
            "link Meta sends) and pass the file's path; no weights are downloaded automatically."
        )
    state = _read_state_dict(path)
    # Built on the meta device: no time spent on a random init that the checkpoint replaces.
    # Every tensor of the model is in the state dict, so `assign` leaves nothing on meta.
    with torch.device("meta"):
        model = ViT(DINOV3_VITB16)
    expected = model.state_dict()
    _check_keys(state, expected, path)
    _fill_bias_masks(state, expected)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval()


def backbone(weights: Path | None) -> ViT:
    """The network's image backbone: frozen DINOv3 ViT-B/16 from `weights` when given,
    else the SMALL ViT, randomly initialised and trainable."""
    return load_dinov3(weights) if weights is not None else ViT(SMALL)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """A flat name -> tensor mapping from a .pth or .safetensors file, or a ValueError."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ValueError(f"{path} is a .safetensors file but the safetensors package is not installed; use the .pth file") from err
        try:
            state = load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path} is not a readable safetensors checkpoint: {err}") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} is not a PyTorch checkpoint (torch.load failed: {type(err).__name__})") from err
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ValueError(f"{path} is not a checkpoint: expected a flat state dict of tensors (Meta's {DINOV3_VITB16_FILE}), got {type(state).__name__}")
    return dict(state)


def _fill_bias_masks(state: dict[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    """Checkpoints saved without the qkv `bias_mask` buffers get DINOv3's initial mask, the
    one the model was trained with."""
    for key, value in expected.items():
        if key.endswith(".bias_mask") and key not in state:
            state[key] = default_bias_mask(value.shape[0])


def _check_keys(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], path: Path) -> None:
    """Raise one ValueError naming missing, unexpected and misshapen keys; the qkv
    `bias_mask` buffers may be absent (`_fill_bias_masks`)."""
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(".bias_mask"))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:4])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:4])})")
    if wrong_shape:
        k = wrong_shape[0]
        problems.append(f"{len(wrong_shape)} keys with the wrong shape (e.g. {k}: {tuple(state[k].shape)}, expected {tuple(expected[k].shape)})")
    if problems:
        raise ValueError(f"{path} is not Meta's DINOv3 ViT-B/16 backbone ({DINOV3_VITB16_FILE}): " + "; ".join(problems))
