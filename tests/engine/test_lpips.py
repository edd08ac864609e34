"""LPIPS (AlexNet, v0.1) from user-provided weight files: fake files with the real key names and
shapes, the metric's properties, a hand computation and a numpy reference of the pipeline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.metrics.lpips import ALEXNET_CONVS, load_lpips

CHANNELS = [c[1] for c in ALEXNET_CONVS]


def fake_alexnet(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, cout, cin, k, *_ in ALEXNET_CONVS:
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        sd[f"features.{i}.bias"] = 0.1 * torch.randn(cout, generator=g)
    return sd


def fake_linear(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"lin{j}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1 for j, c in enumerate(CHANNELS)}


@pytest.fixture
def files(tmp_path):
    alex, lin = tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth"
    torch.save(fake_alexnet(), alex)
    torch.save(fake_linear(), lin)
    return alex, lin


def test_distance_properties_and_file_order(files):
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(64, 72, 3, generator=g), torch.rand(64, 72, 3, generator=g)
    lp = load_lpips(files)
    assert float(lp(x, x)) == 0.0
    assert float(lp(x, y)) > 0
    assert float(lp(x, y)) == pytest.approx(float(lp(y, x)), rel=1e-6)
    assert float(load_lpips(files[::-1])(x, y)) == pytest.approx(float(lp(x, y)), rel=1e-6)
    assert float(lp(x, (x + 0.02).clamp(0, 1))) < float(lp(x, y))


def test_missing_unknown_and_wrong_files_name_what_is_needed(files, tmp_path):
    alex, lin = files
    with pytest.raises(ValueError, match=r"alex\.pth .*PerceptualSimilarity.*got only"):
        load_lpips([alex])
    with pytest.raises(ValueError, match=r"alexnet-owt-7be5be79\.pth .*download\.pytorch\.org"):
        load_lpips([lin])
    with pytest.raises(FileNotFoundError, match="nowhere.pth does not exist"):
        load_lpips([alex, tmp_path / "nowhere.pth"])
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="other.pth is not an LPIPS weight file .*conv.weight"):
        load_lpips([alex, other])
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="not a readable torch weight file"):
        load_lpips([text, lin])
    with pytest.raises(ValueError, match="are both"):
        load_lpips([alex, alex])
    bad = fake_linear()
    bad["lin2.model.1.weight"] = torch.zeros(1, 256, 1, 1)
    torch.save(bad, other)
    with pytest.raises(ValueError, match=r"lin2.model.1.weight has shape \(1, 256, 1, 1\), expected \(1, 384, 1, 1\)"):
        load_lpips([alex, other])


def test_hand_computation_on_constant_images(tmp_path):
    """conv1 channel 0 reads the centre pixel of R, channel 1 is a constant 0.5 (bias), the rest
    of the network is zero. On constant images every first-tap location is
    [relu((2v - 1 + 0.030) / 0.458), 0.5]; deeper taps are 0 for both images."""
    alex = {k: torch.zeros_like(v) for k, v in fake_alexnet().items()}
    alex["features.0.weight"][0, 0, 5, 5] = 1.0
    alex["features.0.bias"][1] = 0.5
    lin = fake_linear()
    torch.save(alex, tmp_path / "a.pth")
    torch.save(lin, tmp_path / "l.pth")
    lp = load_lpips([tmp_path / "a.pth", tmp_path / "l.pth"])
    f0 = (2 * 0.7 - 1 + 0.030) / 0.458           # image a = 0.7; image b = 0.3 gives relu(< 0) = 0
    n = math.hypot(f0, 0.5)
    w0, w1 = (float(lin["lin0.model.1.weight"][0, c, 0, 0]) for c in (0, 1))
    expected = w0 * (f0 / n) ** 2 + w1 * (0.5 / n - 1.0) ** 2
    got = lp(torch.full((35, 35, 3), 0.7), torch.full((35, 35, 3), 0.3))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", win, w) + b[:, None, None]


def _np_pool(x: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max((-2, -1))


def _np_lpips(a: np.ndarray, b: np.ndarray, alex: dict, lin: dict) -> float:
    """The LPIPS pipeline written out in numpy (float64)."""
    shift, scale = np.array([-0.030, -0.088, -0.188]), np.array([0.458, 0.448, 0.450])
    feats = []
    for img in (a, b):
        h = ((img.astype(np.float64) * 2 - 1 - shift) / scale).transpose(2, 0, 1)
        taps = []
        for i, (conv, stride, pad) in enumerate(((0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1))):
            if conv in (3, 6):
                h = _np_pool(h)
            h = np.maximum(_np_conv(h, alex[f"features.{conv}.weight"].double().numpy(),
                                    alex[f"features.{conv}.bias"].double().numpy(), stride, pad), 0)
            taps.append(h / (np.sqrt((h**2).sum(0, keepdims=True)) + 1e-10))
        feats.append(taps)
    total = 0.0
    for j, (fa, fb) in enumerate(zip(*feats)):
        w = lin[f"lin{j}.model.1.weight"].double().numpy()[0, :, 0, 0]
        total += float(np.einsum("c,chw->hw", w, (fa - fb) ** 2).mean())
    return total


def test_matches_a_numpy_reference_of_the_pipeline(files):
    alex, lin = fake_alexnet(), fake_linear()
    g = np.random.default_rng(4)
    a = g.random((67, 75, 3)).astype(np.float32)        # conv1 16x17, pools to 7x8 and 3x3
    b = np.clip(a + g.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    got = float(load_lpips(files)(torch.from_numpy(a), torch.from_numpy(b)))
    assert got == pytest.approx(_np_lpips(a, b, alex, lin), rel=1e-4)
