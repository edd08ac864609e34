"""The DINOv3-architecture ViT: shapes, Meta's checkpoint layout, the loader's errors, RoPE.

No real DINOv3 weights exist here, so checkpoints are written from randomly initialised
models with the ViT-B/16 layout."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from engine.generator.vit import (
    DINOV3_VITB16,
    SMALL,
    ViT,
    apply_rope,
    backbone,
    default_bias_mask,
    load_dinov3,
    patch_coords,
    rope_periods,
    rope_sincos,
)

# Meta's dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth, written out: key -> shape.
TOP_LEVEL = {
    "cls_token": (1, 1, 768),
    "storage_tokens": (1, 4, 768),
    "mask_token": (1, 768),
    "patch_embed.proj.weight": (768, 3, 16, 16),
    "patch_embed.proj.bias": (768,),
    "rope_embed.periods": (16,),
    "norm.weight": (768,),
    "norm.bias": (768,),
}
PER_BLOCK = {
    "norm1.weight": (768,),
    "norm1.bias": (768,),
    "attn.qkv.weight": (2304, 768),
    "attn.qkv.bias": (2304,),
    "attn.qkv.bias_mask": (2304,),
    "attn.proj.weight": (768, 768),
    "attn.proj.bias": (768,),
    "ls1.gamma": (768,),
    "norm2.weight": (768,),
    "norm2.bias": (768,),
    "mlp.fc1.weight": (3072, 768),
    "mlp.fc1.bias": (3072,),
    "mlp.fc2.weight": (768, 3072),
    "mlp.fc2.bias": (768,),
    "ls2.gamma": (768,),
}
CHECKPOINT_SHAPES = TOP_LEVEL | {f"blocks.{n}.{k}": s for n in range(12) for k, s in PER_BLOCK.items()}


def _vitb_with_distinct_weights() -> ViT:
    """ViT-B whose blocks matter: at the 1e-5 LayerScale init the blocks barely change the
    tokens, so a block loaded wrongly would hide inside the tolerance."""
    torch.manual_seed(0)
    model = ViT(DINOV3_VITB16).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.1, 0.6)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model


@pytest.fixture(scope="module")
def vitb(tmp_path_factory) -> tuple[ViT, Path]:
    model = _vitb_with_distinct_weights()
    path = tmp_path_factory.mktemp("dinov3") / "dinov3_vitb16.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def loaded(vitb) -> ViT:
    return load_dinov3(vitb[1])


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(224, 224), (256, 192)])
def test_small_output_shapes_and_finite(hw):
    h, w = hw
    vit = ViT(SMALL)
    with torch.no_grad():
        features, cls = vit(torch.rand(2, 3, h, w))
    assert len(features) == 4
    for f in features:
        assert f.shape == (2, 192, h // 16, w // 16)
        assert torch.isfinite(f).all()
    assert cls.shape == (2, 192)
    assert torch.isfinite(cls).all()
    assert (vit.embed_dim, vit.patch_size) == (192, 16)


def test_features_are_final_normed_patch_tokens():
    """Each feature map is one block's patch tokens through the final LayerNorm (weight 1, bias 0
    at init), so every token has zero mean and unit variance over channels."""
    features, _ = ViT(SMALL)(torch.rand(1, 3, 32, 48))
    for f in features:
        tokens = f.flatten(2).transpose(1, 2)
        assert_close(tokens.mean(-1), torch.zeros(1, 6), atol=1e-5, rtol=0)
        assert_close(tokens.var(-1, unbiased=False), torch.ones(1, 6), atol=1e-3, rtol=0)


def test_image_size_not_multiple_of_patch_raises():
    with pytest.raises(ValueError, match="multiples of 16"):
        ViT(SMALL)(torch.rand(1, 3, 40, 48))


def test_out_layers_must_be_four_increasing_blocks():
    with pytest.raises(ValueError, match="increasing"):
        replace(SMALL, out_layers=(0, 1, 1, 3))
    with pytest.raises(ValueError, match="increasing"):
        replace(SMALL, out_layers=(1, 2, 3, 4))


# --- checkpoint layout ----------------------------------------------------------------------


def test_vitb16_preset_is_the_hub_entrys():
    """Values of the hub's `dinov3_vitb16` that the key shapes do not pin."""
    cfg = DINOV3_VITB16
    assert (cfg.layerscale_init, cfg.norm_eps, cfg.rope_base, cfg.rope_normalize, cfg.rope_rescale) == (1e-5, 1e-5, 100.0, "separate", 2.0)
    assert cfg.out_layers == (2, 5, 8, 11)


def test_qkv_bias_mask_switches_the_k_bias_off():
    qkv = ViT(SMALL).blocks[0].attn.qkv
    with torch.no_grad():
        qkv.bias.fill_(1.0)
        out = qkv(torch.zeros(1, 192))[0]
    assert_close(out, torch.cat([torch.ones(192), torch.zeros(192), torch.ones(192)]))


def test_vitb16_state_dict_is_metas_checkpoint_layout():
    with torch.device("meta"):
        state = ViT(DINOV3_VITB16).state_dict()
    assert len(CHECKPOINT_SHAPES) == 8 + 12 * 15 == 188
    assert {k: tuple(v.shape) for k, v in state.items()} == CHECKPOINT_SHAPES


