"""LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), in plain torch, from weight files the
user provides (none are shipped or downloaded):

- torchvision's AlexNet checkpoint `alexnet-owt-7be5be79.pth` (keys `features.0.weight` …),
  https://download.pytorch.org/models/alexnet-owt-7be5be79.pth
- the LPIPS linear layers `alex.pth` (keys `lin0.model.1.weight` … `lin4.model.1.weight`), file
  `lpips/weights/v0.1/alex.pth` of https://github.com/richzhang/PerceptualSimilarity

Images in [0, 1] are mapped to [-1, 1] and scaled per channel like the reference `ScalingLayer`;
the features after each of AlexNet's five ReLUs are unit-normalised over channels, their squared
differences weighted by the 1x1 linear layer of that tap, averaged over space and summed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LINEAR_FILE = "alex.pth"
LINEAR_URL = "https://github.com/richzhang/PerceptualSimilarity (lpips/weights/v0.1/alex.pth)"

# (features index, out channels, in channels, kernel, stride, padding, max-pool before this conv)
ALEXNET_CONVS = ((0, 64, 3, 11, 4, 2, False), (3, 192, 64, 5, 1, 2, True), (6, 384, 192, 3, 1, 1, True),
                 (8, 256, 384, 3, 1, 1, False), (10, 256, 256, 3, 1, 1, False))
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _expected() -> dict[str, dict[str, tuple[int, ...]]]:
    alex = {}
    for i, cout, cin, k, *_ in ALEXNET_CONVS:
        alex[f"features.{i}.weight"], alex[f"features.{i}.bias"] = (cout, cin, k, k), (cout,)
    lin = {f"lin{j}.model.1.weight": (1, c[1], 1, 1) for j, c in enumerate(ALEXNET_CONVS)}
    return {"alexnet": alex, "linear": lin}


def _describe(kind: str) -> str:
    if kind == "alexnet":
        return f"torchvision's AlexNet weights {ALEXNET_FILE} (keys features.0.weight …), from {ALEXNET_URL}"
    return f"the LPIPS v0.1 linear layers {LINEAR_FILE} (keys lin0.model.1.weight …), from {LINEAR_URL}"


def _read(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weight file {path} does not exist; LPIPS needs {_describe('alexnet')} "
                                f"and {_describe('linear')}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable file gets the same explanation
        raise ValueError(f"{path} is not a readable torch weight file ({type(e).__name__}: {e})") from e
    if not isinstance(sd, dict):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict of weights")
    return sd


def load_lpips_weights(paths: Sequence[str | Path]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(AlexNet conv weights, LPIPS linear weights), recognised by their keys in any order."""
    expected, found = _expected(), {}
    for p in map(Path, paths):
        sd = _read(p)
        kind = next((k for k, keys in expected.items() if next(iter(keys)) in sd), None)
        if kind is None:
            keys = ", ".join(list(sd)[:4]) or "none"
            raise ValueError(f"{p} is not an LPIPS weight file (its keys start with {keys}); LPIPS needs "
                             f"{_describe('alexnet')} and {_describe('linear')}")
        if kind in found:
            raise ValueError(f"{found[kind][0]} and {p} are both {_describe(kind)}")
        for key, shape in expected[kind].items():
            if key not in sd:
                raise ValueError(f"{p} lacks {key}: it should be {_describe(kind)}")
            if tuple(sd[key].shape) != shape:
                raise ValueError(f"{p}: {key} has shape {tuple(sd[key].shape)}, expected {shape}; "
                                 f"it should be {_describe(kind)}")
        found[kind] = (p, {k: sd[k].float() for k in expected[kind]})
    missing = [k for k in expected if k not in found]
    if missing:
        raise ValueError("LPIPS needs " + " and ".join(_describe(k) for k in missing)
                         + (f"; got only {found[next(iter(found))][0]}" if found else ""))
    return found["alexnet"][1], found["linear"][1]


def _unit(f: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit length over channels, as the reference `normalize_tensor`."""
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)


class Lpips:
    """LPIPS distance of two [H, W, 3] images in [0, 1] (differentiable; 0 for identical images)."""

    def __init__(self, alexnet: dict[str, Tensor], linear: dict[str, Tensor]) -> None:
        self.convs = [(alexnet[f"features.{i}.weight"], alexnet[f"features.{i}.bias"], s, p, pool)
                      for i, _, _, _, s, p, pool in ALEXNET_CONVS]
        self.lins = [linear[f"lin{j}.model.1.weight"] for j in range(len(ALEXNET_CONVS))]
        self.shift = torch.tensor(SHIFT).reshape(1, 3, 1, 1)
        self.scale = torch.tensor(SCALE).reshape(1, 3, 1, 1)

    def features(self, imgs: Tensor) -> list[Tensor]:
        """The five ReLU outputs of AlexNet's `features` for [N, H, W, 3] images in [0, 1]."""
        if imgs.dim() != 4 or imgs.shape[-1] != 3:
            raise ValueError(f"LPIPS takes RGB images [H, W, 3]; got {tuple(imgs.shape[1:])}")
        h = ((imgs.float().permute(0, 3, 1, 2) * 2 - 1) - self.shift) / self.scale
        taps = []
        for w, b, stride, pad, pool in self.convs:
            if pool:
                h = F.max_pool2d(h, 3, 2)
            h = F.relu(F.conv2d(h, w, b, stride, pad))
            taps.append(h)
        return taps

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        total = torch.zeros(())
        for f, lin in zip(self.features(torch.stack([a.float(), b.float()])), self.lins):
            total = total + F.conv2d((_unit(f[:1]) - _unit(f[1:])).square(), lin).mean()
        return total


def load_lpips(paths: Sequence[str | Path]) -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS (AlexNet, v0.1) from the two weight files, in any order; a missing or wrong file raises
    FileNotFoundError / ValueError naming the file LPIPS needs and where to get it."""
    return Lpips(*load_lpips_weights(paths))
