"""The command line, end to end on small images."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from engine.io import read_ply
from spatialavatar_app.cli import main


def test_render_writes_the_default_avatar_centred(tmp_path):
    out = tmp_path / "x.png"
    main(["render", "--out", str(out), "--size", "96", "--expr", "jawOpen=0.5,mouthSmile_L=0.5"])
    img = iio.imread(out)
    assert img.shape == (96, 96, 3)
    head = (img < 250).any(-1)                       # not the white background
    rows, cols = np.nonzero(head)
    assert 0.25 < head.mean() < 0.75
    assert abs(cols.mean() - 48) < 6                 # the head is centred left to right


def test_yaw_turns_the_head_to_the_subjects_left(tmp_path):
    """A head turned to its left shows its right cheek: mass moves to image right (OpenCV, frontal camera)."""
    def nose_column(args):
        out = tmp_path / "y.png"
        main(["render", "--avatar", "plain", "--out", str(out), "--size", "96", *args])
        img = iio.imread(out).astype(float)
        dark = img.sum(-1) < 600                     # everything but the white background
        return np.nonzero(dark)[1].mean()

    assert nose_column(["--yaw", "30"]) > nose_column(["--yaw", "-30"]) + 2


def test_export_ply_holds_every_slot(tmp_path):
    ply = tmp_path / "a.ply"
    main(["export", "--ply", str(ply), "--expr", "eyeBlink_L=1"])
    g = read_ply(ply)
    assert len(g) >= 55_000
    # head and neck (0.35 m) and the outer layer's bust below them, down to 0.32 m under the eyes
    assert float(g.means[:, 1].max() - g.means[:, 1].min()) == pytest.approx(0.47, abs=0.03)


def test_export_bundle_round_trips_into_render(tmp_path):
    bundle = tmp_path / "a.savatar"
    main(["export", "--bundle", str(bundle)])
    main(["render", "--avatar", str(bundle), "--out", str(tmp_path / "b.png"), "--size", "48"])
    assert iio.imread(tmp_path / "b.png").shape == (48, 48, 3)


@pytest.mark.parametrize("args,message", [
    (["render", "--expr", "bogus=1"], "unknown expression 'bogus'"),
    (["render", "--expr", "jawOpen"], "needs a weight"),
    (["export"], "nothing to do"),
])
def test_bad_input_is_one_clear_error(tmp_path, args, message):
    with pytest.raises(SystemExit) as e:
        main(args + (["--out", str(tmp_path / "z.png")] if args[0] == "render" else []))
    assert message in str(e.value)


def test_corrupt_bundle_is_named(tmp_path):
    bad = tmp_path / "bad.savatar"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SystemExit) as e:
        main(["render", "--avatar", str(bad), "--out", str(tmp_path / "z.png")])
    assert "bad.savatar" in str(e.value)


def test_preset_and_bundle_thumbnail(tmp_path):
    from engine.io import load_avatar

    main(["render", "--preset", "surprise", "--out", str(tmp_path / "s.png"), "--size", "48"])
    assert iio.imread(tmp_path / "s.png").shape == (48, 48, 3)
    main(["export", "--bundle", str(tmp_path / "t.savatar")])
    thumb = load_avatar(tmp_path / "t.savatar").thumbnail
    assert thumb.shape == (128, 128, 3) and thumb.dtype == np.uint8
    assert (thumb < 250).any(-1).mean() > 0.25          # a head, not a blank image


def test_no_command_opens_the_app_and_says_so_without_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit, match="no display to open the app on.*xvfb-run"):
        main([])


def test_drive_needs_one_driver_and_names_a_missing_camera():
    with pytest.raises(SystemExit, match="give a driver"):
        main(["drive"])
    with pytest.raises(SystemExit, match="camera 7: no camera at this index"):
        main(["drive", "--webcam", "7"])


FIELDS = ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")


def three_frames(model):
    """A 3-frame video's data (2 training, 1 held out), all tracked at the neutral pose."""
    from engine.refine.data import VideoData
    from engine.types import HeadParams

    p = model.neutral()
    return VideoData("v", np.zeros((3, 8, 8, 3), np.uint8), np.ones((3, 8, 8), np.float32),
                     HeadParams(*(getattr(p, k).repeat(3, 1) for k in FIELDS)), [None] * 3, np.ones(3, bool),
                     first_test=2)