def test_round_trip_through_pth_gives_identical_outputs(vitb, loaded):
    model, _ = vitb
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected_features, expected_cls = model(images)
        features, cls = loaded(images)
    for f, e in zip(features, expected_features):
        assert_close(f, e, rtol=0, atol=0)
    assert_close(cls, expected_cls, rtol=0, atol=0)


def test_loaded_dinov3_is_frozen_and_in_eval_mode(loaded):
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert {t.device.type for t in [*loaded.parameters(), *loaded.buffers()]} == {"cpu"}


def test_backbone_picks_dinov3_with_weights_else_trainable_small(vitb):
    assert backbone(vitb[1]).config == DINOV3_VITB16
    small = backbone(None)
    assert small.config == SMALL
    assert small.training
    trainable = {n for n, p in small.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in small.named_parameters()} - {"mask_token"}


def test_checkpoint_without_bias_masks_gets_dinov3_default_mask(vitb, tmp_path):
    state = {k: v for k, v in vitb[0].state_dict().items() if not k.endswith("bias_mask")}
    path = tmp_path / "no_mask.pth"
    torch.save(state, path)
    mask = load_dinov3(path).blocks[5].attn.qkv.bias_mask
    assert_close(mask, default_bias_mask(2304))
    assert mask[:768].eq(1).all() and mask[768:1536].eq(0).all() and mask[1536:].eq(1).all()


# --- loader errors --------------------------------------------------------------------------


def test_missing_file_says_where_to_get_the_weights(tmp_path):
    with pytest.raises(ValueError) as err:
        load_dinov3(tmp_path / "nope.pth")
    message = str(err.value)
    assert "not found" in message
    assert "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth" in message
    assert "https://github.com/facebookresearch/dinov3" in message


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_dinov3(path)


def test_non_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match="flat state dict"):
        load_dinov3(path)


def test_removed_key_is_named(vitb, tmp_path):
    state = vitb[0].state_dict()
    del state["blocks.7.mlp.fc2.weight"]
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 missing keys \(e\.g\. blocks\.7\.mlp\.fc2\.weight\)"):
        load_dinov3(path)


def test_other_architecture_names_missing_and_misshapen_keys(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(ViT(SMALL).state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_dinov3(path)
    message = str(err.value)
    assert "112 missing keys (e.g. blocks.10." in message   # blocks 4..11 x 14 (bias masks are optional)
    assert "wrong shape (e.g. blocks.0." in message
    assert "expected (" in message


# --- RoPE -----------------------------------------------------------------------------------


def _logits(q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    periods = rope_periods(q.shape[-1], 100.0)
    return apply_rope(q, *rope_sincos(q_pos, periods)) @ apply_rope(k, *rope_sincos(k_pos, periods)).T


def test_rope_layout_is_dinov3s():
    """Pinned from DINOv3's formulas, so the checkpoint's heads see the rotations they were
    trained with: periods base^(i / (D/4)); patch centres ((i + 1/2) / n) * 2 - 1 per axis;
    angles 2 pi coord / period as [row | col], tiled twice."""
    periods = rope_periods(64, 100.0)
    assert_close(periods, 100.0 ** (torch.arange(16) / 16))
    coords = patch_coords(2, 4, "separate")
    assert_close(coords[:4], torch.tensor([[-0.5, -0.75], [-0.5, -0.25], [-0.5, 0.25], [-0.5, 0.75]]))
    assert_close(patch_coords(2, 4, "max")[4], torch.tensor([-0.25, -0.75]))  # row 1.5 / 4
    sin, cos = rope_sincos(coords, periods)
    angles = 2 * torch.pi * torch.cat([coords[:, :1] / periods, coords[:, 1:] / periods], dim=1)
    assert_close(sin, torch.sin(angles).tile(2))
    assert_close(cos, torch.cos(angles).tile(2))
    x = torch.arange(64.0)
    rotated = apply_rope(x, sin[5], cos[5])
    # channel i pairs with channel i + 32: (x_i, x_i+32) -> (x_i cos - x_i+32 sin, x_i+32 cos + x_i sin)
    assert_close(rotated[3], x[3] * cos[5, 3] - x[35] * sin[5, 3])
    assert_close(rotated[35], x[35] * cos[5, 35] + x[3] * sin[5, 35])


def test_rope_logits_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 10, 64, generator=g)
    pos = torch.rand(10, 2, generator=g) * 2 - 1
    shift = torch.tensor([0.37, -1.2])
    base = _logits(q, k, pos, pos)
    assert_close(_logits(q, k, pos + shift, pos + shift), base, atol=1e-4, rtol=1e-4)
    # Shifting the keys alone does change the logits, so the check above can fail.
    assert (_logits(q, k, pos, pos + shift) - base).abs().max() > 0.5


# --- training -------------------------------------------------------------------------------


def test_small_gets_gradients_everywhere():
    vit = ViT(SMALL)
    features, cls = vit(torch.rand(2, 3, 48, 64))
    (sum(f.square().mean() for f in features) + cls.square().mean()).backward()
    for name, p in vit.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
