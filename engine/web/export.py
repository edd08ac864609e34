"""One self-contained web page that plays an avatar: `export_web`.

The page carries everything it draws with, base64 in the HTML, and fetches nothing:

- the head page's Gaussians as the UV slots hold them: each slot's triangle, local position
  (float16, in units of the triangle's scale), rotation (float16 quaternion), log-scale
  relative to the triangle (float16), colour and opacity (8 bits each);
- the outer layer's Gaussians (hair shell and bust) placed at the rest pose (positions float32)
  with the joint each is rigid with;
- the head model as posing needs it, with the avatar's identity baked in: the shaped rest
  vertices, the expression blendshapes (sparse: only the vertices each one moves, float16),
  the joints' rest positions and how expressions move them, skinning weights, kinematic tree,
  pose correctives when the model has any (FLAME does; they are float16), and the faces;
- the named expressions (joint motions such as jawOpen with their angle at weight 1), the
  panel's groups and pose ranges, the bundled expression presets, the renderer's constants
  (`RenderOptions`) and the splat shaders of ``shaders/`` turned into GLSL ES 3.00;
- optionally an expression track (per-frame parameters, e.g. `drive --save-track` or `track`).

The player (``player.js``) poses exactly as `engine.headmodel.base.HeadModel` (smplx's linear
blend skinning) and `engine.binding` do, sorts by depth each frame and draws the splats with
the shaders the gl backend uses. What the page cannot show: a refined avatar's expression
residual and a network avatar's view-dependent heads (the page draws their static Gaussians).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.binding import place_activated
from engine.camera import DEFAULT_DISTANCE, DEFAULT_FOV_Y, HEAD_TARGET
from engine.expressions import EXPRESSION_GROUPS, JOINT_EXPRESSIONS, POSE_SLIDERS, expression_names
from engine.render.base import RenderOptions
from engine.types import JOINT_NAMES, HeadParams

HERE = Path(__file__).parent
SHADERS = Path(__file__).resolve().parents[2] / "shaders"
EXPR_EPS = 1e-7         # a blendshape offset below this (metres) is not stored


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _es300(source: str) -> str:
    """A shader of ``shaders/`` as GLSL ES 3.00: the same maths, WebGL2's header, and only the
    colour output (the page does not read depth back)."""
    lines = []
    for line in source.splitlines():
        if line.startswith("#version"):
            lines += ["#version 300 es", "precision highp float;", "precision highp int;"]
        elif "out_depth" in line:
            continue
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def web_payload(animated: AnimatedAvatar, track: HeadParams | None = None, fps: float = 25.0,
                presets: dict[str, dict[str, float]] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """(the page's JSON header, its binary arrays by name) for ``animated`` (see the module docstring)."""
    model = animated.model.host()
    avatar = animated.avatar
    with torch.no_grad():
        shape = avatar.shape.detach().cpu().float()
        S = model.n_shape
        dirs = model.dirs.cpu().float()
        v_shaped = model.v_template.cpu() + torch.einsum("vcs,s->vc", dirs[..., :S], shape)
        exprdirs = dirs[..., S:]                                          # [V, 3, E]
        j_rest = model.joints_rest(shape.to(model.device)).cpu()         # [J, 3]
        j_dirs = model.joint_dirs[..., S:].cpu()                          # [J, 3, E]
        arrays: dict[str, np.ndarray] = {
            "v_shaped": v_shaped.numpy().astype(np.float32),
            "j_rest": j_rest.numpy().astype(np.float32),
            "j_dirs": j_dirs.permute(2, 0, 1).numpy().astype(np.float32),            # [E, J, 3]
            "weights": model.weights.cpu().numpy().astype(np.float32),
            "faces": model.faces.cpu().numpy().astype(np.uint32 if len(v_shaped) >= 65536 else np.uint16),
        }
        # Sparse blendshapes: for each expression, the vertices it moves and by how much.
        counts, index, delta = [], [], []
        for e in range(exprdirs.shape[2]):
            d = exprdirs[:, :, e]
            moved = (d.abs() > EXPR_EPS).any(1).nonzero().squeeze(1)
            counts.append(len(moved))
            index.append(moved.numpy())
            delta.append(d[moved].numpy())
        arrays["expr_count"] = np.asarray(counts, np.uint32)
        arrays["expr_index"] = np.concatenate(index).astype(np.uint16 if len(v_shaped) < 65536 else np.uint32)
        arrays["expr_delta"] = np.concatenate(delta).astype(np.float16)
        posedirs = model.posedirs.cpu()                                   # [P, V*3]
        if posedirs.abs().max() > 0:
            arrays["posedirs"] = posedirs.numpy().astype(np.float16)

        # The head page, as the slots hold it (activated: unit quaternion, scale relative to the triangle).
        a = animated.activated(animated.neutral().condition()[0])     # a residual as at the neutral face
        index = np.uint16 if len(model.faces) < 65536 else np.uint32
        arrays["slot_face"] = animated.slots.face.cpu().numpy().astype(index)
        arrays["slot_pos"] = a.local_position.cpu().numpy().astype(np.float16)
        arrays["slot_quat"] = a.unit_quat.cpu().numpy().astype(np.float16)
        arrays["slot_log_scale"] = torch.log(a.rel_scale.cpu()).numpy().astype(np.float16)
        arrays["slot_rgba"] = _rgba8(a.color.cpu(), a.opacity.cpu())

        # The outer layer at the rest pose (joints at rest); the page moves it rigidly with its joints.
        if animated.outer_layer is not None:
            outer, oa = animated.outer_layer
            rest = place_activated(outer.rest, oa)
            arrays["outer_mean"] = rest.means.cpu().numpy().astype(np.float32)
            arrays["outer_quat"] = rest.quats.cpu().numpy().astype(np.float16)
            arrays["outer_log_scale"] = torch.log(rest.scales.cpu()).numpy().astype(np.float16)
            arrays["outer_rgba"] = _rgba8(rest.colors.cpu(), rest.opacities.cpu())
            arrays["outer_joint"] = outer.slot_joint.cpu().numpy().astype(np.uint8)

        if track is not None:
            t = track.cpu()
            arrays["track"] = torch.cat([t.expr, t.rotation, t.neck, t.jaw, t.eyes], 1).numpy().astype(np.float32)

    names = list(model.expr_names)
    options = RenderOptions()
    header = {
        "schema": 1,
        "head_model": model.name,
        "n_expr": len(names),
        "expr_names": names,
        "pickable": expression_names(model),
        "joint_expressions": {k: list(v) for k, v in JOINT_EXPRESSIONS.items()},
        "groups": [[label, list(prefixes)] for label, prefixes in EXPRESSION_GROUPS],
        "pose_sliders": [list(s) for s in POSE_SLIDERS],
        "joints": list(JOINT_NAMES),
        "parents": model.parents.cpu().tolist(),
        "presets": presets or {},
        "camera": {"target": list(HEAD_TARGET), "distance": DEFAULT_DISTANCE, "fov_y": DEFAULT_FOV_Y},
        "render": {"near": options.near, "far": options.far, "eps2d": options.eps2d,
                   "alpha_min": options.alpha_min, "alpha_max": options.alpha_max},
        "track": None if track is None else {"frames": int(track.batch_size), "fps": float(fps)},
        "generator": str(avatar.metadata.get("generator", "")) if isinstance(avatar.metadata, dict) else "",
        "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
    }
    return header, arrays


def _rgba8(color: torch.Tensor, opacity: torch.Tensor) -> np.ndarray:
    c = torch.cat([color.clamp(0, 1), opacity.clamp(0, 1)[:, None]], 1)
    return (c.numpy() * 255 + 0.5).astype(np.uint8)


def bundled_presets() -> dict[str, dict[str, float]]:
    """The bundled expression presets by name (``presets/expressions``)."""
    from engine.io.presets import bundled_names, load_expression_preset

    return {name: load_expression_preset(name) for name in bundled_names("expressions")}


def export_web(animated: AnimatedAvatar, path: Path, track: HeadParams | None = None, fps: float = 25.0,
               title: str = "SpatialAvatar-0") -> int:
    """Write the page to ``path`` (atomically); returns its size in bytes."""
    from engine.atomic import atomic_path

    header, arrays = web_payload(animated, track, fps, bundled_presets())
    header["shaders"] = {"vert": _es300((SHADERS / "splat.vert").read_text()),
                         "frag": _es300((SHADERS / "splat.frag").read_text())}
    blobs = "\n".join(f'<script type="application/octet-stream" id="blob-{k}">{_b64(v)}</script>'
                      for k, v in arrays.items())
    page = ((HERE / "player.html").read_text()
            .replace("{{TITLE}}", title)
            .replace("{{HEADER}}", json.dumps(header).replace("</", "<\\/"))
            .replace("{{BLOBS}}", blobs)
            .replace("{{PLAYER}}", (HERE / "player.js").read_text()))
    data = page.encode("utf-8")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return len(data)
