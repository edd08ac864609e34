"""The parameter-free feed-forward stage (DESIGN §9, paper §2.2's warp + mean pool with RGB as
the feature): portraits -> UV-layout Gaussians.

For each source the tracked head model is posed as in the photo; every UV slot's surface point
is projected into the image and takes the colour there if it is visible (a z-buffer of the
slots' own points) and faces the camera. The K sources are mean-pooled, weighted by visibility
x cos(view angle)^p x expression confidence; K = 1 is the identity. The view weight has a
floor, so a texel a source sees only at a grazing angle (the jaw's underside and the sides of
the head, from the front) still counts as seen and takes that source's colour where no other
source saw it. Texels no source sees are filled: small holes from their UV neighbours, larger
areas from their left/right mirror where that was seen, the rest by inpainting in UV; teeth and
mouth cavity that were not seen keep the plain avatar's palette, since inpainting them from
skin would paint skin-coloured teeth; a source whose lips do not part beyond the rest mouth
paints neither (seen through the rest mouth's gap they would take the lips' colours), so with
one open-mouth source among several, the teeth are that source's. Where the fit puts lids, lips
or skin over what the photo shows as an eye's or the mouth's opening (FaceMesh's detected
loops, when the source carries them), those texels take nothing from the source and are filled
from their neighbours, so a fit that reads a mouth or an eye less open than it is does not
paint the teeth or the iris onto the lips or the lids; nor do skin texels inside the detected
outer lip outline, which would paint the lips onto the chin. Lips no source showed at rest take
the colour of the lips it did show. The eyeballs are painted as eyes in their own frame, in the
colours of the sources' irises and sclerae (`engine.generator.eyes`).

Expression confidence: a texel whose surface point moves far between the neutral face and
the source's tracked expression (the inside of an open mouth, closed lids) is down-weighted,
so with several sources the most neutral one paints it.

Through the neck's cut: a head mesh's neck ends in a slanted cut, its back lower than its front,
so a camera in front sees the inside of the back wall below the front rim, where the photo shows
the chest. Those texels (`neck_inside`) take what the photo shows there: seen from the inside,
they face away from the camera but are not hidden, and their weight uses the cosine's magnitude.

At the silhouette: opacity is the person matte at each texel's projection (pooled like the
colour), so where OpenHead's skull or neck is wider than the person, those Gaussians fade
instead of painting the background onto the head; unseen texels stay opaque. Hair and
shoulders beyond the head mesh are the outer layer's (`engine.generator.outer`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import connected_components

from engine.binding import UVSlots
from engine.generator.eyes import eye_colors, paint_eyes
from engine.generator.lids import lidded_surface
from engine.generator.plain import inner_parts, lip_slots, mouth_interior, plain_colors
from engine.headmodel.base import HeadModel
from engine.headmodel.rig import vertex_normals
from engine.camera import FLIP, project
from engine.types import HeadParams, UVGaussians


@dataclass(frozen=True)
class ProjectiveConfig:
    """Weights of the warp and mean pool."""

    resolution: int = 256
    """UV raster size."""
    view_power: float = 2.0
    """Source weight grows as cos(view angle) to this power: grazing views count little."""
    min_cos: float = 0.0
    """Texels whose cosine to a source's camera is at or below this face away from it and are
    not taken from it."""
    grazing_weight: float = 0.1
    """A visible texel's least weight, however grazingly the source sees it: above
    ``min_confidence``, so a texel that one source shows only at a grazing angle (the underside
    of the jaw, seen from the front) takes what the photo shows there instead of a fill from
    its UV neighbours, which drew a pale band along every jaw."""
    zbuffer_px: int = 2
    """Z-buffer cell size in source pixels (the slots' points are splatted into it)."""
    depth_tolerance: float = 0.003
    """Metres behind the nearest surface at which a point still counts as visible."""
    expr_scale: float = 0.006
    """Metres of expression displacement at which a texel's weight falls to 1/e."""
    min_confidence: float = 0.05
    """Pooled weight below which a texel counts as unseen and is filled."""
    opening_margin_px: int = 1
    """Pixels by which the detected eye and mouth openings (and the outer lip outline) are shrunk
    before the texels that project into them are refused (the margins' own pixels stay theirs)."""
    mouth_open: float = 0.004
    """Metres the lips must part beyond the head model's rest mouth before a source paints the
    teeth and mouth cavity: through a closed mouth's rest gap they would only take lip colours."""


@dataclass
class Source:
    """One tracked portrait."""

    rgb: np.ndarray        # [H, W, 3] uint8
    matte: np.ndarray      # [H, W] uint8 (255 = person)
    params: HeadParams     # batch of one
    K: np.ndarray          # [3, 3]
    landmarks: np.ndarray | None = None   # [478, 2] FaceMesh's detected points, pixels; None: not known


def slot_points(model: HeadModel, slots: UVSlots, params: HeadParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed surface points [N, 3] and normals [N, 3] of every slot."""
    verts = model.vertices(params)[0]
    faces = model.faces
    tri = verts[faces[slots.face]]
    pts = torch.einsum("nk,nkc->nc", slots.bary, tri)
    vn = torch.as_tensor(vertex_normals(verts.numpy(), faces.numpy()), dtype=torch.float32)
    nrm = F.normalize(torch.einsum("nk,nkc->nc", slots.bary, vn[faces[slots.face]]), dim=-1)
    return pts, nrm


def _visible(uv: torch.Tensor, z: torch.Tensor, size: tuple, cfg: ProjectiveConfig, slack: torch.Tensor) -> torch.Tensor:
    """Points not hidden by nearer points: a min-depth buffer of the points themselves, eroded
    by one cell so the gaps between splatted points do not let hidden points through.
    ``slack`` [N] (metres) is added to the tolerance: on a slanted surface the erosion's
    neighbours are nearer than the point itself by up to its slope times the cell size."""
    h, w = size
    c = cfg.zbuffer_px
    gh, gw = (h + c - 1) // c, (w + c - 1) // c
    ij = (uv / c).floor().long()
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < gw) & (ij[:, 1] >= 0) & (ij[:, 1] < gh) & (z > 0)
    flat = ij[:, 1].clamp(0, gh - 1) * gw + ij[:, 0].clamp(0, gw - 1)
    zbuf = torch.full((gh * gw,), float("inf"))
    zbuf.scatter_reduce_(0, flat[inside], z[inside], reduce="amin")
    zbuf = -F.max_pool2d(-zbuf.reshape(1, 1, gh, gw), 3, stride=1, padding=1).reshape(-1)
    return inside & (z <= zbuf[flat] + cfg.depth_tolerance + slack)


def _sample(img: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [N, C] of an image [H, W, C] (or [H, W]) at pixel positions uv [N, 2]."""
    t = torch.as_tensor(img, dtype=torch.float32)
    t = t[..., None] if t.dim() == 2 else t
    h, w = t.shape[:2]
    # uv is continuous: pixel i spans [i, i + 1) (the renderers' convention), hence no half-pixel shift
    grid = torch.stack([uv[:, 0] / w * 2 - 1, uv[:, 1] / h * 2 - 1], -1)
    s = F.grid_sample(t.permute(2, 0, 1)[None], grid[None, None], mode="bilinear", align_corners=False)
    return s[0, :, 0].T


_SLACK_COS = 0.1
"""The cosine below which the z-buffer's slope slack stops growing (it grows as the tangent)."""


def project_slots(model: HeadModel, slots: UVSlots, src: Source, cfg: ProjectiveConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel position [N, 2] of every slot's surface point in the source image, source
    weight [N]: visible x view weight (`ProjectiveConfig.grazing_weight` + the rest x
    cos(view angle)^p) x expression confidence, 0 where not seen, for the teeth and cavity of
    a closed mouth, and for lid, lip and skin texels that fall inside the detected eye and
    mouth openings when the source has its landmarks)."""
    pts, nrm, uv, z = _projected(model, slots, src)
    h, w = src.rgb.shape[:2]
    f = float(src.K[0, 0])
    to_cam = F.normalize(-(pts * FLIP), dim=-1)                              # towards the camera, camera axes
    cos = (nrm * FLIP * to_cam).sum(-1)
    cos = torch.where(_tables(model, slots).neck_inside, cos.abs(), cos)     # seen from the inside
    tan = (1 - cos.clamp(_SLACK_COS, 1) ** 2).sqrt() / cos.clamp(_SLACK_COS, 1)
    slack = 2.0 * cfg.zbuffer_px * z / f * tan                              # two cells along the slope
    vis = _visible(uv, z, (h, w), cfg, slack) & (cos > cfg.min_cos)
    view = cfg.grazing_weight + (1 - cfg.grazing_weight) * cos.clamp_min(0) ** cfg.view_power
    weight = vis.float() * view * expression_confidence(model, slots, src.params, cfg)
    if mouth_gap(model, src.params) < cfg.mouth_open:
        weight = weight * ~torch.as_tensor(mouth_interior(model, slots))
    if src.landmarks is not None:
        weight = weight * ~_over_openings(model, slots, src, uv, cfg)
    return uv, weight


def _projected(model: HeadModel, slots: UVSlots, src: Source) -> tuple[torch.Tensor, ...]:
    """(points [N, 3], normals [N, 3], pixel positions [N, 2], depths [N]) of the slots posed as in ``src``."""
    pts, nrm = slot_points(model, slots, src.params)
    h, w = src.rgb.shape[:2]
    uv, z = project(pts[None], torch.tensor([float(src.K[0, 0])]), torch.tensor([[h, w]], dtype=torch.float32))
    return pts, nrm, uv[0], z[0]


def _over_openings(model: HeadModel, slots: UVSlots, src: Source, uv: torch.Tensor, cfg: ProjectiveConfig
                   ) -> torch.Tensor:
    """[N] bool: what the fit puts over a feature the source's detected landmarks say is
    something else: lid, lip and skin slots (not the eyeballs, teeth or cavity) inside the eye
    and mouth openings, where the photo shows an eye or the mouth's inside; and skin slots
    inside the outer lip outline, where it shows lips (an open jaw read short puts the chin over
    the lower lip)."""
    size = src.rgb.shape[:2]
    tables = _tables(model, slots)
    out = _inside_loops(src.landmarks, uv, size, ("eye_L", "eye_R", "lips_inner"), cfg.opening_margin_px)
    if bool(tables.lips.any()):         # a head model whose lips are known (OpenHead's charts)
        out |= _inside_loops(src.landmarks, uv, size, ("lips_outer",), cfg.opening_margin_px) & ~tables.lips
    return out & ~tables.inner


def untrusted(model: HeadModel, slots: UVSlots, src: Source, cfg: ProjectiveConfig = ProjectiveConfig()
              ) -> torch.Tensor:
    """[N] bool: slots whose colour the source's photo is not to set at the source's own pose
    (the photometric polish leaves them as the construction made them):
    - those the fit puts over a feature the detected landmarks say is something else
      (`_over_openings`; only when the source carries its landmarks);
    - where the source's mouth is open beyond the rest mouth, every slot its expression moved
      (expression confidence below ``min_confidence``: the pool did not count them seen either).
      An open jaw is read short (docs/evaluation.md, "Eyes and mouth"), so at the source's pose
      the fitted lower lip and chin lie over the tongue, the mouth's corners and the lower lip."""
    out = torch.zeros(len(slots), dtype=torch.bool)
    if src.landmarks is not None:
        out |= _over_openings(model, slots, src, _projected(model, slots, src)[2], cfg)
    if mouth_gap(model, src.params) >= cfg.mouth_open:
        out |= expression_confidence(model, slots, src.params, cfg) < cfg.min_confidence
    return out


def _inside_loops(landmarks: np.ndarray, uv: torch.Tensor, size: tuple, names: tuple, margin: int) -> torch.Tensor:
    """[N] bool: the pixel at ``uv`` lies inside one of FaceMesh's detected loops ``names``
    (``landmarks`` [478, 2]; `engine.headmodel.facemesh.topology`), shrunk by ``margin`` pixels
    (the outline's own pixels may go either way)."""
    import cv2

    from engine.headmodel import facemesh as fm

    h, w = size
    mask = np.zeros((h, w), np.uint8)
    loops = fm.topology()
    for name in names:
        pts = np.asarray(landmarks)[loops[name]]
        if np.isfinite(pts).all():
            cv2.fillPoly(mask, [np.round(pts * 4).astype(np.int32)], 1, shift=2)
    k = 2 * margin + 1
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    ij = uv.floor().long()
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    out = torch.zeros(len(uv), dtype=torch.bool)
    out[inside] = torch.from_numpy(mask[ij[inside, 1].numpy(), ij[inside, 0].numpy()] > 0)
    return out


def _without_pose(params: HeadParams) -> tuple[HeadParams, HeadParams]:
    """(``params`` with head pose and translation removed, the same identity at rest), batch of one."""
    z3 = torch.zeros(1, 3)
    return (HeadParams(params.shape, params.expr, z3, z3, params.jaw, params.eyes, z3),
            HeadParams(params.shape, torch.zeros_like(params.expr), z3, z3, z3, torch.zeros(1, 6), z3))


def mouth_gap(model: HeadModel, params: HeadParams) -> float:
    """Metres the mid inner lips (FaceMesh 13 and 14) part beyond the rest mouth, head pose
    removed; 0 for a head model without those landmarks."""
    ids = [int(i) for i in model.lmk_ids]
    if 13 not in ids or 14 not in ids:
        return 0.0
    posed, rest = _without_pose(params)
    a, b = ids.index(13), ids.index(14)
    with torch.no_grad():
        gap = [float((l[0, a] - l[0, b]).norm()) for l in (model.landmarks(model.vertices(p)) for p in (posed, rest))]
    return gap[0] - gap[1]


def warp_source(model: HeadModel, slots: UVSlots, src: Source, cfg: ProjectiveConfig
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(colour [N, 3] in [0, 1], matte [N], weight [N]) of one source for every slot."""
    return sample_warp(src, *project_slots(model, slots, src, cfg))


def sample_warp(src: Source, uv: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(colour [N, 3] in [0, 1], matte [N], ``weight``) of a source at its slots' pixel positions ``uv``."""
    return _sample(src.rgb, uv) / 255.0, _sample(src.matte, uv)[:, 0] / 255.0, weight


def expression_confidence(model: HeadModel, slots: UVSlots, params: HeadParams, cfg: ProjectiveConfig) -> torch.Tensor:
    """[N] in (0, 1]: how little each slot's surface moves between the neutral face and this
    expression (jaw, eyes and blendshapes; head pose and shape removed)."""
    pose_free, neutral = _without_pose(params)
    a, _ = slot_points(model, slots, pose_free)
    b, _ = slot_points(model, slots, neutral)
    return torch.exp(-((a - b).norm(dim=-1) / cfg.expr_scale) ** 2)


def mirror_slots(model: HeadModel, slots: UVSlots) -> torch.Tensor:
    """[N] index of the slot nearest to each slot's left/right mirror image on the rest mesh."""
    from scipy.spatial import cKDTree

    tri = model.v_template[model.faces[slots.face]]
    pts = torch.einsum("nk,nkc->nc", slots.bary, tri).numpy()
    _, idx = cKDTree(pts).query(pts * np.array([-1.0, 1.0, 1.0]))
    return torch.as_tensor(idx)


MIN_SEEN_LIPS = 30
"""Seen lip slots (of OpenHead's 300 at 256²) below which the unseen lips are filled like any other
unseen surface rather than from them."""


def pool(model: HeadModel, slots: UVSlots, sources: list[Source], cfg: ProjectiveConfig = ProjectiveConfig(),
         warps: list[tuple] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean-pooled (colour [N, 3], opacity [N], confidence [N]) over the sources, unseen texels
    filled. ``warps``: the sources' `warp_source` results when the caller has them already."""
    num_c, num_m, den = torch.zeros(len(slots), 3), torch.zeros(len(slots)), torch.zeros(len(slots))
    for c, m, w in warps if warps is not None else (warp_source(model, slots, src, cfg) for src in sources):
        num_c += w[:, None] * c
        num_m += w * m
        den += w
    seen = den > cfg.min_confidence
    color = torch.where(seen[:, None], num_c / den.clamp_min(1e-9)[:, None], torch.zeros(1, 3))
    opacity = torch.where(seen, num_m / den.clamp_min(1e-9), torch.ones(1))
    confidence = den / max(len(warps) if warps is not None else len(sources), 1)
    tables = _tables(model, slots)
    inner, mirror, palette = tables.inner, tables.mirror, tables.palette
    lip_color = color[tables.lips & seen].median(0).values if int((tables.lips & seen).sum()) >= MIN_SEEN_LIPS else None
    # 1. small holes in what was seen (a nostril, a lid fold) from their UV neighbours
    # (inpainted from the seen texels alone: the unseen ones around are still black)
    pinholes = ~seen & ~inner & _near_seen(slots, seen)
    color = torch.where(pinholes[:, None], _inpaint(slots, color, seen), color)
    filled = seen | pinholes
    # 2. larger unseen areas from their left/right mirror image, where that was seen
    use_mirror = ~filled & seen[mirror]
    color[use_mirror] = color[mirror[use_mirror]]
    filled = filled | use_mirror
    # 3. inner parts nobody saw keep the plain palette; 4. the rest is inpainted in UV
    color[~filled & inner] = palette[~filled & inner]
    color = _inpaint(slots, color, filled | inner)
    # 5. lips no source showed at rest (an open mouth's stretched lower lip, lips the fit put
    # over the mouth's opening) take the colour of the lips that were seen: filled from the skin
    # around them they came out skin-coloured
    fill = tables.lips & ~seen
    if lip_color is not None and bool(fill.any()):
        # the seen lips' colour, with the brightness the inpainting carried in from around them
        lum = color[fill].mean(1, keepdim=True)
        color[fill] = lip_color * lum / lum.mean().clamp_min(1e-3)
    return color.clamp(0, 1), opacity.clamp(0, 1), confidence


@dataclass(frozen=True)
class _Tables:
    """What the pool and the warp need to know of a head model's slots, fixed per model and
    resolution, so computed once (the network's training pools every step)."""

    model: HeadModel
    inner: torch.Tensor           # [N] bool: `inner_parts`
    mirror: torch.Tensor          # [N] `mirror_slots`
    palette: torch.Tensor         # [N, 3] the plain avatar's colours
    neck_inside: torch.Tensor     # [N] bool: `neck_inside`
    lips: torch.Tensor            # [N] bool: `lip_slots`


_TABLES: dict = {}


def _tables(model: HeadModel, slots: UVSlots) -> _Tables:
    key = (model.name, slots.resolution, len(slots))
    hit = _TABLES.get(key)
    if hit is None or hit.model is not model:
        hit = _TABLES[key] = _Tables(model, torch.as_tensor(inner_parts(model, slots)), mirror_slots(model, slots),
                                     plain_colors(model, slots, shaded=False),
                                     torch.as_tensor(neck_inside(model, slots)), torch.as_tensor(lip_slots(model, slots)))
    return hit


def neck_inside(model: HeadModel, slots: UVSlots) -> np.ndarray:
    """[N] bool: the slot lies below the highest point of the neck's cut on the rest mesh (the
    boundary loop through the mesh's lowest vertex). A cut whose back is lower than its front
    leaves these slots, on the back and sides of the neck, open to view from the front through
    the cut; a level cut leaves none."""
    verts, faces = model.v_template.cpu().numpy(), model.faces.cpu().numpy()
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    pairs, count = np.unique(edges, axis=0, return_counts=True)
    border = pairs[count == 1]                               # edges of one face: the mesh's boundaries
    graph = sp.coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(len(verts),) * 2)
    _, loop = connected_components(graph, directed=False)
    cut = (loop == loop[int(np.argmin(verts[:, 1]))]) & np.isin(np.arange(len(verts)), border)
    if not cut.any():                                        # the lowest point is on no open boundary
        return np.zeros(len(slots.face), bool)
    rim = verts[cut, 1].max()
    tri = verts[faces[slots.face.cpu().numpy()]]
    y = np.einsum("nk,nk->n", slots.bary.cpu().numpy(), tri[..., 1])
    return y < rim


def _near_seen(slots: UVSlots, seen: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """[N] bool: the slot is at most ``radius`` texels from a seen one, all round (a hole, not
    an unseen region): the closing of the seen mask in UV."""
    R = slots.resolution
    m = torch.zeros(R * R)
    m[slots.texel] = seen.float()
    m = m.reshape(1, 1, R, R)
    k = 2 * radius + 1
    closed = -F.max_pool2d(-F.max_pool2d(m, k, 1, radius), k, 1, radius)
    return closed.reshape(-1)[slots.texel] > 0.5


def _inpaint(slots: UVSlots, color: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Unknown slots' colours from their UV neighbourhood (OpenCV Telea inpainting)."""
    import cv2

    if bool(known.all()):
        return color
    R = slots.resolution
    img = slots.scatter(color).permute(1, 2, 0).numpy()
    mask = np.ones((R, R), np.uint8)
    mask.reshape(-1)[slots.texel.numpy()[known.numpy()]] = 0
    u8 = (img.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    filled = cv2.inpaint(u8, mask, 5, cv2.INPAINT_TELEA).astype(np.float32) / 255
    out = color.clone()
    out[~known] = torch.as_tensor(filled.reshape(-1, 3)[slots.texel.numpy()][~known.numpy()])
    return out


def projective_gaussians(model: HeadModel, sources: list[Source], shape: torch.Tensor,
                         cfg: ProjectiveConfig = ProjectiveConfig()) -> tuple[UVGaussians, torch.Tensor]:
    """(UV Gaussians of the subject, confidence map [R, R]) from tracked sources sharing ``shape``.
    Gaussians lie on the subject's neutral surface, flat, as wide as their texel's footprint."""
    slots = model.uv_slots(cfg.resolution)
    color, opacity, conf = pool(model, slots, sources, cfg)
    color = paint_eyes(model, slots, [eye_colors(model, s) for s in sources], color)
    rest = model.vertices(HeadParams(shape[None], torch.zeros(1, model.n_expr), *(torch.zeros(1, 3),) * 3,
                                     torch.zeros(1, 6), torch.zeros(1, 3)))[0]
    uvg = lidded_surface(model, slots, rest, color, opacity=0.99 * opacity)
    return uvg, slots.scatter(conf[:, None])[0]
