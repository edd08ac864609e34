"""Fitting the outer layer (hair shell and bust, `engine.headmodel.outer`) to the sources.

Each outer slot moves along its ray (from the skull's centre for the hair, horizontally
from the bust's axis for the bust) to where the person's silhouette says the surface is:

1. **Silhouette radius, per source.** The ray is marched outward in 2 mm steps, posed as in
   the photo and projected; the first step outside the person matte is the silhouette-cone
   radius ``t``. A ray seen at angle ``a`` to the line of sight leaves the cone of a round
   body of radius ``r`` at ``t = r / sin a``, so ``t·sin a`` estimates the body's radius in
   that direction; it counts with weight ``sin² a``, and not at all below ``OuterConfig.
   min_sin`` (rays nearly along the line of sight say nothing about depth) or when the ray
   leaves the frame before the person. The bust is fitted first; the hair's rays end where
   they enter it.
2. **Pooling and filling.** The K sources' estimates are weighted-averaged; directions no
   source constrains take their left/right mirror's, then their own row's (the back of the
   head the sides' volume at its height), then the page's neighbours' (`push_pull`), and the
   field is smoothed in UV: smooth, and symmetric where it was not seen.
3. **Colour and opacity,** as the projective stage does for the head page: each slot's
   fitted point is projected into every source; where nothing hides it (a z-buffer of the
   head page's points and the shell's) it takes the image colour and the person matte as
   opacity, mean-pooled over sources by cos(view angle)². Unseen slots take their mirror's
   colour or are filled in UV; an unseen slot is opaque where the fitted surface stands clear
   of the head mesh (hair or body hidden behind it) and transparent where it lies on the
   skull, which the head page paints already; so is a seen slot beside the face (opacity
   ramps up with the distance it stands off the head). Last, the visual hull: a slot whose
   point projects outside any source's person matte is made transparent.
4. **Polish** (`polish`, for the projective avatar): a few steps of the differentiable
   renderer at the sources' cameras on the colours and the outer layer's opacity.

Measured by ``python main.py eval portraits`` (silhouette IoU and PSNR in the portrait matte
at each portrait's own camera), ``eval ff`` and ``tests/engine/test_outer.py`` (turned views of
a synthetic subject); docs/evaluation.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from engine.binding import triangle_frames
from engine.generator.projective import Source, _sample, _visible, slot_points, ProjectiveConfig
from engine.headmodel.base import HeadModel
from engine.headmodel.outer import OuterLayer, PAGE
from engine.camera import project
from engine.types import HeadParams, UVGaussians


@dataclass(frozen=True)
class OuterConfig:
    """Steps and thresholds of the outer layer's fit."""

    step: float = 0.002
    """Metres between samples along a ray."""
    max_radius: float = 0.30
    """Farthest a ray is marched from its origin (m)."""
    min_sin: tuple = (0.8, 0.5)
    """Rays at a smaller sine to the line of sight do not constrain the radius (hair, bust). The
    hair's is stricter: its rays down and back from the skull stay inside the neck's
    silhouette from the front without there being hair behind the neck."""
    clear: float = 0.012
    """An unseen slot this far (m) outside its template radius is opaque (hidden hair or body)."""
    bust_min: float = 0.5
    """The bust may shrink to this fraction of its template radius."""
    on_head: float = 0.003
    """A slot beside the face at most this far (m) outside its template radius lies on the head
    mesh and stays transparent; opacity ramps up from here to ``clear``."""
    smooth: float = 1.0
    """Gaussian smoothing of the fitted radius in the page (texels)."""
    thickness: float = 0.5
    """Gaussians' thickness along the chart's normal, as a fraction of their width."""
    width: float = 0.7
    """Gaussians' width (standard deviation) as a fraction of their texel spacing."""
    inset: float = 0.003
    """Metres the fitted surface is drawn in from the silhouette: the outermost Gaussians'
    own width would otherwise carry the avatar's outline past the person's."""
    min_cos: float = -1.0
    """Slots turned further from the camera than this do not take a source's colour. The
    default takes every slot nothing hides: the fitted surface's normal is only its ray's
    direction, and a slot the camera sees from behind (the inside of the shell, past the
    face's edge) still shows what the photo shows there."""


