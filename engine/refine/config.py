"""Refiner hyperparameters (paper §2.5), loaded from ``presets/refine/<name>.json``."""
from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path

from engine.io.presets import PRESET_ROOT


@dataclass(frozen=True)
class RefineConfig:
    """Layout-preserving refinement: binding and Gaussian count frozen, no densification."""

    iterations: int = 10000
    """Optimisation steps (one training frame each)."""
    resolution: int = 256
    """Longer side of the training renders, pixels (frames are downscaled to it)."""
    lr_position: float = 2e-4
    """Adam learning rate of local positions (units of the triangle scale)."""
    lr_rotation: float = 1e-3
    """Adam learning rate of local rotations (quaternion components)."""
    lr_scale: float = 5e-3
    """Adam learning rate of log-scales."""
    lr_color: float = 2.5e-3
    """Adam learning rate of colours."""
    lr_opacity: float = 2.5e-2
    """Adam learning rate of opacity logits."""
    lambda_l1: float = 0.8
    """Weight of the L1 photometric loss."""
    lambda_ssim: float = 0.2
    """Weight of (1 - SSIM)."""
    lambda_aspect: float = 0.01
    """Weight of the screen-space anti-spike penalty (0 disables it: ablation)."""
    aspect_tau: float = 1.15
    """Penalty-free half log aspect ratio of a projected Gaussian (1.15: axes up to 10:1)."""
    aspect_start: int = 500
    """Iteration from which the aspect penalty applies."""
    aspect_sample: int = 8192
    """Gaussians drawn at random each step to estimate the penalty's mean (an unbiased estimate;
    projecting all ~62K cost a quarter of an iteration). 0: all of them."""
    scale_freeze: int = 500
    """Log-scales stay fixed for this many iterations (0 disables the freeze: ablation)."""
    log_scale_max: float | None = 1.1
    """Hard clamp of log-scale relative to the triangle scale (None disables it: ablation)."""
    anchor: float = 1e-3
    """After each Adam step every attribute moves back towards its start value (the avatar the
    run began from), apart from the loss as AdamW's weight decay is: by ``anchor`` · m / (m + r)
    of the way, r the parameter's root-mean-square gradient and m the median of r
    (`engine.refine.refiner.anchor_pull`). Adam divides each gradient by its own size, so a
    parameter the frames hardly constrain (the mouth's inside, a hidden layer, a face's depth)
    takes steps as long as one they pin down, in directions its noise picks; without the pull
    such colours walked to 0 or 1 and such Gaussians off their surface, which the training
    frames do not see but the avatar shows once it opens its mouth wider or turns further than
    they did. 0: off (the paper's refiner)."""
    lambda_color_tv: float = 0.1
    """Weight of the colours' total variation over the UV raster: the mean absolute difference
    between the colours of neighbouring slots (`engine.binding.UVSlots.neighbours`;
    `engine.refine.refiner.smoothness`). Neighbouring Gaussians overlap, so the training views
    see the blend of a few of them: noise of opposite sign in neighbours leaves those views
    unchanged, and without the term the colour maps grew eight times as rough as the start's
    (salt and pepper), which a view turned further than the frames shows as specks. 0: off (the
    paper's refiner)."""
    lambda_opacity_tv: float = 0.03
    """Weight of the opacities' total variation over the UV raster (of the opacity, not its
    logit). With the colour term alone a quarter of the head page's Gaussians ended below
    opacity 0.5, in speckles, and a turned view showed the layer behind them (docs/refine.md,
    "Turned views")."""
    lambda_scale_tv: float = 0.03
    """Weight of the log-scales' total variation over the UV raster (the paper's feed-forward
    stage smooths log-scale and position so). Without it a tenth of the Gaussians grew 2.7
    times as long as they started, blurring noisy colours into the frames' at the training
    views and smearing them across a turned one."""
    residual_features: int = 0
    """Per-slot features of the avatar's expression residual (`engine.residual`: the paper's
    FLAME-conditioned residual head, learnt per subject); 0: a static avatar (the default preset:
    the shorter schedule; docs/refine.md compares the presets). ``residual`` and ``quality`` set 32."""
    residual_hidden: int = 32
    """Width of the residual's FiLM modulation."""
    lr_residual: float = 1e-3
    """Adam learning rate of the residual's features and weights."""
    lambda_residual: float = 0.01
    """Weight of the residual's shrinkage, mean over Gaussians of ‖δ‖²."""
    residual_dropout: float = 0.5
    """Fraction of steps, at random, that train without the residual (when there is one), so the
    static Gaussians must explain those images alone and cannot lean on per-frame changes the
    residual learns (its effect on held-out PSNR: docs/refine.md); a polish of a residual avatar
    keeps it."""
    random_background: bool = True
    """Composite render and target on the same random colour each step (False: white)."""
    photometric_tracking: bool = True
    """Before refining, align every frame's tracked pose, jaw, eyes and expression photometrically
    (`engine.refine.tracking`: to the feed-forward start, then to the tracker avatar); the refiner
    trains, and `eval refine` scores, on that tracking. False: the landmark tracker's parameters
    as they are."""
    track_iterations: int = 12
    """Adam steps per frame of the photometric tracking (warm-started from the previous frame)."""
    track_resolution: int = 128
    """Longer side of the photometric tracking's renders, pixels."""
    tracker_iterations: int = 1500
    """With photometric tracking: steps of the *tracker avatar*, the start refined briefly on the
    training frames, to which every frame is then aligned again (`engine.refine.tracking`);
    0: align to the start only."""
    tracker_resolution: int = 256
    """Longer side of the renders of the alignment to the tracker avatar, pixels (at most the
    video's). 512 (the evaluation's resolution) did not score better than 256 (docs/refine.md)."""
    tracker_track_iterations: int = 12
    """Adam steps per frame of the alignment to the tracker avatar."""
    checkpoint_every: int = 1000
    """Write a resumable checkpoint every this many iterations (0: never)."""
    preview_every: int = 250
    """Report a preview frame to the progress callback every this many iterations."""
    seed: int = 0
    """Random seed of frame order and backgrounds."""
    then: str = ""
    """A preset to continue with once this one is done: it refines this one's result on the same
    tracking (e.g. ``polish``; `stages`). Empty: none."""

    def track_config(self, tracker: bool = False):
        """The `AlignConfig` of the alignment to the start, or with ``tracker`` to the tracker avatar."""
        from engine.refine.align import AlignConfig

        if tracker:
            return AlignConfig(iterations=self.tracker_track_iterations, resolution=self.tracker_resolution)
        return AlignConfig(iterations=self.track_iterations, resolution=self.track_resolution)


