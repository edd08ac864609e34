"""Build OpenHead, our default head model, deterministically from code and one fitted file.

Inputs: ``engine/headmodel/data/face_neutral.npy`` (FaceMesh's 468 points, fitted by
`engine.headmodel.fit_face` on portraits and videos) and the procedural rules of
`shell`, `parts` and `rig`. Output: a `HeadModelData` in FLAME layout, cached by
`engine.headmodel.openhead.load_openhead`; `export_smplx` (``python main.py headmodel --smplx DIR``)
writes it as ``FLAME_NEUTRAL.npz`` + ``flame_static_embedding.pkl`` so that ``smplx.FLAME`` loads it.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from engine.headmodel import facemesh as fm
from engine.headmodel import parts, rig
from engine.headmodel.base import HeadModelData
from engine.headmodel.shell import ShellSpec, build_shell

OPENHEAD_VERSION = 1
COUNTS = {1: (60, 120)}
"""(identity, expression) component counts of each OpenHead version. A change to either needs a
new version, so the model gets a new name and an avatar, tracking or checkpoint made for the old
one fails with the friendly head-model error instead of a tensor size mismatch."""
FACE_FILE = Path(__file__).parent / "data" / "face_neutral.npy"
IRIS_RIM_DEG = 27.0  # angular radius of the iris on the eyeball (5.7 mm on a 12.5 mm eye)


def landmark_embedding(verts: np.ndarray, faces: np.ndarray, eye_poles: dict[str, int],
                       eye_centres: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lmk_faces [478], lmk_bary [478, 3]): FaceMesh point i < 468 is vertex i; the iris
    points are the eyeball's pole and four points on the iris rim, in FaceMesh's order: towards
    the image's right (the subject's left, +x), up, left, down for a frontal face."""
    first_face = np.full(len(verts), -1)
    corner = np.zeros(len(verts), int)
    for k in range(3):
        unset = first_face[faces[:, k]] < 0
        first_face[faces[unset, k]] = np.nonzero(unset)[0]
        corner[faces[unset, k]] = k
    lf, lb = [], []
    for i in range(fm.N_FACE):
        lf.append(first_face[i])
        lb.append(np.eye(3)[corner[i]])
    a = np.deg2rad(IRIS_RIM_DEG)
    for side in ("R", "L"):
        c = eye_centres[side]
        r = np.linalg.norm(verts[eye_poles[side]] - c)
        pts = [verts[eye_poles[side]]] + [c + r * np.array([np.sin(a) * dx, np.sin(a) * dy, np.cos(a)])
                                          for dx, dy in ((1, 0), (0, 1), (-1, 0), (0, -1))]
        for p in pts:
            f, bary = _closest_on_faces(verts, faces, p)
            lf.append(f)
            lb.append(bary)
    return np.array(lf, np.int64), np.array(lb, np.float32)


def _closest_on_faces(verts: np.ndarray, faces: np.ndarray, p: np.ndarray) -> tuple[int, np.ndarray]:
    """The face whose centroid is nearest ``p`` and ``p``'s clamped barycentrics in it."""
    tri = verts[faces]
    f = int(np.argmin(np.linalg.norm(tri.mean(1) - p, axis=1)))
    a, b, c = tri[f]
    T = np.stack([b - a, c - a], 1)
    uvw = np.linalg.lstsq(T, p - a, rcond=None)[0]
    bary = np.clip(np.array([1 - uvw.sum(), uvw[0], uvw[1]]), 0, None)
    return f, bary / bary.sum()