def test_eval_refine_scores_with_the_tracking_refine_wrote(tmp_path, openhead, monkeypatch):
    """`eval refine` takes the tracking `refine` wrote beside the avatar (or --tracking), refuses
    one of another length, and --landmark-tracking keeps the landmark tracker's parameters."""
    import dataclasses

    import torch

    import engine.eval.refined as refined_mod
    import engine.io as io
    import engine.refine.session as session
    from engine.headmodel.base import HeadModel
    from engine.io.params import save_params
    from engine.refine.session import tracking_path

    model = HeadModel(openhead)
    data = three_frames(model)
    avatar = tmp_path / "me.savatar"
    assert tracking_path(avatar) == tmp_path / "me.tracking.npz"
    photometric = dataclasses.replace(data.params, jaw=torch.full((3, 3), 0.1))
    save_params(photometric, tracking_path(avatar))
    scored_on = []

    def evaluate_mattes(avatar, model, data, name, mattes, video_out=None, lpips=None):
        scored_on.append(data.params)
        return {m: m for m in mattes}

    monkeypatch.setattr(session, "prepare", lambda video, model, side, avatar=None, **kw: (None, data))
    monkeypatch.setattr(io, "load_avatar", lambda path: None)
    monkeypatch.setattr(refined_mod, "evaluate_mattes", evaluate_mattes)
    got = refined_mod.score_refined(avatar, tmp_path / "v.mp4", model)
    assert torch.equal(scored_on[-1].jaw, photometric.jaw) and got.tracking.endswith("me.tracking.npz")
    assert got.rows == ["portrait", "portrait", "head", "head", "eyes", "eyes", "mouth", "mouth"]
    got = refined_mod.score_refined(avatar, tmp_path / "v.mp4", model, landmark_tracking=True)
    assert scored_on[-1] is data.params and "landmark" in got.tracking
    save_params(dataclasses.replace(photometric, **{k: getattr(photometric, k)[:2] for k in FIELDS}),
                tmp_path / "short.npz")
    with pytest.raises(ValueError, match="short.npz: the tracking has 2 frames; the video has 3"):
        refined_mod.score_refined(avatar, tmp_path / "v.mp4", model, tracking=tmp_path / "short.npz")


def test_refine_reuses_the_tracking_beside_its_start_and_writes_it_beside_its_output(tmp_path, openhead, monkeypatch):
    """Continuing a refined avatar (--avatar A, e.g. --preset polish) trains on A's tracking, not on
    a new alignment to A, and leaves a copy beside --out for `eval refine` before the first step."""
    import dataclasses

    import torch

    import engine.refine.refiner as refiner
    import engine.refine.session as session
    from engine.generator.plain import plain_avatar
    from engine.headmodel.base import HeadModel
    from engine.io import save_avatar
    from engine.io.params import load_params, save_params
    from engine.refine.session import tracking_path
    from spatialavatar_app.refine_cmd import Refine

    model = HeadModel(openhead)
    data = three_frames(model)
    start = tmp_path / "refined.savatar"
    save_avatar(plain_avatar(model), start)
    earlier = dataclasses.replace(data.params, jaw=torch.full((3, 3), 0.2))
    save_params(earlier, tracking_path(start))
    trained_on = []

    def stages(avatar, model, data, cfg, progress, cancel, checkpoint, resume):
        trained_on.append(data.params)
        assert (tmp_path / "polished.tracking.npz").exists()        # written before the first step
        return avatar

    monkeypatch.setattr(session, "prepare", lambda video, model, side, avatar=None, **kw: (avatar, data))
    monkeypatch.setattr(refiner, "refine_stages", stages)
    Refine(tmp_path / "v.mp4", out=tmp_path / "polished.savatar", avatar=start, preset="polish").run()
    assert torch.equal(trained_on[0].jaw, earlier.jaw)
    assert torch.equal(load_params(tmp_path / "polished.tracking.npz")[0].jaw, earlier.jaw)
    assert (tmp_path / "polished.savatar").exists()
    save_params(dataclasses.replace(earlier, **{k: getattr(earlier, k)[:1] for k in FIELDS}), tmp_path / "one.npz")
    with pytest.raises(ValueError, match="one.npz: the tracking has 1 frames; the video has 3"):
        Refine(tmp_path / "v.mp4", out=tmp_path / "x.savatar", tracking=tmp_path / "one.npz").run()
    assert len(trained_on) == 1 and not (tmp_path / "x.savatar").exists()


def test_eval_align_test_fits_the_held_out_pose_and_scores_higher(offset_clip, openhead):
    """--align-test's rows: each held-out frame's tracking is aligned to its image with the avatar
    frozen, so a 4 mm tracking error is largely undone and the score rises above the tracked one."""
    from engine.eval.refined import aligned_to, evaluate
    from engine.headmodel.base import HeadModel

    plain, data = offset_clip
    model = HeadModel(openhead)
    tracked = evaluate(plain, model, data, "tracked")
    realigned = aligned_to(plain, model, data)
    aligned = evaluate(plain, model, realigned, "aligned")
    assert aligned.frames == tracked.frames == 1
    assert aligned.psnr > tracked.psnr + 3