def _posed_rays(model: HeadModel, outer: OuterLayer, params: HeadParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(posed ray origins [N, 3], posed unit directions [N, 3]) of the outer slots."""
    o = outer.transform_points(model, params, outer.origin)
    tip = outer.transform_points(model, params, outer.origin + outer.direction)
    return o, tip - o


def silhouette_radius(model: HeadModel, outer: OuterLayer, src: Source, cfg: OuterConfig, stop=None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(radius estimate [N] (m), weight [N]) of every outer slot's surface from one source's matte.
    ``stop``: None, or a function of rest-frame points [N, S, 3] giving [N, S] bool: where a
    ray must end even inside the silhouette (the hair's rays at the bust)."""
    o, d = _posed_rays(model, outer, src.params)
    h, w = src.rgb.shape[:2]
    start = lowest_radius(outer, cfg)
    n_steps = int(np.ceil((cfg.max_radius - float(start.min())) / cfg.step)) + 1
    t = start[:, None] + cfg.step * torch.arange(n_steps, dtype=torch.float32)[None]   # [N, S]
    t = torch.minimum(t, torch.full_like(t, cfg.max_radius))
    pts = o[:, None] + t[..., None] * d[:, None]
    f = float(src.K[0, 0])
    uv, z = project(pts.reshape(1, -1, 3), torch.tensor([f]), torch.tensor([[h, w]], dtype=torch.float32))
    uv = uv[0].reshape(len(o), n_steps, 2)
    x, y = uv[..., 0].floor().long(), uv[..., 1].floor().long()
    in_image = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    matte = torch.as_tensor(src.matte)
    person = matte[y.clamp(0, h - 1), x.clamp(0, w - 1)] > 127
    # the first sample off the person; a ray that leaves the frame first says nothing
    # (the person may go on beyond it) and is filled from its neighbours
    outside = ~person | ~in_image
    if stop is not None:
        outside |= stop(outer.origin[:, None] + t[..., None] * outer.direction[:, None])
    outside[:, -1] = True
    first = outside.float().argmax(1)
    t_exit = t.gather(1, first[:, None])[:, 0]
    cropped = ~in_image.gather(1, first[:, None])[:, 0]
    to_cam = F.normalize(-(o + outer.radius[:, None] * d), dim=-1)
    sin = (1 - ((d * to_cam).sum(-1)) ** 2).clamp_min(0).sqrt()
    # the surface lies between the last sample inside and the first outside
    radius = torch.maximum(start, (t_exit - 0.5 * cfg.step) * sin)
    min_sin = torch.tensor(cfg.min_sin, dtype=torch.float32)[outer.chart]
    weight = torch.where((sin > min_sin) & ~cropped, sin ** 2, torch.zeros_like(sin))
    return radius, weight


def _page(outer: OuterLayer, values: torch.Tensor) -> np.ndarray:
    """The outer page [PAGE, PAGE] (float64) of per-slot ``values`` [N]; NaN off the charts."""
    img = np.full(PAGE * PAGE, np.nan)
    img[outer.slots.texel.numpy()] = values.double().numpy()
    return img.reshape(PAGE, PAGE)


def push_pull(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``values`` [H, W] where ``weight`` [H, W] (in [0, 1]) is 0 filled from the weighted mean of
    ever coarser neighbourhoods (a push-pull pyramid): smooth, bounded by the known values."""
    v = torch.as_tensor(values * weight, dtype=torch.float64)[None, None]
    w = torch.as_tensor(weight, dtype=torch.float64)[None, None]
    levels = [(v, w)]
    while min(levels[-1][0].shape[-2:]) > 1:
        v, w = levels[-1]
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    v, w = levels[-1]
    est = v / w.clamp_min(1e-12)
    for v, w in reversed(levels[:-1]):
        up = F.interpolate(est, size=v.shape[-2:], mode="bilinear", align_corners=False)
        a = w.clamp(0, 1)              # the known fraction of each cell keeps its own mean
        est = torch.where(w > 0, v / w.clamp_min(1e-12), up) * a + up * (1 - a)
    return est[0, 0].numpy()


def _fill_page(outer: OuterLayer, values: torch.Tensor, known: torch.Tensor, smooth: float,
               along_rows: bool = False) -> torch.Tensor:
    """Per-slot values [N] with the unknown ones filled from their neighbours in the page
    (`push_pull`; the left and right edges wrap round: both are the back), then smoothed.
    ``along_rows``: first from the known slots of the same row (the same elevation or height,
    all round), so the back of the head takes the hair volume of the sides at its height."""
    import scipy.ndimage as ndi

    pad = PAGE // 4
    v = _page(outer, torch.where(known, values, torch.zeros_like(values)))
    k = _page(outer, known.float())
    on = ~np.isnan(k)
    v, k = np.nan_to_num(v), np.nan_to_num(k)
    if along_rows:             # unknown slots first from the known ones of their own row (circularly)
        v, k = v.copy(), k.copy()
        for i in range(PAGE):
            cols = np.nonzero(on[i] & (k[i] > 0.5))[0]
            todo = np.nonzero(on[i] & (k[i] <= 0.5))[0]
            if len(cols) and len(todo):
                v[i, todo] = np.interp(todo, cols, v[i, cols], period=PAGE)
                k[i, todo] = 1.0
    wrap = lambda a: np.concatenate([a[:, -pad:], a, a[:, :pad]], 1)  # noqa: E731
    vw, kw, onw = wrap(v), wrap(k), wrap(on).astype(np.float64)
    if (kw > 0.5).any():
        vw = np.where(kw > 0.5, vw, push_pull(vw, kw))
    if smooth > 0:
        vw = ndi.gaussian_filter(vw * onw, smooth) / np.maximum(ndi.gaussian_filter(onw, smooth), 1e-6)
    out = vw[:, pad:-pad].reshape(-1)[outer.slots.texel.numpy()]
    return torch.as_tensor(out, dtype=torch.float32)


def _fit_radius(model: HeadModel, outer: OuterLayer, sources: list[Source], cfg: OuterConfig, stop=None
                ) -> torch.Tensor:
    """Per-slot fitted excess radius [N] (m) over the template: pooled, mirrored, filled, smoothed."""
    N = len(outer)
    num, den = torch.zeros(N), torch.zeros(N)
    for src in sources:
        r, w = silhouette_radius(model, outer, src, cfg, stop)
        num += w * r
        den += w
    known = den > 0.05
    radius = torch.where(known, num / den.clamp_min(1e-9), outer.radius)
    use_mirror = ~known & known[outer.mirror]
    radius[use_mirror] = radius[outer.mirror[use_mirror]]
    known = known | use_mirror
    excess = _fill_page(outer, radius - outer.radius, known, cfg.smooth, along_rows=True) - cfg.inset
    return torch.maximum(excess, lowest_radius(outer, cfg) - outer.radius)


def lowest_radius(outer: OuterLayer, cfg: OuterConfig) -> torch.Tensor:
    """[N] the smallest radius a slot may take: the hair shell never goes inside the head mesh;
    the bust may shrink to ``cfg.bust_min`` of its template (narrow shoulders, a thin neck)."""
    return outer.radius * torch.where(outer.chart == 1, cfg.bust_min, 1.0)


def inside_bust(outer: OuterLayer, radius: torch.Tensor):
    """A function of rest-frame points [..., 3] -> bool [...]: inside the bust whose slots lie at
    ``radius`` [N] (its rows are horizontal rings, one per height, PAGE slots each)."""
    bust = outer.chart == 1
    ring_r = radius[bust].reshape(-1, PAGE)                          # [rows, PAGE], texel order
    ys = outer.origin[bust, 1].reshape(-1, PAGE)[:, 0]              # ring heights, top first
    axis = outer.origin[bust][0]

    def inside(p: torch.Tensor) -> torch.Tensor:
        dx, dz = p[..., 0] - axis[0], p[..., 2] - axis[2]
        row = ((ys[0] - p[..., 1]) / (ys[0] - ys[-1]) * (len(ys) - 1)).round().long()
        col = ((torch.atan2(dx, dz) / (2 * np.pi) + 0.5) * PAGE - 0.5).round().long() % PAGE
        ok = (row >= 0) & (row < len(ys))
        r = ring_r[row.clamp(0, len(ys) - 1), col]
        return ok & ((dx * dx + dz * dz).sqrt() < r)
    return inside


def fit_outer(model: HeadModel, sources: list[Source], shape: torch.Tensor, cfg: OuterConfig = OuterConfig(),
              head: ProjectiveConfig = ProjectiveConfig()) -> UVGaussians:
    """The outer page's UV Gaussians of the subject of ``sources`` (on the host). ``shape`` is the
    subject's identity; the fit measures from the template's radii (the outer layer has no
    identity basis), so it is only checked."""
    if shape.shape[-1] != model.n_shape:
        raise ValueError(f"{model.name} takes shape[{model.n_shape}], got shape[{shape.shape[-1]}]")
    outer = model.outer()
    N = len(outer)
    # 1-2. the surface: silhouette radius per source, pooled, mirrored, filled, smoothed
    # the bust first; then the hair, whose rays end where they enter the bust (the silhouette
    # of hair falling to the shoulders goes on into the body's)
    excess = _fit_radius(model, outer, sources, cfg)
    hair = outer.chart == 0
    excess[hair] = _fit_radius(model, outer, sources, cfg, inside_bust(outer, outer.radius + excess))[hair]
    radius = outer.radius + excess
    points = outer.points(radius)

    # 3. colour and opacity from the sources where the fitted points are visible
    head_slots = model.uv_slots(head.resolution)
    col, mat, wsum, carve = torch.zeros(N, 3), torch.zeros(N), torch.zeros(N), torch.ones(N)
    for src in sources:
        posed = outer.transform_points(model, src.params, points)
        _, d = _posed_rays(model, outer, src.params)
        hp, _ = slot_points(model, head_slots, src.params)
        h, w = src.rgb.shape[:2]
        f = float(src.K[0, 0])
        uv, z = project(torch.cat([hp, posed])[None], torch.tensor([f]), torch.tensor([[h, w]], dtype=torch.float32))
        uv, z = uv[0], z[0]
        cos = (d * F.normalize(-posed, dim=-1)).sum(-1)
        slack = torch.cat([torch.zeros(len(hp)), 2.0 * head.zbuffer_px * z[len(hp):] / f * 2.0])
        vis = _visible(uv, z, (h, w), head, slack)[len(hp):] & (cos > cfg.min_cos)
        wk = vis.float() * cos.abs().clamp_min(0.05) ** head.view_power
        uvo = uv[len(hp):]
        matte = _sample(src.matte, uvo)[:, 0] / 255.0
        col += wk[:, None] * _sample(src.rgb, uvo) / 255.0
        mat += wk * matte
        wsum += wk
        # the visual hull: a point that projects outside any source's person matte is empty
        # (beyond the frame the person may go on)
        in_frame = (uvo[:, 0] >= 0) & (uvo[:, 0] < w) & (uvo[:, 1] >= 0) & (uvo[:, 1] < h)
        carve = torch.minimum(carve, torch.where(in_frame, matte, torch.ones_like(matte)))
    seen = wsum > 0.05
    color = torch.where(seen[:, None], col / wsum.clamp_min(1e-9)[:, None], torch.zeros(1, 3))
    hidden_body = (excess > cfg.clear) | (outer.chart == 1)
    # beside the face, on the head (no volume beyond it) the head page paints the person: a shell
    # slot there would only double it, and turned, stand off the cheeks as a strip of the face's
    # colours (over the crown and the back, the doubled layer covers the skull's faded edge)
    d = outer.direction
    beside_face = (outer.chart == 0) & (d[:, 2] > -0.17) & (d[:, 1] < 0.57)   # azimuth within ±100°, below 35°
    stands_off = torch.where(beside_face, ((excess - cfg.on_head) / (cfg.clear - cfg.on_head)).clamp(0, 1), 1.0)
    opacity = torch.where(seen, mat / wsum.clamp_min(1e-9), hidden_body.float()) * carve * stands_off
    # colours known: seen on the person (a seen slot off the matte holds the background's colour)
    seen = seen & (mat / wsum.clamp_min(1e-9) > 0.5)
    use_mirror = ~seen & seen[outer.mirror]
    color[use_mirror] = color[outer.mirror[use_mirror]]
    filled = seen | use_mirror
    color = torch.stack([_fill_page(outer, color[:, c], filled, 0.0) for c in range(3)], 1)
    return outer_gaussians(outer, points, color.clamp(0, 1), opacity.clamp(0, 1), cfg.thickness, cfg.width)


def texel_spacing(outer: OuterLayer, points: torch.Tensor, limit: float = 0.012) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot distance [N] to the neighbouring texels' points along the page's rows (across,
    wrapping round) and columns (down): the mean over the neighbours on the same chart,
    each capped at ``limit`` (a neighbour across a silhouette jump is not adjacent)."""
    grid = torch.full((PAGE * PAGE, 3), float("nan"))
    grid[outer.slots.texel] = points
    grid = grid.reshape(PAGE, PAGE, 3)
    dx = (torch.roll(grid, -1, 1) - grid).norm(dim=-1)
    dy = (grid[1:] - grid[:-1]).norm(dim=-1)
    nan = float("nan")
    across = torch.nanmean(torch.stack([dx, torch.roll(dx, 1, 1)]).clamp(max=limit), 0)
    down = torch.nanmean(torch.stack([F.pad(dy, (0, 0, 0, 1), value=nan), F.pad(dy, (0, 0, 1, 0), value=nan)])
                         .clamp(max=limit), 0)
    t = outer.slots.texel
    fallback = 0.005
    return (torch.nan_to_num(across.reshape(-1)[t], nan=fallback).clamp(0.0005, limit),
            torch.nan_to_num(down.reshape(-1)[t], nan=fallback).clamp(0.0005, limit))


def outer_gaussians(outer: OuterLayer, points: torch.Tensor, color: torch.Tensor, opacity: torch.Tensor,
                    thickness: float = 0.5, width: float = 0.7) -> UVGaussians:
    """UV Gaussians of the outer page at rest-frame ``points`` [N, 3], each as wide as the
    spacing of its chart's texels there (`texel_spacing`) times ``width``, flat along its chart."""
    fr = triangle_frames(outer.verts, outer.faces)
    f = outer.slots.face
    R, c, s = fr.rotation[f], fr.centroid[f], fr.scale[f]
    local = torch.einsum("nji,nj->ni", R, points - c) / s[:, None]
    across, down = (width * d for d in texel_spacing(outer, points))
    log_scale = torch.log(torch.stack([across, thickness * torch.minimum(across, down), down], 1) / s[:, None])
    n = len(outer)
    rot = torch.zeros(n, 4)
    rot[:, 0] = 1
    alpha = opacity.clamp(1e-4, 1 - 1e-4)
    logit = torch.log(alpha / (1 - alpha))[:, None]
    m = outer.slots.scatter
    return UVGaussians(m(local), m(rot), m(log_scale), m(color), m(logit), outer.slots.valid)


@dataclass(frozen=True)
class PolishConfig:
    """The photometric steps after the construction (`polish`)."""

    steps: int = 20
    """Steps of the differentiable renderer, cycling through the sources."""
    side: int = 192
    """Longer side (px) of the sources as the steps see them."""
    lr: float = 0.05
    """Adam's learning rate on the colours (linear RGB) and the outer layer's opacity logits."""
    head: bool = True
    """Also the head page's colours."""
    opacity: bool = True
    """Also the outer layer's opacity."""


def polish(animated, sources: list[Source], cfg: PolishConfig = PolishConfig(),
           frozen: list[torch.Tensor] | None = None):
    """``animated`` (a projective `engine.animate.AnimatedAvatar` with an outer layer) after
    ``cfg.steps`` steps of the differentiable renderer at the sources' cameras: L1 against each
    source inside its portrait matte (black off the person; the torso below the matte's cut is
    left out) on the colours of both pages and the
    outer layer's opacity. The construction samples one colour per texel and the Gaussians'
    overlap blurs them; these steps undo that where the sources saw the avatar (what they
    gain at the source camera: docs/evaluation.md). ``frozen``: per source, the head slots [N]
    whose colours its steps leave alone (`engine.generator.projective.untrusted`): fitted to
    that photo they would take what lies there, the tongue on an open mouth's lower lip, the
    iris on a lid."""
    import cv2

    from engine.animate import AnimatedAvatar, concat
    from engine.binding import place
    from engine.metrics.matte import portrait_matte
    from engine.render.select import select
    from engine.camera import tracker_camera
    from engine.types import Gaussians

    model = animated.model
    outer = model.outer()
    uvg = animated.avatar.outer
    renderer = select(model.device, need_grad=True)
    attrs = {k: outer.slots.gather(v.to(model.device)).detach().clone() for k, v in uvg.maps().items()}
    views = []
    for src in sources:
        cam = tracker_camera(src.K, tuple(src.rgb.shape[:2]), cfg.side)
        hh, ww, K = cam.height, cam.width, cam.K
        cam = cam.to(model.device)
        img = cv2.resize(src.rgb, (ww, hh), interpolation=cv2.INTER_AREA)
        person = cv2.resize(src.matte, (ww, hh), interpolation=cv2.INTER_AREA)
        m = torch.from_numpy(portrait_matte(model, src.params, person, float(K[0, 0]), (hh, ww)))[..., None]
        target = (torch.from_numpy(img).float() / 255 * m).to(model.device)
        # the person below the portrait cut (the torso) is neither fitted nor pushed away
        below = (torch.from_numpy(person)[..., None] > 127) & (m < 0.5)
        weight = (~below).float().to(model.device)
        params = src.params.to(model.device)
        with torch.no_grad():
            head = AnimatedAvatar(replace(animated.avatar, outer=None), model).gaussians(params)
            frames = outer.slot_frames(model, params)
        views.append((cam, target, weight, head, frames))
    head_color = views[0][3].colors.detach().clone().requires_grad_(True)     # per head slot, the same in every view
    keep = [None] * len(views) if frozen is None else \
        [(~f).to(head_color.device, torch.float32)[:, None] for f in frozen]
    free = [attrs["color"].requires_grad_(True)] + ([attrs["opacity"].requires_grad_(True)] if cfg.opacity else []) \
        + ([head_color] if cfg.head else [])
    # The loss is summed over pixels (per channel) and Adam's eps is 1: a slot's step then scales
    # with how many pixels it reaches, so slots a source barely sees (grazing, hidden) stay as
    # the construction left them instead of taking Adam's full step on a vanishing gradient.
    opt = torch.optim.Adam(free, lr=cfg.lr, eps=1.0)
    for it in range(cfg.steps):
        cam, target, weight, head, frames = views[it % len(views)]
        g = concat(Gaussians(head.means, head.quats, head.scales, head.opacities, head_color), place(frames, **attrs))
        loss = ((renderer.render(g, cam).rgb - target).abs() * weight).sum() / 3
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if keep[it % len(views)] is not None and head_color.grad is not None:
            head_color.grad *= keep[it % len(views)]   # this view moves them only by Adam momentum of other views
        opt.step()
    with torch.no_grad():
        outer_maps = {k: _into(v, outer.slots.texel, attrs[k]) for k, v in uvg.maps().items()}
        hg = animated.avatar.gaussians
        color = _into(hg.color, animated.slots.texel, head_color.clamp(0, 1))
    avatar = replace(animated.avatar, gaussians=replace(hg, color=color), outer=UVGaussians(**outer_maps, valid=uvg.valid))
    out = AnimatedAvatar(avatar, model)
    out.confidence = getattr(animated, "confidence", None)
    return out


def _into(uv_map: torch.Tensor, texel: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A host copy of ``uv_map`` [C, R, R] with per-slot ``values`` [N, C] at ``texel``."""
    flat = uv_map.detach().cpu().clone().reshape(uv_map.shape[0], -1)
    flat[:, texel.cpu()] = values.detach().T.cpu().to(flat.dtype)
    return flat.reshape(uv_map.shape)
