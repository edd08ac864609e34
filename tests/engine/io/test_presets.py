import json

import pytest

from engine.expressions import apply_expressions
from engine.headmodel.base import HeadModel
from engine.io import AvatarFileError
from engine.io.presets import load_camera_preset, load_expression_preset, preset_names, save_expression_preset


def test_every_bundled_expression_preset_applies_to_openhead(openhead):
    model = HeadModel(openhead)
    names = preset_names("expressions")
    assert {"neutral", "smile", "surprise", "blink"} <= set(names)
    for name in names:
        weights = load_expression_preset(name)
        p = apply_expressions(model.neutral(), model, weights)
        for k, w in weights.items():
            if k in model.expr_names:
                assert float(p.expr[0, model.expr_names.index(k)]) == pytest.approx(w)


def test_unknown_preset_name_lists_the_bundled_ones():
    with pytest.raises(ValueError, match="no expression preset 'grin'.*smile"):
        load_expression_preset("grin")


@pytest.mark.parametrize("content,message", [
    ({"schema": 2, "weights": {}}, "unknown preset schema 2"),
    ({"schema": 1, "weights": {}, "code": "x"}, "unknown key"),
    ({"schema": 1, "weights": {"mouthSmile_L": "lots"}}, "must map expression names to finite numbers"),
    ({"schema": 1, "weights": {"jawOpen": float("nan")}}, "must map expression names to finite numbers"),
    ({"schema": 1, "weights": {"jawOpen": float("inf")}}, "must map expression names to finite numbers"),
    ({"schema": 1, "weights": {"jawOpen": True}}, "must map expression names to finite numbers"),
])
def test_bad_preset_files_are_rejected_by_name(tmp_path, content, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(content))
    with pytest.raises(AvatarFileError, match=f"mine.json: .*{message}"):
        load_expression_preset(path)


def test_a_saved_preset_is_listed_and_loads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = save_expression_preset("my_grin", {"mouthSmile_L": 0.7, "jawOpen": 0.25, "eyeBlink_L": 0.0})
    assert path.parent == tmp_path / "spatialavatar" / "presets" / "expressions"
    assert "my_grin" in preset_names("expressions")
    assert load_expression_preset("my_grin") == {"jawOpen": 0.25, "mouthSmile_L": 0.7}   # zeros dropped


@pytest.mark.parametrize("name,message", [("smile", "bundled"), ("../evil", "letters"), ("", "letters")])
def test_saving_under_a_bad_name_is_refused(tmp_path, monkeypatch, name, message):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        save_expression_preset(name, {"mouthSmile_L": 1.0})


def test_camera_presets_load_as_numbers():
    names = preset_names("cameras")
    assert {"front", "three_quarter_left", "profile_right"} <= set(names)
    front = load_camera_preset("front")
    assert front == {"yaw": 0.0, "pitch": 0.0, "distance": 0.9, "fov_y": 20.0}
    assert load_camera_preset("profile_left")["yaw"] == 90.0
