"""A refined avatar's expression residual: the paper's FLAME-conditioned residual head (§2.3)
kept per subject, so a refined avatar's Gaussians still change with the expression (its
ablation E: refinement without the residual head loses 1.6 dB).

Every slot n has a learned feature vector f_n [C]; an expression code c [E+12] (expression,
jaw, neck, eyes: `HeadParams.condition`) FiLM-modulates it, and a shared linear map reads the
result out:

    (γ, β) = MLP(c)                                     [C] each
    δ_n   = W·SiLU((1 + γ) ⊙ f_n + β) + w               [13]: local position, rotation, log-scale, colour

δ is added to the slot's pre-activation attributes (position and log-scale scaled by STEP;
never opacity, as in the paper). The generator's head maps its features into the FiLM's space
with a layer and reads them out with a two-layer MLP; here the features live in that space
already and the read-out is one layer, a third of the multiply-adds (and 38 % more refiner steps
per second than that form, for a better score). The nonlinearity per slot is what matters: without it (the map after the FiLM
linear, so foldable into one matrix per expression) the residual gained nothing on held-out
frames (docs/refine.md). W starts at zero, so a new residual leaves the avatar unchanged.

The per-slot map runs in the native extension (`engine.native`: the activation in one pass and
the read-out as one matrix product forward, one pass backward) when it is available, and in
torch otherwise; the two agree to float rounding. See docs/refine.md (Speed) for what it saves.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.binding import UVSlots
from engine.native import available, load

RESIDUAL_CHANNELS = {"local_position": 3, "rotation": 4, "log_scale": 3, "color": 3}
"""What the residual changes, with channel counts (never opacity)."""
STEP = 0.1
"""A residual output of 1 moves a Gaussian by this many triangle scales (and log-scale by this)."""
_OUT = sum(RESIDUAL_CHANNELS.values())
NATIVE_MAX_FEATURES = 256
"""Features per slot the native map takes (engine/native/residual.cpp); more run in torch."""


class ExpressionResidual(nn.Module):
    """Per-slot features [N, C] and the FiLM-modulated linear map; ``forward(cond)`` gives the
    residuals of every slot for one expression code, as one [N, 13] tensor."""

    def __init__(self, features: Tensor, hidden: int, cond_dim: int) -> None:
        super().__init__()
        self.features = nn.Parameter(features)
        c = features.shape[1]
        self.film_in = nn.Linear(cond_dim, hidden)
        self.film_out = nn.Linear(hidden, 2 * c)
        self.out = nn.Linear(c, _OUT)

    @staticmethod
    def new(n_slots: int, features: int, hidden: int, cond_dim: int, seed: int = 0) -> "ExpressionResidual":
        """A residual that is zero for every expression (the read-out starts at zero)."""
        with torch.random.fork_rng():       # seeded, without touching the caller's random state
            torch.manual_seed(seed)
            r = ExpressionResidual(torch.randn(n_slots, features), hidden, cond_dim)
        nn.init.zeros_(r.out.weight)
        nn.init.zeros_(r.out.bias)
        return r

    @property
    def cond_dim(self) -> int:
        return self.film_in.in_features

    def forward(self, cond: Tensor) -> Tensor:
        """Residuals [N, 13] of every slot for the code ``cond`` [E+12], channels in the order
        of RESIDUAL_CHANNELS (`split` names them)."""
        gamma, beta = self.film_out(torch.nn.functional.silu(self.film_in(cond))).chunk(2, -1)
        return residual_map(self.features, gamma, beta, self.out.weight, self.out.bias)

    # -- storage: the avatar keeps the features as a UV map beside its attribute maps
    def state(self, slots: UVSlots) -> dict[str, Tensor]:
        """``Avatar.residual``: the features as a UV map [C, R, R], the weights by name."""
        out = {"features": slots.scatter(self.features.detach()).cpu()}     # host copies: saved, bundled
        out.update({k: v.detach().cpu().clone() for k, v in self.state_dict().items() if k != "features"})
        return out

    @staticmethod
    def from_state(state: dict[str, Tensor], slots: UVSlots) -> "ExpressionResidual":
        """The residual of an ``Avatar.residual`` on the avatar's ``slots``."""
        feats = slots.gather(state["features"].to(slots.texel.device)).contiguous()
        r = ExpressionResidual(feats.clone(), state["film_in.weight"].shape[0], state["film_in.weight"].shape[1])
        r.load_state_dict({**{k: v for k, v in state.items() if k != "features"}, "features": feats})
        return r.to(slots.texel.device)     # the slots' device: the head model's


def residual_map(features: Tensor, gamma: Tensor, beta: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """δ_n = W·SiLU((1 + γ) ⊙ f_n + β) + w for features [N, C], γ and β [C], W [13, C], w [13]:
    natively when it can (float32/64 on the CPU, a native build), else in torch."""
    ts = (features, gamma, beta, weight, bias)
    native = features.device.type == "cpu" and features.dtype in (torch.float32, torch.float64) \
        and gamma.dim() == 1 and features.shape[1] <= NATIVE_MAX_FEATURES and all(t.dtype == features.dtype for t in ts)
    if not (native and available()):
        return residual_map_torch(*ts)
    return _ResidualMap.apply(features.contiguous(), (1 + gamma).contiguous(), beta.contiguous(),
                              weight.contiguous(), bias.contiguous())


def residual_map_torch(features: Tensor, gamma: Tensor, beta: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`residual_map` in torch operations (the fallback, and the reference the native one is tested against)."""
    return torch.nn.functional.linear(torch.nn.functional.silu(features * (1 + gamma) + beta), weight, bias)


class _ResidualMap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, g1: Tensor, beta: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(features, g1, beta, weight)
        return load().residual_forward(features, g1, beta, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        gf, gg1, gbeta, gw, gb = load().residual_backward(*ctx.saved_tensors, grad.contiguous())
        return gf if ctx.needs_input_grad[0] else None, gg1, gbeta, gw, gb


def state_shapes(features: int, hidden: int, cond_dim: int, resolution: int) -> dict[str, list[int]]:
    """The shape of every tensor of an ``Avatar.residual`` (bundles check them before loading)."""
    return {"features": [features, resolution, resolution],
            "film_in.weight": [hidden, cond_dim], "film_in.bias": [hidden],
            "film_out.weight": [2 * features, hidden], "film_out.bias": [2 * features],
            "out.weight": [_OUT, features], "out.bias": [_OUT]}


def split(delta: Tensor) -> dict[str, Tensor]:
    """Residuals [N, 13] by channel of RESIDUAL_CHANNELS."""
    return dict(zip(RESIDUAL_CHANNELS, delta.split(list(RESIDUAL_CHANNELS.values()), -1)))


def add_residual(attrs: dict[str, Tensor], delta: Tensor) -> dict[str, Tensor]:
    """Pre-activation per-slot attributes plus an expression's residuals [N, 13]."""
    out = dict(attrs)
    for k, d in split(delta).items():
        out[k] = attrs[k] + (STEP * d if k in ("local_position", "log_scale") else d)
    return out


def shrinkage(delta: Tensor) -> Tensor:
    """Mean over slots of the residuals' squared norm (keeps them to what the images need)."""
    return delta.square().sum(-1).mean()
