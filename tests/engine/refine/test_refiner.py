"""The refiner and the photometric alignment on a synthetic video: renders of a known avatar
under known parameters."""
from __future__ import annotations

import dataclasses
import math
import re
import threading

import cv2
import numpy as np
import pytest
import torch

from engine.binding import surface_init
from engine.expressions import apply_expressions
from engine.generator.plain import plain_colors
from engine.headmodel.base import HeadModel
from engine.eval.refined import evaluate
from engine.metrics.matte import head_matte
from engine.jobs import Cancelled
from engine.refine.align import AlignConfig, align_frames, photometric_error, shape_distance, track_photometric
from engine.refine.config import MAX_STAGES, RefineConfig, load_refine_config, stages
from engine.refine.data import VideoData, split, tracker_camera
from engine.refine.refiner import anchor_pull, aspect_penalty, refine, refine_stages, smoothness, total_variation
from engine.render.select import select
from engine.track.fit import intrinsics
from engine.types import Avatar, HeadParams

SIZE = 64


@pytest.fixture(scope="module")
def model(openhead):
    return HeadModel(openhead)


def avatar_with(model, colors) -> Avatar:
    slots = model.uv_slots(256)
    return Avatar(surface_init(slots, model.v_template, model.faces, colors), model.name, torch.zeros(model.n_shape), {})


