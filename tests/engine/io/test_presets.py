import json

import pytest

from engine.expressions import apply_expressions
from engine.headmodel.base import HeadModel
from engine.io import AvatarFileError
from engine.io.presets import load_expression_preset, preset_names


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
    ({"schema": 1, "weights": {"mouthSmile_L": "lots"}}, "must map expression names to numbers"),
])
def test_bad_preset_files_are_rejected_by_name(tmp_path, content, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(content))
    with pytest.raises(AvatarFileError, match=f"mine.json: .*{message}"):
        load_expression_preset(path)
