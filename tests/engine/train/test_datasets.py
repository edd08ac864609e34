"""engine.train.datasets on tiny fake trees: CelebV-HQ tracking skips bad videos, NeRSemble views
land where their cameras saw them, and the samplers draw the pairs the paper describes (§2.4)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.headmodel.base import HeadModel
from engine.io.media import VideoReader, write_video
from engine.io.params import save_params
from engine.rotations import axis_angle_to_rotmat
from engine.track.fit import project
from engine.train.clips import Clip
from engine.train.datasets import (Pair, Phase1Sampler, Phase2Sampler, celebvhq_clips, celebvhq_videos,
                                   dissimilarity, head_in_camera, nersemble_clip)
from engine.types import HeadParams


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


# --- CelebV-HQ -------------------------------------------------------------------------------

@pytest.fixture
def fake_tracker(monkeypatch):
    """track_video without mediapipe: reads the video (so a damaged one raises MediaError) and
    returns neutral parameters; records the videos it was given."""
    from engine.track import tracker

    calls: list[str] = []

    def track_video(path, model, progress=None, **kw):
        calls.append(Path(path).stem)
        with VideoReader(path) as video:
            frames = list(video)
        n, (h, w) = len(frames), frames[0].shape[:2]
        K = np.tile(np.array([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]]), (n, 1, 1))
        return tracker.Tracked(Path(path).stem, [str(path)], HeadParams.neutral(3, 4, n), K,
                               np.tile([h, w], (n, 1)), np.ones(n, bool), np.zeros(n), np.zeros((n, 3, 2)),
                               np.tile([[4.0, 4.0], [20.0, 12.0], [10.0, 20.0]], (n, 1, 1)),
                               [np.full((h, w), 255, np.uint8)] * n)

    monkeypatch.setattr(tracker, "track_video", track_video)
    return calls


def celebvhq_tree(root: Path, with_info: bool) -> Path:
    """root/35666/{a,b,extra}.mp4 (3 frames of 32x48) and a damaged bad.mp4; the info lists
    b, bad, a missing clip and a, in that order."""
    videos = root / "35666"
    videos.mkdir(parents=True)
    for k, name in enumerate(("a", "b", "extra")):
        write_video(videos / f"{name}.mp4", [np.full((32, 48, 3), 40 * k + 20 * i, np.uint8) for i in range(3)], 10)
    (videos / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but not a video at all")
    if with_info:
        info = {"meta_info": {}, "clips": {k: {"ytb_id": k} for k in ("b", "bad", "missing", "a")}}
        (root / "celebvhq_info.json").write_text(json.dumps(info))
    return root


def test_celebvhq_follows_the_info_order_and_skips_a_damaged_video(tmp_path, fake_tracker):
    root = celebvhq_tree(tmp_path / "celebvhq", with_info=True)
    done: list[tuple[int, int]] = []
    with pytest.warns(UserWarning, match=r"skipped: .*bad\.mp4"):
        paths = celebvhq_clips(root, None, tmp_path / "clips", progress=lambda i, n: done.append((i, n)))
    assert [p.name for p in paths] == ["b.clip.npz", "a.clip.npz"]
    assert fake_tracker == ["b", "bad", "a"]
    assert done == [(1, 3), (2, 3), (3, 3)]
    clip = Clip.load(paths[0])
    assert clip.name == "b" and len(clip) == 3 and clip.images.shape == (3, 32, 48, 3)

    with pytest.warns(UserWarning, match="bad.mp4"):     # cached clips are not tracked again
        again = celebvhq_clips(root, None, tmp_path / "clips")
    assert again == paths and fake_tracker == ["b", "bad", "a", "bad"]


def test_celebvhq_without_info_takes_every_video_in_name_order(tmp_path, fake_tracker):
    root = celebvhq_tree(tmp_path / "celebvhq", with_info=False)
    assert [p.stem for p in celebvhq_videos(root)] == ["a", "b", "bad", "extra"]
    assert [p.stem for p in celebvhq_videos(root / "35666")] == ["a", "b", "bad", "extra"]
    assert [p.name for p in celebvhq_clips(root, None, tmp_path / "clips", limit=2)] == ["a.clip.npz", "b.clip.npz"]
    assert fake_tracker == ["a", "b"]


# --- head_in_camera --------------------------------------------------------------------------

def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenGL camera-to-world [4, 4]: the camera at ``eye`` looks down its -z at ``target``."""
    eye = np.asarray(eye, float)
    f = np.asarray(target, float) - eye
    f /= np.linalg.norm(f)
    right = np.cross(f, up)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(right, f), -f], 1)
    c2w[:3, 3] = eye
    return c2w


