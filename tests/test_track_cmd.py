"""`python main.py track` end to end on a public-domain portrait and a bad file."""
import imageio.v3 as iio
import numpy as np
from skimage import data

from spatialavatar_app.cli import main


def test_track_writes_params_mattes_overlay_and_report(tmp_path, capsys):
    portrait = tmp_path / "astronaut.png"
    iio.imwrite(portrait, data.astronaut())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    main(["track", str(portrait), str(broken), "--out", str(tmp_path / "out"), "--overlay", "--report"])
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.jpg" in captured.err
    row = [line for line in captured.out.splitlines() if line.startswith("astronaut")][0]
    mean_px = float(row.split()[5])
    assert mean_px < 2.5
    z = np.load(tmp_path / "out" / "astronaut.npz")
    assert z["expr"].shape[0] == 1 and z["shape"].ndim == 1
    mattes = np.load(tmp_path / "out" / "astronaut_mattes.npz")["mattes"]
    assert mattes.shape == (1, 512, 512)
    overlay = iio.imread(tmp_path / "out" / "astronaut_overlay.png")
    assert overlay.shape == (512, 512, 3)
    assert np.abs(overlay.astype(int) - data.astronaut()).mean() > 1     # something was drawn
    assert "tracked 1 of 2 inputs" in captured.out


def test_two_inputs_with_one_name_write_two_files(tmp_path, capsys):
    """`track a/face.png b/face.png` wrote both to out/face.npz, the second over the first."""
    for sub, img in (("a", data.astronaut()), ("b", data.astronaut()[:, ::-1].copy())):
        (tmp_path / sub).mkdir()
        iio.imwrite(tmp_path / sub / "face.png", img)
    main(["track", str(tmp_path / "a" / "face.png"), str(tmp_path / "b" / "face.png"), "--out", str(tmp_path / "out")])
    a, b = (np.load(tmp_path / "out" / f"{n}.npz") for n in ("face", "face-2"))
    assert a["rotation"][0, 1] * b["rotation"][0, 1] < 0 or not np.allclose(a["rotation"], b["rotation"])


def test_track_with_only_bad_inputs_fails(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("no")
    try:
        main(["track", str(bad), "--out", str(tmp_path / "o")])
    except SystemExit as e:
        assert e.code == 1
    else:
        raise AssertionError("expected a failing exit")