HEAD_MODEL_ARGS = [["app"], ["build", "a.jpg"], ["render"], ["export"], ["track", "a.jpg"], ["refine", "v.mp4"],
                   ["drive"], ["demo"], ["eval", "ff", "v.mp4"], ["eval", "refine", "a.savatar", "v.mp4"],
                   ["eval", "tracking"], ["eval", "portraits", "a.jpg"], ["train", "prepare", "v.mp4"],
                   ["train", "phase1"], ["train", "phase2"], ["bench", "render"], ["bench", "refine", "--video", "v.mp4"],
                   ["bench", "ui"], ["bench", "pose"], ["bench", "build"], ["bench", "web"]]


def test_every_command_is_in_the_head_model_list():
    """A command added later must take --head-model too (the list above names every command)."""
    from spatialavatar_app.cli import COMMANDS

    assert set(COMMANDS) - {"headmodel"} == {a[0] for a in HEAD_MODEL_ARGS}


@pytest.mark.parametrize("argv", [["bench", "refine", "--video", "v.mp4", "--backends", "native"],
                                  ["bench", "ui", "--portraits", "a.jpg"], ["train", "prepare", "--anchor", "a.pt"],
                                  ["train", "phase1", "--anchor", "a.pt"], ["train", "phase2", "--limit", "3"],
                                  ["eval", "ff", "v.mp4", "--align-test"]], ids=lambda a: " ".join(a))
def test_an_option_of_another_mode_is_refused_not_ignored(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "Unrecognized" in capsys.readouterr().err


@pytest.mark.parametrize("argv", HEAD_MODEL_ARGS, ids=lambda a: " ".join(a[:2]))
def test_every_command_that_loads_a_head_model_takes_head_model(argv):
    import tyro

    from spatialavatar_app.cli import COMMANDS

    cmd = tyro.cli(COMMANDS[argv[0]], args=argv[1:] + ["--head-model", "my-flame"])
    got = cmd.source.head_model if hasattr(cmd, "source") else cmd.head_model
    assert got == Path("my-flame")


@pytest.mark.parametrize("argv", [["refine", "v.mp4"], ["drive", "--video", "v.mp4"], ["eval", "ff", "v.mp4"],
                                  ["eval", "refine", "a.savatar", "v.mp4"], ["track", "a.jpg"]],
                         ids=lambda a: " ".join(a[:2]))
def test_the_head_model_given_is_the_one_loaded(argv, tmp_path, monkeypatch):
    """refine, drive and eval loaded OpenHead whatever was asked, so a FLAME avatar could be built
    but not refined, driven or evaluated."""
    import engine.headmodel.openhead as openhead

    def refuse(path=None, device=None):
        raise ValueError(f"asked for head model {path}")

    monkeypatch.setattr(openhead, "load_head_model", refuse)
    out = [] if argv[0] in ("eval", "track") else ["--out", str(tmp_path / ("r.savatar" if argv[0] == "refine" else "d.mp4"))]
    with pytest.raises(SystemExit, match="asked for head model my-flame"):
        main(argv + ["--head-model", "my-flame"] + out)


def test_no_flag_reads_as_a_double_negative():
    """A bool option that defaults to True is --name/--no-name; one named no_x gave --no-no-x."""
    import dataclasses

    from spatialavatar_app.cli import COMMANDS

    import typing

    for name, cmd in COMMANDS.items():
        modes = [typing.get_args(a)[0] for a in typing.get_args(cmd)] or [cmd]      # eval's subcommands
        for cls in modes:
            for f in dataclasses.fields(cls):
                assert not f.name.startswith("no_"), f"{name} --{f.name.replace('_', '-')}"


def test_refine_ablation_and_drive_flags_keep_their_names():
    import tyro

    from spatialavatar_app.cli import COMMANDS

    r = tyro.cli(COMMANDS["refine"], args=["v.mp4", "--no-aspect", "--no-clamp", "--no-scale-freeze", "--no-random-background"])
    assert not (r.aspect or r.clamp or r.scale_freeze or r.random_background)
    d = tyro.cli(COMMANDS["drive"], args=["--no-head-pose", "--no-gaze"])
    assert not (d.head_pose or d.gaze)
    assert tyro.cli(COMMANDS["drive"], args=[]).head_pose


@pytest.mark.parametrize("argv", [["eval", "ff", "v.mp4", "--align-test"], ["eval", "refine", "a.savatar", "v.mp4", "--cross"],
                                  ["eval", "portraits", "p.jpg", "--targets", "3"], ["eval", "refine", "a.savatar"]],
                         ids=lambda a: " ".join(a[1:]))
def test_an_eval_mode_refuses_another_modes_options(argv, capsys):
    """eval ff, refine and portraits are subcommands: --align-test was silently ignored by ff."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