def opengl_project(x_world: np.ndarray, c2w: np.ndarray, fx, fy, cx, cy) -> np.ndarray:
    """Pixels [..., 2] (origin at the image corner) of world points seen by an OpenGL camera:
    x_c = R^T (x - T), u = cx + fx x_c / -z_c, v = cy - fy y_c / -z_c (y up, image rows down)."""
    xc = (x_world - c2w[:3, 3]) @ c2w[:3, :3]
    return np.stack([cx + fx * xc[..., 0] / -xc[..., 2], cy - fy * xc[..., 1] / -xc[..., 2]], -1)


def world_head(model: HeadModel, b: int, seed: int = 0) -> HeadParams:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, k=1.0: k * torch.randn(*s, generator=g)  # noqa: E731
    return HeadParams(r(b, model.n_shape, k=0.5), r(b, model.n_expr, k=0.5), r(b, 3, k=0.4), r(b, 3, k=0.2),
                      torch.rand(b, 3, generator=g) * torch.tensor([0.3, 0.0, 0.0]), r(b, 6, k=0.1),
                      r(b, 3, k=0.03))


def test_head_in_camera_is_the_exact_rigid_move(model):
    params = world_head(model, 4)
    cams = np.stack([look_at((0, 0, 1.0)), look_at((0.7, 0.2, 0.6)), look_at((-0.5, -0.3, 0.8), (0.02, 0.01, 0)),
                     look_at((0.9, 0.4, -0.3))])
    moved = head_in_camera(params, cams, model)
    x_world = model.vertices(params).double().numpy()
    x_cam = model.vertices(moved).double().numpy()
    want = np.einsum("bvj,bji->bvi", x_world - cams[:, None, :3, 3], cams[:, :3, :3])
    np.testing.assert_allclose(x_cam, want, atol=2e-6)

    fx = 500.0
    size = torch.tensor([[480.0, 640.0]]).expand(4, 2)
    ours, _ = project(torch.from_numpy(x_cam).float(), torch.full((4,), fx), size)
    theirs = np.stack([opengl_project(x_world[i], cams[i], fx, fx, 320.0, 240.0) for i in range(4)])
    np.testing.assert_allclose(ours.numpy(), theirs, atol=2e-3)    # pixels
    for f in ("shape", "expr", "neck", "jaw", "eyes"):
        assert torch.equal(getattr(moved, f), getattr(params, f))


def test_head_in_camera_keeps_the_head_under_the_identity_and_refuses_a_scaled_camera(model):
    params = world_head(model, 2, seed=1)
    same = head_in_camera(params, np.eye(4), model)
    torch.testing.assert_close(same.rotation, params.rotation, atol=1e-6, rtol=0)
    torch.testing.assert_close(same.translation, params.translation, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="rigid"):
        head_in_camera(params, np.diag([2.0, 2.0, 2.0, 1.0]), model)


# --- NeRSemble -------------------------------------------------------------------------------

W, H = 160, 120
CAMERAS = [  # eye, fx, fy, cx, cy: off-centre principal points, one camera with fx != fy
    ((0.0, 0.05, 1.0), 200.0, 200.0, 85.3, 56.2),
    ((0.6, 0.0, 0.8), 210.0, 210.0, 74.6, 63.9),
    ((-0.7, -0.1, 0.7), 190.0, 196.0, 81.0, 58.5),
]
SIGMA = 2.0


def blob(u: float, v: float) -> np.ndarray:
    """A grey Gaussian dot centred at (u, v) in corner coordinates, uint8 [H, W, 3]."""
    x, y = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    g = 255 * np.exp(-((x - u) ** 2 + (y - v) ** 2) / (2 * SIGMA ** 2))
    return np.repeat(np.round(g).astype(np.uint8)[..., None], 3, 2)