def build_openhead(face_file: Path = FACE_FILE, spec: ShellSpec = ShellSpec()) -> HeadModelData:
    face_neutral = np.load(face_file)
    shell = build_shell(face_neutral, spec)
    b = parts.PartBuilder()
    same = np.full(len(shell.uv), -1)
    for dup, twin in shell.same_as.items():
        same[dup] = twin
    b.add(shell.uv, shell.pos, "shell", same)
    b.add_faces(shell.faces)
    face = shell.pos[: fm.N_FACE]
    centres, equators, poles = {}, {}, {}
    for side, disc in (("R", parts.EYE_R_DISC), ("L", parts.EYE_L_DISC)):
        centres[side] = parts.eyeball_centre(face, fm.topology()[f"eye_{side}"])
        start = b.n
        equators[side] = parts.add_eyeball(b, centres[side], disc, f"eye_{side}")
        poles[side] = start
    parts.add_mouth_cavity(b, face)
    parts.add_teeth(b, face, upper=True)
    parts.add_teeth(b, face, upper=False)
    verts, faces, uvs, uv_faces, vert_of_uv = b.weld()

    groups = {k: np.unique(vert_of_uv[v]) for k, v in b.groups.items()}
    eq = {s: vert_of_uv[equators[s]] for s in equators}
    pole = {s: int(vert_of_uv[poles[s]]) for s in poles}
    surface = np.unique(np.concatenate([groups["shell"], groups["cavity"]]))
    upper_in, lower_in, *_ = fm.split_loop(fm.topology()["lips_inner"], verts[: fm.N_FACE])
    cavity_only = np.setdiff1d(groups["cavity"], groups["shell"])
    cav_upper = cavity_only[verts[cavity_only, 1] > verts[upper_in + lower_in, 1].mean() + 1e-4]
    cav_lower = cavity_only[verts[cavity_only, 1] < verts[upper_in + lower_in, 1].mean() - 1e-4]

    J_regressor = rig.joint_regressor(verts, groups["shell"], eq)
    surface_faces = faces[np.isin(faces, surface).all(1)]
    jaw = rig.jaw_field(verts, surface_faces, surface, cav_lower, cav_upper)
    jaw[groups["teeth_lower"]] = 1.0
    weights = rig.skinning_weights(verts, jaw, groups)
    graph = rig.edge_graph(verts, surface_faces)
    names, exprdirs = rig.expression_basis(verts, faces, graph, jaw, centres)
    local_names, local_dirs = rig.local_modes(verts, faces, graph, surface)
    names, exprdirs = names + local_names, np.concatenate([exprdirs, local_dirs], axis=2)
    followers = [(groups["eye_L"], np.array(fm.topology()["eye_L"])), (groups["eye_R"], np.array(fm.topology()["eye_R"])),
                 (groups["teeth_upper"], np.array(upper_in)), (groups["teeth_lower"], np.array(lower_in))]
    shapedirs = rig.identity_basis(verts, faces, surface, followers)
    lmk_faces, lmk_bary = landmark_embedding(verts, faces, pole, centres)
    if (shapedirs.shape[2], exprdirs.shape[2]) != COUNTS[OPENHEAD_VERSION]:
        raise AssertionError(f"OpenHead now has {shapedirs.shape[2]} identity and {exprdirs.shape[2]} expression "
                             f"components, version {OPENHEAD_VERSION} has {COUNTS[OPENHEAD_VERSION]}: raise "
                             "OPENHEAD_VERSION and add its counts to COUNTS")
    return HeadModelData(
        name=f"openhead-{OPENHEAD_VERSION}", charts="openhead",
        v_template=verts.astype(np.float32), faces=faces.astype(np.int64),
        shapedirs=shapedirs.astype(np.float32), exprdirs=exprdirs.astype(np.float32),
        posedirs=np.zeros((len(verts), 3, 36), np.float32), J_regressor=J_regressor.astype(np.float32),
        weights=weights.astype(np.float32), parents=np.array([-1, 0, 1, 1, 1], np.int64),
        uvs=uvs.astype(np.float32), uv_faces=uv_faces.astype(np.int64),
        lmk_faces=lmk_faces, lmk_bary=lmk_bary, expr_names=tuple(names))


def export_smplx(data: HeadModelData, folder: Path) -> None:
    """Write ``folder/FLAME_NEUTRAL.npz`` and ``flame_static_embedding.pkl`` for ``smplx.FLAME``
    (``ext="npz"``; the arrays are plain numpy, nothing needs chumpy)."""
    folder.mkdir(parents=True, exist_ok=True)
    kintree = np.stack([data.parents, np.arange(len(data.parents))]).astype(np.int64)
    kintree[0, 0] = 2**32 - 1  # FLAME's files store the root's parent as uint32 -1
    np.savez(folder / "FLAME_NEUTRAL.npz", v_template=data.v_template, f=data.faces,
             shapedirs=np.concatenate([data.shapedirs, data.exprdirs], axis=2), posedirs=data.posedirs,
             J_regressor=data.J_regressor, weights=data.weights, kintree_table=kintree)
    with open(folder / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": data.lmk_faces.astype(np.int64), "lmk_b_coords": data.lmk_bary}, f)


def smplx_flame(data: HeadModelData, folder: Path, batch_size: int = 1):
    """An ``smplx.FLAME`` module loading the export in ``folder`` (a subclass only sets the basis sizes)."""
    import smplx

    class OpenHeadFLAME(smplx.FLAME):
        SHAPE_SPACE_DIM = data.n_shape
        EXPRESSION_SPACE_DIM = data.n_expr

    return OpenHeadFLAME(str(folder), ext="npz", num_betas=data.n_shape, num_expression_coeffs=data.n_expr,
                         batch_size=batch_size)


def smplx_max_error(data: HeadModelData, folder: Path, batch: int = 8, seed: int = 0) -> float:
    """Largest vertex distance (metres) between smplx.FLAME on the export in ``folder`` and our
    `HeadModel`, over ``batch`` random parameter sets (shape, expression and every joint)."""
    import torch

    from engine.headmodel.base import HeadModel
    from engine.types import HeadParams

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g) - 0.5  # noqa: E731
    p = HeadParams(r(batch, data.n_shape), r(batch, data.n_expr), r(batch, 3) * 0.6, r(batch, 3) * 0.5,
                   r(batch, 3) * 0.4, r(batch, 6) * 0.5, r(batch, 3) * 0.1)
    out = smplx_flame(data, folder, batch)(betas=p.shape, expression=p.expr, global_orient=p.rotation,
                                           neck_pose=p.neck, jaw_pose=p.jaw, leye_pose=p.eyes[:, :3],
                                           reye_pose=p.eyes[:, 3:], transl=p.translation)
    return float((out.vertices - HeadModel(data).vertices(p)).abs().max())
