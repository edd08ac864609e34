"""What `export --web` puts in the page, without a browser: the arrays round-trip what posing
needs, the page is self-contained and within its size budget, and a track carries its frame rate."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

from engine.animate import AnimatedAvatar
from engine.generator.plain import plain_avatar
from engine.headmodel.base import HeadModel
from engine.types import HeadParams
from engine.web.export import web_payload


@pytest.fixture(scope="module")
def plain(openhead):
    model = HeadModel(openhead)
    return AnimatedAvatar(plain_avatar(model), model)


def test_the_payload_holds_the_model_and_the_slots_posing_needs(plain):
    model = plain.model
    header, arrays = web_payload(plain)
    S = model.n_shape
    # the sparse blendshapes rebuild the dense ones (float16)
    dense = np.zeros((model.n_expr, len(model.v_template), 3), np.float32)
    off = np.concatenate([[0], np.cumsum(arrays["expr_count"])]).astype(np.int64)
    for e in range(model.n_expr):
        dense[e, arrays["expr_index"][off[e]:off[e + 1]]] = arrays["expr_delta"][off[e]:off[e + 1]]
    want = model.dirs[..., S:].permute(2, 0, 1).numpy()
    assert np.abs(dense - want).max() < 1e-3 * np.abs(want).max() + 1e-7
    torch.testing.assert_close(torch.as_tensor(arrays["j_rest"]), model.J_regressor @ model.v_template)
    assert len(arrays["slot_face"]) == len(plain.slots.face)
    assert ("outer_mean" in arrays) == (plain.outer_layer is not None)          # the plain avatar has none
    assert "posedirs" not in arrays                              # OpenHead has no pose correctives
    assert header["joint_expressions"]["jawOpen"][0] == "jaw" and header["n_expr"] == model.n_expr
    assert set(header["pickable"]) <= set(model.expr_names) | set(header["joint_expressions"])
    assert header["shapes"] == {k: list(v.shape) for k, v in arrays.items()}


def test_the_page_is_one_file_that_fetches_nothing_and_fits_the_budget(plain, tmp_path):
    from engine.service import export_web

    size = export_web(plain, tmp_path / "a.html")
    page = (tmp_path / "a.html").read_text()
    assert size == len(page.encode()) < 8_000_000
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page)      # no script, style or image from elsewhere
    assert not re.search(r"\bfetch\(|XMLHttpRequest|import\(", page)
    header = json.loads(re.search(r'<script type="application/json" id="header">(.*?)</script>', page, re.S).group(1))
    assert header["shaders"]["vert"].startswith("#version 300 es") and "out_depth" not in header["shaders"]["frag"]
    blob = re.search(r'id="blob-slot_rgba">([^<]*)<', page).group(1)
    assert len(base64.b64decode(blob)) == 4 * len(plain.slots.face)


def test_a_saved_track_is_embedded_with_its_frame_rate(plain, tmp_path, monkeypatch):
    from engine.io.params import save_params
    from spatialavatar_app.cli import main

    model = plain.model
    n = 4
    track = HeadParams.neutral(model.n_shape, model.n_expr, n)
    track.jaw[:, 0] = torch.linspace(0, 0.3, n)
    save_params(track, tmp_path / "t.npz", fps=np.array([12.5], np.float32))
    main(["export", "--avatar", "plain", "--web", str(tmp_path / "p.html"), "--track", str(tmp_path / "t.npz")])
    page = (tmp_path / "p.html").read_text()
    header = json.loads(re.search(r'id="header">(.*?)</script>', page, re.S).group(1))
    assert header["track"] == {"frames": n, "fps": 12.5}
    rows = np.frombuffer(base64.b64decode(re.search(r'id="blob-track">([^<]*)<', page).group(1)), np.float32)
    rows = rows.reshape(n, model.n_expr + 15)
    np.testing.assert_allclose(rows[:, model.n_expr + 6], track.jaw[:, 0].numpy())     # expr, rotation, neck, then jaw
    with pytest.raises(SystemExit, match="--track is embedded in a web page"):
        main(["export", "--ply", str(tmp_path / "x.ply"), "--track", str(tmp_path / "t.npz")])