def centroid(img: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (u, v) of a grey image, corner coordinates."""
    g = img[..., 0].astype(np.float64)
    y, x = np.mgrid[: g.shape[0], : g.shape[1]] + 0.5
    return np.array([(g * x).sum(), (g * y).sum()]) / g.sum()


def nersemble_tree(seq: Path, model: HeadModel, n_expr: int | None = None) -> tuple[Path, HeadParams, int]:
    """seq_dir with 2 timesteps x 3 cameras: each image a dot where its camera sees vertex
    ``nose`` of the world head; masks (left half) for camera 1 only; camera 0's intrinsics
    only at the top level, one file path without its extension."""
    params = world_head(model, 2, seed=2)
    if n_expr is not None:
        params = HeadParams(params.shape, torch.zeros(2, n_expr), params.rotation, params.neck, params.jaw,
                            params.eyes, params.translation)
    nose = int(model.v_template[:, 2].argmax())
    for d in ("images", "fg_masks", "flame_param"):
        (seq / d).mkdir(parents=True, exist_ok=True)
    frames = []
    for t in range(2):
        save_params(params.frame(t), seq / f"flame_param/{t:05d}.npz", static_offset=np.zeros((1, 5, 3)))
        x = model.vertices(params.frame(t))[0, nose].double().numpy() if n_expr is None else np.zeros(3)
        for c, (eye, fx, fy, cx, cy) in enumerate(CAMERAS):
            c2w = look_at(eye)
            u, v = opengl_project(x, c2w, fx, fy, cx, cy)
            name = f"{t:05d}_{c:02d}"
            cv2.imwrite(str(seq / f"images/{name}.png"), blob(u, v))
            frame = {"timestep_index": t, "camera_index": c, "file_path": f"images/{name}" + (".png" if c else ""),
                     "flame_param_path": f"flame_param/{t:05d}.npz", "transform_matrix": c2w.tolist()}
            if c:
                frame.update(fl_x=fx, fl_y=fy, cx=cx, cy=cy, w=W, h=H)
            if c == 1:
                mask = np.zeros((H, W), np.uint8)
                mask[:, : W // 2] = 255
                cv2.imwrite(str(seq / f"fg_masks/{name}.png"), mask)
                frame["fg_mask_path"] = f"fg_masks/{name}.png"
            frames.append(frame)
    eye, fx, fy, cx, cy = CAMERAS[0]
    meta = {"frames": frames[::-1], "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": W, "h": H}
    (seq / "transforms_train.json").write_text(json.dumps(meta))
    return seq, params, nose


@pytest.mark.parametrize("longer_side", [80, 120])   # area-averaged first; resampled directly
def test_nersemble_views_land_where_their_cameras_saw_them(model, tmp_path, longer_side):
    seq, params, nose = nersemble_tree(tmp_path / "074_EMO-1", model)
    clip = nersemble_clip(seq, model, longer_side=longer_side)
    s = longer_side / W
    w, h = longer_side, round(H * s)
    assert clip.name == "074_EMO-1" and len(clip) == 6
    assert clip.images.shape == (6, h, w, 3) and clip.mattes.shape == (6, h, w)
    np.testing.assert_array_equal(clip.time, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(clip.camera, [0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(clip.K[:, :2, 2], np.tile([w / 2, h / 2], (6, 1)))
    np.testing.assert_allclose(clip.K[:, 0, 0], clip.K[:, 1, 1])
    np.testing.assert_allclose(clip.K[:, 0, 0], [s * c[1] for c in CAMERAS] * 2, rtol=1e-6)
    assert clip.usable.all()

    x = model.vertices(clip.params)[:, nose : nose + 1]                      # [6, 1, 3] camera frames
    uv, _ = project(x, torch.from_numpy(clip.K[:, 0, 0]), torch.tensor([[float(h), float(w)]]).expand(6, 2))
    seen = np.stack([centroid(im) for im in clip.images])
    np.testing.assert_allclose(seen, uv[:, 0].numpy(), atol=0.04)           # output pixels
    assert (clip.boxes[:, :2] < uv[:, 0].numpy()).all() and (uv[:, 0].numpy() < clip.boxes[:, 2:]).all()

    assert clip.mattes[0, 5:-5, 5:-5].min() == 255                        # no mask: all person
    assert clip.mattes[1, h // 2, w // 8] == 255 and clip.mattes[1, h // 2, 7 * w // 8] == 0   # camera 1's: left half


def test_nersemble_keeps_the_first_timesteps_and_refuses_foreign_parameters(model, tmp_path):
    seq, _, _ = nersemble_tree(tmp_path / "seq", model)
    clip = nersemble_clip(seq, model, longer_side=40, max_timesteps=1)
    assert len(clip) == 3 and clip.images.shape[1:3] == (30, 40) and (clip.time == 0).all()

    flame, _, _ = nersemble_tree(tmp_path / "flame", model, n_expr=100)
    with pytest.raises(ValueError, match=r"expr\[100\].*FLAME"):
        nersemble_clip(flame, model)


# --- samplers --------------------------------------------------------------------------------

def fake_clip(yaw_deg, expr_scale, time=None, camera=None, usable=None) -> Clip:
    """A clip whose frame i turns the head by yaw_deg[i] and scales one expression by expr_scale[i]."""
    n = len(yaw_deg)
    p = HeadParams.neutral(2, 3, n)
    rot = torch.zeros(n, 3)
    rot[:, 1] = torch.deg2rad(torch.tensor(yaw_deg, dtype=torch.float32))
    expr = torch.zeros(n, 3)
    expr[:, 0] = torch.tensor(expr_scale, dtype=torch.float32)
    p = HeadParams(p.shape, expr, rot, p.neck, p.jaw, p.eyes, p.translation)
    return Clip("fake", np.zeros((n, 2, 2, 3), np.uint8), np.zeros((n, 2, 2), np.uint8), p,
                np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)), np.zeros((n, 4), np.float32),
                np.arange(n) if time is None else np.asarray(time), np.zeros(n, int) if camera is None else
                np.asarray(camera), np.ones(n, bool) if usable is None else np.asarray(usable))


def test_phase1_pairs_hold_out_the_target_and_draw_one_to_four_sources():
    clips = [fake_clip(np.linspace(-40, 40, 9), np.linspace(0, 2, 9), usable=[True] * 8 + [False]),
             fake_clip([0.0, 10.0], [0.0, 1.0]), fake_clip([5.0], [0.5])]
    sampler = Phase1Sampler(clips, k_max=4)
    rng = np.random.default_rng(0)
    pairs = [sampler.sample(rng) for _ in range(3000)]
    ks = {0: set(), 1: set(), 2: set()}
    for p in pairs:
        assert isinstance(p, Pair)
        ks[p.clip].add(len(p.sources))
        assert clips[p.clip].usable[p.sources + [p.target]].all()
        if p.clip == 2:
            assert p.sources == [p.target] == [0]                 # one portrait: source = target
        else:
            assert p.target not in p.sources and len(set(p.sources)) == len(p.sources)
    assert ks == {0: {1, 2, 3, 4}, 1: {1}, 2: {1}}
    counts = np.bincount([p.clip for p in pairs], minlength=3) / len(pairs)
    np.testing.assert_allclose(counts, [8 / 11, 2 / 11, 1 / 11], atol=0.03)   # by usable frames

    again = Phase1Sampler(clips).sample(np.random.default_rng(7))
    assert again == Phase1Sampler(clips).sample(np.random.default_rng(7))


def test_the_first_source_prefers_frames_unlike_the_target():
    clip = fake_clip(np.linspace(-60, 60, 13), np.tile([0.0, 1.5, 3.0], 5)[:13])
    facing = axis_angle_to_rotmat(clip.params.rotation.double())[:, :, 2].numpy()
    code = torch.cat([clip.params.expr, clip.params.jaw], 1).double().numpy()

    def mean_d_of_first(temperature) -> float:
        sampler, rng, ds = Phase1Sampler([clip], temperature=temperature), np.random.default_rng(1), []
        for _ in range(3000):
            p = sampler.sample(rng)
            others = np.delete(np.arange(13), p.target)
            ds.append(dissimilarity(facing, code, p.target, others)[list(others).index(p.sources[0])])
        return float(np.mean(ds))

    assert mean_d_of_first(None) == pytest.approx(1.0, abs=0.04)   # uniform: the mean of d is 1
    assert mean_d_of_first(0.5) > 1.3
    assert mean_d_of_first(0.25) > mean_d_of_first(0.5)


def test_dissimilarity_measures_turn_and_expression_in_their_own_spread():
    clip = fake_clip([0.0, 30.0, 0.0, 30.0], [0.0, 0.0, 2.0, 2.0])
    facing = axis_angle_to_rotmat(clip.params.rotation.double())[:, :, 2].numpy()
    code = torch.cat([clip.params.expr, clip.params.jaw], 1).double().numpy()
    d = dissimilarity(facing, code, 0, np.array([1, 2, 3]))
    np.testing.assert_allclose(d, [0.75, 0.75, 1.5])


def test_phase2_mixes_a_quarter_cross_time_pairs_and_same_time_pairs_use_other_cameras():
    times, cams = np.repeat(np.arange(5), 4), np.tile(np.arange(4), 5)
    mv = fake_clip(np.tile([-30.0, -10.0, 10.0, 30.0], 5), np.repeat(np.linspace(0, 2, 5), 4), times, cams)
    mono = fake_clip(np.zeros(4), np.arange(4.0))
    sampler = Phase2Sampler([mv, mono], cross_time=0.25)
    rng = np.random.default_rng(3)
    cross = same = 0
    for _ in range(6000):
        p = sampler.sample(rng)
        c = [mv, mono][p.clip]
        assert 1 <= len(p.sources) <= 4 and p.target not in p.sources and len(set(p.sources)) == len(p.sources)
        if p.clip == 1:
            continue
        t = c.time[p.sources] == c.time[p.target]
        assert t.all() or not t.any()
        if t.all():
            same += 1
            assert (c.camera[p.sources] != c.camera[p.target]).all() and len(p.sources) <= 3
        else:
            cross += 1
    assert cross / (cross + same) == pytest.approx(0.25, abs=0.02)
    assert same + cross > 4000                                             # 20 of 24 frames are multi-view