@pytest.fixture(scope="module")
def video(model) -> VideoData:
    """8 frames of the plain avatar turning and talking, seen by the tracker's camera."""
    from engine.animate import AnimatedAvatar

    truth = AnimatedAvatar(avatar_with(model, plain_colors(model, model.uv_slots(256), shaded=False)), model)
    n = 8
    ps, imgs, mattes, cams = [], [], [], []
    K = intrinsics(np.array([260.0]), np.array([[SIZE, SIZE]]))[0]
    cam = tracker_camera(K, (SIZE, SIZE), SIZE)
    renderer = select("cpu")
    for i in range(n):
        p = apply_expressions(model.neutral(), model, {"jawOpen": 0.5 * (i % 3) / 2, "mouthSmile_L": (i % 2) * 0.8})
        p = dataclasses.replace(p, rotation=torch.tensor([[0.0, 0.3 * float(np.sin(i)), 0.0]]),
                                translation=torch.tensor([[0.0, 0.0, -0.75]]))
        with torch.no_grad():
            f = renderer.render(truth.gaussians(p), cam)
        a = f.alpha.clamp_min(1e-6)[..., None]
        imgs.append(((f.rgb / a).clamp(0, 1).numpy() * 255).astype(np.uint8))
        mattes.append(f.alpha.numpy())
        ps.append(p)
        cams.append(cam)
    params = HeadParams(*(torch.cat([getattr(p, k) for p in ps]) for k in
                          ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
    return VideoData("synthetic", np.stack(imgs), np.stack(mattes).astype(np.float32), params, cams,
                     np.ones(n, bool), first_test=6)


def colour_error(model, avatar: Avatar) -> float:
    slots = model.uv_slots(256)
    truth = plain_colors(model, slots, shaded=False)
    return float((slots.gather(avatar.gaussians.color) - truth).abs().mean())


CFG = RefineConfig(iterations=120, resolution=SIZE, scale_freeze=30, aspect_start=30, checkpoint_every=60,
                   preview_every=0, lr_color=0.02)


def test_refinement_recovers_the_texture_and_keeps_the_layout(model, video):
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    losses = []
    out = refine(start, model, video, CFG, progress=lambda p: losses.append(p.loss))
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert colour_error(model, out) < 0.8 * colour_error(model, start)
    assert torch.equal(out.gaussians.valid, start.gaussians.valid)            # count and layout frozen
    assert float(out.gaussians.log_scale.max()) <= CFG.log_scale_max + 1e-6   # the hard clamp
    assert out.metadata["refined"]["train_frames"] == 6


def test_colours_stay_in_the_rendered_range_and_a_dark_channel_can_brighten_again(model, video):
    """The start's red channel lies below 0, where the render's clamp passes no gradient. Projected
    into [0, 1] after each step, every colour stays in the range the render shows, and the red
    channel learns the skin's red instead of staying black."""
    slots = model.uv_slots(256)
    colors = torch.full((len(slots), 3), 0.5)
    colors[:, 0] = -0.3
    start = avatar_with(model, colors)
    out = refine(start, model, video, dataclasses.replace(CFG, iterations=60))
    red = slots.gather(out.gaussians.color)[:, 0]
    truth = plain_colors(model, slots, shaded=False)[:, 0]
    assert float(red.min()) >= 0 and float(slots.gather(out.gaussians.color).max()) <= 1
    assert float((red - truth).abs().mean()) < 0.6 * float((0 - truth).abs().mean())


def test_the_anchor_holds_what_the_frames_leave_open_and_leaves_what_they_show(model, video):
    """Started from the avatar that rendered the frames, every attribute the frames pin down is at
    its optimum already, so what moves is what they leave open: the Gaussians they barely see,
    whose Adam steps are as long as the others' but point anywhere. Pulled back each step, the
    farthest of those (the 99th percentile of each Gaussian's largest change) drift less than
    0.6 as far (measured: 0.38 for colour, 0.49 for position). A start painted grey still learns
    the frames' colours within 5 % as well as without the pull (measured: 1.7 % worse)."""
    slots = model.uv_slots(256)
    truth = avatar_with(model, plain_colors(model, slots, shaded=False))
    grey = avatar_with(model, torch.full((len(slots), 3), 0.5))
    cfg = dataclasses.replace(CFG, iterations=80, checkpoint_every=0, lambda_color_tv=0.0, lambda_opacity_tv=0.0,
                              lambda_scale_tv=0.0)      # the pull alone
    far, learnt = {}, {}
    for anchor in (0.0, 0.05):
        run = dataclasses.replace(cfg, anchor=anchor)
        out = refine(truth, model, video, run)
        far[anchor] = {k: float((slots.gather(getattr(out.gaussians, k)) - slots.gather(getattr(truth.gaussians, k)))
                                .abs().max(1).values.quantile(0.99)) for k in ("color", "local_position")}
        learnt[anchor] = colour_error(model, refine(grey, model, video, run))
    for k in ("color", "local_position"):
        assert far[0.05][k] < 0.6 * far[0.0][k], (k, far, learnt)
    assert learnt[0.05] < 1.05 * learnt[0.0], (far, learnt)


def test_the_anchor_pull_against_the_formula():
    """anchor · m / (m + r): r each parameter's root-mean-square gradient, m the median of r over
    the parameters that have had one."""
    r = np.array([[0.0, 1.0], [2.0, 3.0], [np.sqrt(8), 4.0]])
    pull = anchor_pull({"exp_avg_sq": torch.tensor(r ** 2, dtype=torch.float32)}, 0.01)
    m = float(np.median(r[r > 0]))
    assert pull.shape == (3, 2) and np.allclose(pull.numpy(), 0.01 * m / (m + r), rtol=1e-6)
    assert anchor_pull({}, 0.01) == 0.01 and anchor_pull({"exp_avg_sq": torch.zeros(3, 2)}, 0.01) == 0.01


def test_smoothness_against_the_formula():
    values = torch.tensor([[0.0, 1.0], [0.5, 0.0], [1.0, 1.0]])
    pairs = torch.tensor([[0, 1], [1, 2]])
    assert total_variation(values, pairs).tolist() == pytest.approx([(0.5 + 0.5) / 2, (1 + 1) / 2])
    page = {"color": values[:, :1].repeat(1, 3), "opacity": torch.tensor([[0.0], [0.0], [math.log(3)]]),
            "log_scale": torch.zeros(3, 3)}
    other = {"color": torch.zeros(2, 3), "opacity": torch.zeros(2, 1), "log_scale": torch.tensor([[0.0] * 3, [2.0] * 3])}
    cfg = dataclasses.replace(RefineConfig(), lambda_color_tv=0.1, lambda_opacity_tv=0.2, lambda_scale_tv=0.3)
    # the head page: colour |0-.5|, |.5-1| -> 0.5, opacity |.5-.5|, |.5-.75| -> 0.125; two pairs
    # the other page: log-scale |0-2| -> 2; one pair; the mean is over all three pairs
    want = 2 / 3 * (0.1 * 0.5 + 0.2 * 0.125) + 1 / 3 * (0.3 * 2)
    got = smoothness([page, other], [pairs, torch.tensor([[0, 1]])], cfg)
    assert float(got) == pytest.approx(want)


def test_smoothness_keeps_the_colours_as_smooth_as_the_frames_show_them(model, video):
    """Started from the avatar that rendered the frames (a smooth colour map), the colours the
    frames leave open wander in Adam's noisy steps and the map grows rough; neighbouring
    Gaussians overlap, so noise of opposite sign in neighbours leaves the rendered frames nearly
    unchanged, and turned further it shows as specks. With the colours' total variation in the
    loss the map grows half as rough (measured over 80 steps: the truth's 0.0024, 0.0144 without,
    0.0071 with), and a grey start learns the frames' colours at least as well (measured: mean
    error 0.088 without, 0.075 with)."""
    slots = model.uv_slots(256)
    pairs = slots.neighbours(model.faces)
    truth = avatar_with(model, plain_colors(model, slots, shaded=False))
    grey = avatar_with(model, torch.full((len(slots), 3), 0.5))
    cfg = dataclasses.replace(CFG, iterations=80, checkpoint_every=0, lambda_opacity_tv=0.0, lambda_scale_tv=0.0)
    rough, learnt = {}, {}
    for tv in (0.0, 0.1):
        run = dataclasses.replace(cfg, lambda_color_tv=tv)
        rough[tv] = float(total_variation(slots.gather(refine(truth, model, video, run).gaussians.color), pairs).mean())
        learnt[tv] = colour_error(model, refine(grey, model, video, run))
    start = float(total_variation(slots.gather(truth.gaussians.color), pairs).mean())
    assert rough[0.0] > 3 * start and rough[0.1] < 0.6 * rough[0.0], (start, rough, learnt)
    assert learnt[0.1] < 1.05 * learnt[0.0], (rough, learnt)


def test_scale_freeze_keeps_scales_exactly(model, video):
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    out = refine(start, model, video, dataclasses.replace(CFG, iterations=40, scale_freeze=40))
    assert torch.equal(out.gaussians.log_scale, start.gaussians.log_scale)


@pytest.fixture
def one_thread():
    """The native backward accumulates in a thread-dependent order, and Adam amplifies the last
    bits of near-zero gradients; with one thread a run is bit-reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_resume_repeats_an_unbroken_run_and_cancel_keeps_the_checkpoint(model, video, tmp_path, one_thread):
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    cfg = dataclasses.replace(CFG, residual_features=8)      # the residual is checkpointed and resumed too
    whole = refine(start, model, video, cfg)
    ckpt = tmp_path / "r.ckpt"
    stop = threading.Event()

    def stop_after_60(p):
        if p.iteration == 61:
            stop.set()

    with pytest.raises(Cancelled):
        refine(start, model, video, cfg, progress=stop_after_60, cancel=stop, checkpoint=ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["iteration"] == 60 and len(saved["anchors"]) == 1       # the head page's start values
    resumed = refine(start, model, video, cfg, checkpoint=ckpt, resume=True)
    for k, v in whole.gaussians.maps().items():
        torch.testing.assert_close(resumed.gaussians.maps()[k], v, atol=1e-6, rtol=0)
    assert whole.residual is not None and resumed.residual.keys() == whole.residual.keys()
    for k, v in whole.residual.items():
        torch.testing.assert_close(resumed.residual[k], v, atol=1e-6, rtol=0)
    stop.clear()
    with pytest.raises(Cancelled):      # without the pull there are no start values to keep
        refine(start, model, video, dataclasses.replace(cfg, anchor=0.0), progress=stop_after_60, cancel=stop,
               checkpoint=tmp_path / "bare.ckpt")
    assert torch.load(tmp_path / "bare.ckpt", weights_only=True)["anchors"] is None


_KILLED_RUN = """
import os, pickle, signal, sys
import torch
sys.path.insert(0, sys.argv[2])
from engine.headmodel.base import HeadModel
from engine.headmodel.openhead import load_openhead
from engine.refine.refiner import refine
torch.set_num_threads(1)
with open(sys.argv[1], "rb") as f:
    start, video, cfg, ckpt = pickle.load(f)

def kill_at_60(p):
    if p.iteration == 60:
        os.kill(os.getpid(), signal.SIGKILL)         # no clean-up of any kind runs

refine(start, HeadModel(load_openhead()), video, cfg, progress=kill_at_60, checkpoint=ckpt)
"""


def test_a_refine_killed_mid_run_resumes_to_the_unbroken_result(model, video, tmp_path, one_thread):
    """kill -9 between two checkpoints (step 60; the last one written at 40), then --resume: the
    same avatar as a run that was never interrupted, and no temporary file left beside the checkpoint."""
    import pickle
    import signal
    import subprocess
    import sys
    from pathlib import Path

    cfg = dataclasses.replace(CFG, iterations=80, checkpoint_every=40)
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    whole = refine(start, model, video, cfg)
    ckpt = tmp_path / "r.ckpt"
    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((start, video, cfg, ckpt)))
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(job), str(root)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert torch.load(ckpt, weights_only=True)["iteration"] == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.pkl", "r.ckpt"]
    resumed = refine(start, model, video, cfg, checkpoint=ckpt, resume=True)
    for k, v in whole.gaussians.maps().items():
        torch.testing.assert_close(resumed.gaussians.maps()[k], v, atol=1e-6, rtol=0)


def test_a_then_chain_refines_its_stages_in_turn_and_resumes_in_the_last_one(model, video, tmp_path, one_thread):
    then = tmp_path / "then.json"
    then.write_text('{"schema": 1, "iterations": 40, "resolution": 64, "scale_freeze": 0, "aspect_start": 0, '
                    '"checkpoint_every": 20, "preview_every": 0, "lr_color": 0.01}')
    cfg = dataclasses.replace(CFG, iterations=60, residual_features=8, then=str(then))
    second = load_refine_config(then)
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    by_hand = refine(refine(start, model, video, cfg), model, video, second)   # the residual carries over
    seen = []
    whole = refine_stages(start, model, video, cfg, progress=lambda p: seen.append((p.iteration, p.total)))
    assert [i for i, _ in seen] == list(range(1, 101)) and {t for _, t in seen} == {100}
    for k, v in by_hand.gaussians.maps().items():
        torch.testing.assert_close(whole.gaussians.maps()[k], v, atol=1e-6, rtol=0)
    meta = whole.metadata["refined"]
    assert meta["iterations"] == 40 and meta["continues"]["iterations"] == 60

    ckpt, stop = tmp_path / "r.ckpt", threading.Event()
    with pytest.raises(Cancelled):
        refine_stages(start, model, video, cfg, progress=lambda p: p.iteration == 81 and stop.set(), cancel=stop,
                      checkpoint=ckpt)
    assert torch.load(tmp_path / "r.stage2.ckpt", weights_only=True)["iteration"] == 20
    resumed = refine_stages(start, model, video, cfg, checkpoint=ckpt, resume=True)
    for k, v in whole.gaussians.maps().items():
        torch.testing.assert_close(resumed.gaussians.maps()[k], v, atol=1e-6, rtol=0)
    for k, v in whole.residual.items():
        torch.testing.assert_close(resumed.residual[k], v, atol=1e-6, rtol=0)


def test_resume_refuses_another_videos_checkpoint_and_a_stale_later_stage(model, video, tmp_path, one_thread):
    """`refine b --resume` after `refine a` (the same default checkpoint) is a one-line refusal,
    never a's avatar continued; a later stage's checkpoint of an earlier run is not picked over
    this run's first stage; a damaged checkpoint is a one-line error."""
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    cfg = dataclasses.replace(CFG, iterations=20, checkpoint_every=10)
    ckpt = tmp_path / "r.ckpt"
    refine_stages(start, model, video, cfg, checkpoint=ckpt)                        # video a, finished
    other = dataclasses.replace(video, name="other")
    with pytest.raises(ValueError, match=r"r.ckpt: a checkpoint of another run \(refine of synthetic, 8 frames"):
        refine_stages(start, model, other, cfg, checkpoint=ckpt, resume=True)
    with pytest.raises(ValueError, match="a checkpoint of another run"):
        refine(start, model, other, cfg, checkpoint=ckpt, resume=True)

    then = tmp_path / "then.json"
    then.write_text('{"schema": 1, "iterations": 10, "resolution": 64, "scale_freeze": 0, "aspect_start": 0, '
                    '"checkpoint_every": 5, "preview_every": 0}')
    chain = dataclasses.replace(cfg, then=str(then))
    refine_stages(start, model, video, chain, checkpoint=ckpt)                      # leaves r.stage2.ckpt
    stop = threading.Event()                                                        # a new run, cut in stage 1
    with pytest.raises(Cancelled):
        refine_stages(start, model, video, chain, progress=lambda p: p.iteration == 11 and stop.set(), cancel=stop,
                      checkpoint=ckpt)
    seen = []
    refine_stages(start, model, video, chain, checkpoint=ckpt, resume=True, progress=lambda p: seen.append(p.iteration))
    assert seen[0] == 11                         # continued in stage 1 at its checkpoint, not in the stale stage 2

    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="r.ckpt: not a readable refine checkpoint"):
        refine_stages(start, model, video, cfg, checkpoint=ckpt, resume=True)


def test_a_nan_step_is_skipped_and_a_diverged_refine_keeps_the_last_checkpoint(model, video, tmp_path, one_thread,
                                                                               monkeypatch):
    """One NaN frame is skipped (the avatar stays finite); a refine whose loss stays NaN stops
    with RefineDiverged and the last good checkpoint is untouched."""
    import engine.refine.refiner as refiner

    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    cfg = dataclasses.replace(CFG, iterations=24, checkpoint_every=4)
    bad = dataclasses.replace(video, mattes=video.mattes.copy())
    bad.mattes[int(video.train[0])] = np.nan                   # one training frame's matte is NaN
    out = refine(start, model, bad, cfg)
    for k, v in out.gaussians.maps().items():
        assert torch.isfinite(v).all(), k

    ckpt = tmp_path / "r.ckpt"
    real_ssim, calls = refiner.ssim, [0]

    def nan_after_5(a, b):
        calls[0] += 1
        return real_ssim(a, b) * (float("nan") if calls[0] > 5 else 1.0)

    monkeypatch.setattr(refiner, "ssim", nan_after_5)
    monkeypatch.setattr(refiner, "MAX_BAD_STEPS", 8)
    with pytest.raises(refiner.RefineDiverged, match=r"not finite for 8 steps in a row \(steps 6-13\)"):
        refine(start, model, video, cfg, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["iteration"] == 4      # the last good one


def test_the_quality_preset_is_the_residual_then_a_polish_and_a_then_loop_is_refused(tmp_path):
    assert stages(load_refine_config("quality")) == [load_refine_config("residual", then="polish"),
                                                      load_refine_config("polish")]
    assert stages(load_refine_config("default")) == [RefineConfig()]
    loop = tmp_path / "loop.json"
    loop.write_text(f'{{"schema": 1, "then": "{loop}"}}')
    with pytest.raises(ValueError, match=f"at most {MAX_STAGES} stages"):
        stages(load_refine_config(loop))


@pytest.mark.parametrize("content, message", [
    ('{"schema": 1, "iterations": "10"}', 'iterations must be int, not "10"'),
    ('{"schema": 1, "lr_color": NaN}', "lr_color must be a finite number, not NaN"),
    ('{"schema": 1, "random_background": 1}', "random_background must be bool, not 1"),
    ('{"schema": 1, "log_scale_max": "big"}', "log_scale_max must be a finite number or null"),
    ('{"schema": 1, "iterations": 10', "not a valid JSON preset"),
    ("[1, 2]", "unknown preset schema"),
])
def test_a_preset_with_wrong_types_is_one_line_naming_the_file_and_key(tmp_path, content, message):
    """Wrong types passed into RefineConfig and failed deep in a run (a traceback minutes later)."""
    path = tmp_path / "mine.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="mine.json: " + re.escape(message)):
        load_refine_config(path)


def test_aspect_penalty_against_the_formula():
    cov = torch.tensor([[[4.0, 0.0], [0.0, 1.0]], [[100.0, 0.0], [0.0, 1.0]], [[2.0, 1.0], [1.0, 2.0]]])
    vis = torch.tensor([True, True, True])
    # half log ratios: 0.5 ln 4 = 0.693, 0.5 ln 100 = 2.303, 0.5 ln 3 = 0.549; tau = 1 -> only the second counts
    expected = (0.5 * np.log(100.0) - 1.0) / 3
    assert float(aspect_penalty(cov, vis, 1.0)) == pytest.approx(expected, rel=1e-5)


def test_split_and_presets():
    assert split(354) == 354 - 88 and split(2000) == 2000 - 350
    fast = load_refine_config("fast")
    assert fast.iterations == 1500 and fast.lambda_l1 == RefineConfig().lambda_l1   # only differences listed
    assert load_refine_config("default") == RefineConfig()
    with pytest.raises(ValueError, match="no refine preset 'slow'"):
        load_refine_config("slow")


def test_resized_video_data_shrinks_frames_cameras_and_recuts_mattes(model, video):
    """Half size: area-averaged frames, intrinsics halved, the head-and-neck mattes recut from the
    shrunk person mattes around the same tracking; no larger: the same object. The refiner and
    the tracker avatar take larger frames and train at their resolution through it."""
    person = (video.mattes * 255).astype(np.uint8)
    full = dataclasses.replace(video, person=person).with_params(video.params, model)
    half = full.resized(SIZE // 2, model)

    assert full.resized(SIZE, model) is full and full.resized(2 * SIZE, model) is full
    assert half.images.shape == (len(video.found), SIZE // 2, SIZE // 2, 3)
    np.testing.assert_allclose(half.images[3].astype(float), full.images[3].reshape(SIZE // 2, 2, SIZE // 2, 2, 3)
                               .mean((1, 3)), atol=1)
    assert half.cameras[3].width == SIZE // 2 and float(half.cameras[3].K[0, 0]) == float(video.cameras[3].K[0, 0]) / 2
    small_person = cv2.resize(person[3], (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(half.mattes[3], head_matte(model, video.params.frame(3), small_person,
                                                             float(half.cameras[3].K[0, 0]), (SIZE // 2, SIZE // 2)))
    assert 0.2 < half.mattes[3].mean() < 0.8


def image_error(model, video: VideoData, p: HeadParams, frames) -> float:
    """Largest over ``frames`` of the mean distance, pixels, of the posed mesh's projected vertices
    from the true ones (what the frame shows; depth and the split between head rotation and neck
    are barely seen)."""
    def project(q, t):
        cam = video.cameras[t]
        x = model.vertices(q.frame(t))[0] @ cam.world_to_cam[:3, :3].T + cam.world_to_cam[:3, 3]
        uv = x @ cam.K.T
        return uv[:, :2] / uv[:, 2:]
    with torch.no_grad():
        return max(float((project(p, t) - project(video.params, t)).norm(dim=-1).mean()) for t in frames)


def test_alignment_recovers_a_perturbed_head_pose(model, video):
    """The held-out frames' tracking is knocked off (4.6° roll, 8 mm sideways); aligning them with
    the true avatar brings the posed mesh back and the held-out PSNR up; other frames are untouched."""
    truth = avatar_with(model, plain_colors(model, model.uv_slots(256), shaded=False))
    frames = list(video.test)
    rot, trans = video.params.rotation.clone(), video.params.translation.clone()
    rot[frames, 2] += 0.08
    trans[frames, 0] += 0.008
    off = dataclasses.replace(video, params=dataclasses.replace(video.params, rotation=rot, translation=trans))
    before = evaluate(truth, model, off, "off")
    params = align_frames(truth, model, off, frames, AlignConfig(iterations=60, resolution=SIZE))
    after = evaluate(truth, model, dataclasses.replace(off, params=params), "aligned")

    assert image_error(model, video, params, frames) < image_error(model, video, off.params, frames) / 3
    assert after.psnr > before.psnr + 3
    for k in ("rotation", "translation", "expr", "jaw"):
        assert torch.equal(getattr(params, k)[: video.first_test], getattr(off.params, k)[: video.first_test])
    assert torch.equal(params.shape, off.params.shape)


def test_alignment_keeps_the_eyes_near_the_tracked_gaze(model, video):
    """A 64-px render shows each eye a pixel or two wide: the image says next to nothing of the
    gaze, and Adam's normalised steps, carried along the frames, would turn the eyes at random.
    The pull to the tracked gaze keeps them there (the ablation without it wanders)."""
    truth = avatar_with(model, plain_colors(model, model.uv_slots(256), shaded=False))
    frames = range(len(video.found))
    cfg = AlignConfig(iterations=30, resolution=SIZE)
    kept = align_frames(truth, model, video, frames, cfg, warm_start=True)
    free = align_frames(truth, model, video, frames, dataclasses.replace(cfg, w_eyes=0.0), warm_start=True)
    assert float((kept.eyes - video.params.eyes).abs().max()) < 0.03
    assert float((free.eyes - video.params.eyes).abs().max()) > 0.1


def test_alignment_holds_the_mouth_to_the_detected_shape_and_leaves_the_place_to_the_render(model, video):
    """With the matte empty the render says nothing, so what moves a jaw tracked 0.08 rad too
    open is the landmark term alone: it closes it to the jaw the detected points were projected
    from, at the alignment's own resolution (half the frames'). The head, tracked 6 mm to the
    side, stays there: the term compares outlines about their centroids, so where the head is
    stays the render's to say. Without landmarks the jaw stays too."""
    from engine.camera import project
    from engine.track.lmk_model import LandmarkModel

    frames = [2, 5]                                       # jawOpen 0.5
    with torch.no_grad():
        uv, _ = project(LandmarkModel(model, detected=True)(video.params), video.cameras[0].K[0, 0].reshape(1),
                        torch.tensor([[SIZE, SIZE]], dtype=torch.float32))
    points = np.full((len(video.found), 478, 2), np.nan, np.float32)
    points[:, np.asarray(model.lmk_ids)] = uv.numpy() / SIZE
    jaw, trans = video.params.jaw.clone(), video.params.translation.clone()
    jaw[:, 0] += 0.08
    trans[:, 0] += 0.006
    blind = dataclasses.replace(video, mattes=np.zeros_like(video.mattes), landmarks=points,
                                params=dataclasses.replace(video.params, jaw=jaw, translation=trans))
    cfg = AlignConfig(iterations=300, resolution=SIZE // 2)
    held = align_frames(avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5)), model, blind, frames, cfg)
    error = (held.jaw[frames, 0] - video.params.jaw[frames, 0]).abs()
    assert float(error.max()) < 0.02, error
    sideways = (held.translation[frames, 0] - trans[frames, 0]).abs()
    assert float(sideways.max()) < 0.003, sideways      # less than half way back to the landmarks' place
    free = align_frames(avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5)), model,
                        dataclasses.replace(blind, landmarks=None), frames, cfg)
    torch.testing.assert_close(free.jaw[frames], jaw[frames])


def test_shape_distance_is_blind_to_a_moved_outline_and_sees_an_opened_one():
    groups = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6])]
    detected = torch.tensor([[0., 0], [2, 0], [2, 2], [0, 2], [5, 5], [6, 5], [5, 6]])
    moved = detected.clone()
    moved[:4] += torch.tensor([3., -1])
    moved[4:] -= 7
    assert float(shape_distance(moved, detected, groups).abs().max()) < 1e-6
    opened = detected.clone()
    opened[2:4, 1] += 1.0                                 # the square's top edge up 1: centroid up 0.5
    expected = torch.tensor([0.5, 0.5, 0.5, 0.5, 0, 0, 0])
    torch.testing.assert_close(shape_distance(opened, detected, groups), expected)


def test_photometric_error_is_least_at_the_parameters_the_frames_were_rendered_with(model, video):
    truth = avatar_with(model, plain_colors(model, model.uv_slots(256), shaded=False))
    rot = video.params.rotation.clone()
    rot[:, 1] += 0.1
    turned = dataclasses.replace(video.params, rotation=rot)
    at = photometric_error(truth, model, video, video.params, [0, 3], SIZE)
    off = photometric_error(truth, model, video, turned, [0, 3], SIZE)
    assert at < 0.005 and off > 4 * at, (at, off)


def test_alignment_cancel(model, video):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        align_frames(avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5)), model, video, [6], cancel=stop)


def test_photometric_tracking_warm_starts_and_recuts_the_mattes(model, video):
    """Every frame's tracking carries the same bias (3° roll, 6 mm sideways), as a landmark
    tracker's does. Aligned along the video with warm starts, each frame starts from its
    predecessor's correction, so with few steps the later frames end nearer the truth than
    frames aligned from the tracked values; the eval mattes are recut around the aligned mesh."""
    truth = avatar_with(model, plain_colors(model, model.uv_slots(256), shaded=False))
    rot, trans = video.params.rotation.clone(), video.params.translation.clone()
    rot[:, 2] += 0.05
    trans[:, 0] += 0.006
    person = np.full(video.mattes.shape, 255, np.uint8)
    off = dataclasses.replace(video, params=dataclasses.replace(video.params, rotation=rot, translation=trans),
                              person=person)
    cfg = AlignConfig(iterations=6, resolution=SIZE)
    later = list(range(3, len(video.found)))
    cold = align_frames(truth, model, off, range(len(video.found)), cfg)
    tracked = track_photometric(truth, model, off, cfg)
    assert image_error(model, video, tracked.params, later) < 0.8 * image_error(model, video, cold, later)
    assert image_error(model, video, tracked.params, later) < image_error(model, video, off.params, later) / 2
    for t in (0, 5):
        recut = head_matte(model, tracked.params.frame(t), person[t], float(video.cameras[t].K[0, 0]), (SIZE, SIZE))
        np.testing.assert_array_equal(tracked.mattes[t], recut)
    assert not np.array_equal(tracked.mattes[5], off.with_params(off.params, model).mattes[5])


def test_a_tracker_avatar_tracks_closer_than_the_start(model, video, one_thread):
    """The start's left half is 60 % too dark (a start is built from one frame and gets some of
    the face wrong), so aligning to it drags every frame's head sideways. The tracker avatar,
    refined briefly on the training frames with that tracking, learns the true shading, and
    aligning every frame to it (held-out ones included) lands nearer the truth. The stages report
    in order; without a tracker the result is the alignment to the start."""
    from engine.refine.tracking import STAGES, track_for_refine

    slots = model.uv_slots(256)
    x = (model.v_template[model.faces[slots.face]] * slots.bary[..., None]).sum(1)[:, 0]
    start = avatar_with(model, plain_colors(model, slots, shaded=False) * torch.where(x > 0, 1.0, 0.4)[:, None])
    rot, trans = video.params.rotation.clone(), video.params.translation.clone()
    rot[:, 2] += 0.05
    trans[:, 0] += 0.006
    off = dataclasses.replace(video, params=dataclasses.replace(video.params, rotation=rot, translation=trans))
    cfg = dataclasses.replace(CFG, track_iterations=8, track_resolution=SIZE, tracker_iterations=120,
                              tracker_resolution=SIZE)
    frames = range(len(video.found))
    to_start = track_photometric(start, model, off, cfg.track_config())
    stages = []
    tracked = track_for_refine(start, model, off, cfg, lambda s, f: stages.append((s, f)))

    assert image_error(model, video, tracked.params, frames) < 0.75 * image_error(model, video, to_start.params, frames)
    assert [s for s, _ in stages] == sorted((s for s, _ in stages), key=STAGES.index)
    assert {s for s, f in stages if f == 1.0} == set(STAGES)
    no_tracker = track_for_refine(start, model, off, dataclasses.replace(cfg, tracker_iterations=0))
    assert torch.equal(no_tracker.params.translation, to_start.params.translation)


def test_the_expression_residual_learns_what_a_static_avatar_cannot(model, video, one_thread):
    """In this video the smiling frames are 45 % darker: no single texture explains both, but a
    residual conditioned on the expression code does. It starts at zero (a refine of an avatar
    without one begins where the static one does), trains to a lower loss, darkens the smile and
    not the rest, and is written into the avatar."""
    from engine.animate import AnimatedAvatar

    smiling = video.params.expr[:, model.expr_names.index("mouthSmile_L")] > 0
    images = video.images.astype(np.float32)
    images[smiling.numpy()] *= 0.55
    tinted = dataclasses.replace(video, images=images.round().astype(np.uint8))
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    cfg = dataclasses.replace(CFG, iterations=200, lr_residual=1e-2, residual_dropout=0.0)
    first, last = {}, {}
    for features in (0, 8):
        trace = []
        out = refine(start, model, tinted, dataclasses.replace(cfg, residual_features=features),
                     progress=lambda p: trace.append(p.loss))
        first[features], last[features] = trace[0], np.mean(trace[-20:])
        if features == 0:
            assert out.residual is None
    assert first[8] == first[0]
    assert last[8] < 0.5 * last[0]
    animated = AnimatedAvatar(out, model)
    brightness = [float(animated.gaussians(video.params.frame(i)).colors.mean()) for i in range(len(smiling))]
    dark = np.array(brightness)[smiling.numpy()].mean()
    light = np.array(brightness)[~smiling.numpy()].mean()
    assert dark < 0.7 * light        # the frames are 0.55 as bright


def test_residual_dropout_trains_without_it_on_that_fraction_of_steps(model, video, one_thread):
    """``residual_dropout`` 1 never adds the residual, so its read-out stays the zero it started
    as; 0.5 still trains it."""
    start = avatar_with(model, torch.full((len(model.uv_slots(256)), 3), 0.5))
    cfg = dataclasses.replace(CFG, iterations=40, residual_features=8, lr_residual=1e-2)
    never = refine(start, model, video, dataclasses.replace(cfg, residual_dropout=1.0))
    assert float(never.residual["out.weight"].abs().max()) == 0.0
    half = refine(start, model, video, dataclasses.replace(cfg, residual_dropout=0.5))
    assert float(half.residual["out.weight"].abs().max()) > 0.0