MAX_STAGES = 4
"""Stages a ``then`` chain may have (a guard against presets that name each other)."""


def stages(cfg: RefineConfig) -> list[RefineConfig]:
    """``cfg`` and the presets its ``then`` chain names, in the order they run."""
    out = [cfg]
    while out[-1].then:
        if len(out) == MAX_STAGES:
            raise ValueError(f"refine presets chained by 'then' run at most {MAX_STAGES} stages "
                             f"(a loop? {' -> '.join(c.then for c in out)})")
        out.append(load_refine_config(out[-1].then))
    return out


def training_side(cfg: RefineConfig) -> int:
    """The largest training resolution of ``cfg``'s `stages`: the frames a whole run needs."""
    return max(c.resolution for c in stages(cfg))


def load_refine_config(name_or_path: str | Path = "default", **overrides) -> RefineConfig:
    """The bundled preset ``name`` (``default``, ``fast``, ``polish``, ``residual``, ``quality``) or a
    JSON file, then ``overrides`` (which apply to this stage, not to the ones its ``then`` names).
    ``fast`` and other presets list only what differs from the defaults."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PRESET_ROOT / "refine" / f"{name_or_path}.json"
        if not path.exists():
            names = sorted(p.stem for p in (PRESET_ROOT / "refine").glob("*.json"))
            raise ValueError(f"no refine preset {name_or_path!r}; bundled: {', '.join(names)}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON preset ({e})") from None
    if not isinstance(data, dict) or data.pop("schema", None) != 1:
        raise ValueError(f"{path}: unknown preset schema (expected 1)")
    known = {f.name for f in fields(RefineConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(RefineConfig)
    for key, value in data.items():
        kinds = typing.get_args(hints[key]) or (hints[key],)
        if not any(_is(value, kind) for kind in kinds):
            want = " or ".join("null" if k is type(None) else "a finite number" if k is float else k.__name__
                               for k in kinds)
            raise ValueError(f"{path}: {key} must be {want}, not {json.dumps(value)[:40]}")
    return replace(RefineConfig(), **{**data, **overrides})


def _is(value, kind: type) -> bool:
    """Whether a JSON value fits a field of type ``kind`` (true is no number; NaN no number either)."""
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)
