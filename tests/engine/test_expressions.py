"""engine.expressions: weight parsing, named expressions to HeadParams, head rotation convention."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from engine.expressions import (EYE_LOOK_RAD, JAW_OPEN_RAD, JOINT_EXPRESSIONS, apply_expressions,
                                expression_names, head_rotation, parse_weights)
from engine.rotations import axis_angle_to_rotmat
from engine.types import HeadParams

MODEL = SimpleNamespace(name="fakehead", expr_names=("mouthSmile_L", "", "browInnerUp", "cheekPuff"))
X, Y, Z = torch.eye(3)


def _neutral(batch: int = 2) -> HeadParams:
    return HeadParams.neutral(n_shape=3, n_expr=len(MODEL.expr_names), batch=batch)


def _rot(aa: torch.Tensor) -> torch.Tensor:
    return axis_angle_to_rotmat(aa)


# --- parse_weights -----------------------------------------------------------------------------

def test_parse_weights_parses_names_and_floats() -> None:
    got = parse_weights("jawOpen=0.6, mouthSmile_L = 0.5,,eyeBlink_R=-1e-1,")
    assert got == {"jawOpen": 0.6, "mouthSmile_L": 0.5, "eyeBlink_R": -0.1}
    assert parse_weights("") == {}


def test_parse_weights_rejects_item_without_weight_naming_it() -> None:
    with pytest.raises(ValueError, match=re.escape("expression 'x' needs a weight, as in x=0.5")):
        parse_weights("jawOpen=0.2,x")


def test_parse_weights_rejects_non_number_naming_item_and_value() -> None:
    with pytest.raises(ValueError, match=re.escape("expression 'x': weight 'abc' is not a number")):
        parse_weights("x=abc")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_parse_weights_rejects_non_finite_weights(value) -> None:
    """--expr jawOpen=nan rendered a blank picture with exit 0."""
    with pytest.raises(ValueError, match=re.escape(f"expression 'jawOpen': weight '{value}' is not a finite number")):
        parse_weights(f"jawOpen={value}")


# --- apply_expressions ---------------------------------------------------------------------------

def test_apply_expressions_sets_named_expr_components_in_every_frame() -> None:
    p = _neutral()
    out = apply_expressions(p, MODEL, {"browInnerUp": 0.7, "mouthSmile_L": -0.25})
    want = torch.tensor([[-0.25, 0.0, 0.7, 0.0]]).expand(2, 4)
    assert_close(out.expr, want, rtol=0, atol=0)
    assert_close(out.jaw, torch.zeros(2, 3), rtol=0, atol=0)
    assert_close(out.eyes, torch.zeros(2, 6), rtol=0, atol=0)
    assert_close(p.expr, torch.zeros(2, 4), rtol=0, atol=0)       # input untouched


def test_apply_expressions_overwrites_existing_expr_component() -> None:
    p = HeadParams.neutral(3, 4, batch=1)
    p = apply_expressions(p, MODEL, {"cheekPuff": 0.3})
    out = apply_expressions(p, MODEL, {"cheekPuff": 0.8})
    assert_close(out.expr, torch.tensor([[0.0, 0.0, 0.0, 0.8]]), rtol=0, atol=0)


@pytest.mark.parametrize("w", [1.0, 0.6, -0.2])
def test_apply_expressions_jaw_open_rotates_jaw_about_x(w: float) -> None:
    out = apply_expressions(_neutral(), MODEL, {"jawOpen": w})
    want = torch.tensor([[w * JAW_OPEN_RAD, 0.0, 0.0]]).expand(2, 3)
    assert_close(out.jaw, want, rtol=0, atol=1e-7)
    assert_close(out.expr, torch.zeros(2, 4), rtol=0, atol=0)
    assert JAW_OPEN_RAD == 0.45


def test_apply_expressions_eye_look_turns_gaze_direction() -> None:
    a = EYE_LOOK_RAD
    up = apply_expressions(_neutral(1), MODEL, {"eyeLookUp_L": 1.0, "eyeLookDown_R": 1.0})
    # gaze is +z; up is +y, down is -y
    assert_close(_rot(up.eyes[0, :3]) @ Z, torch.tensor([0.0, math.sin(a), math.cos(a)]))
    assert_close(_rot(up.eyes[0, 3:]) @ Z, torch.tensor([0.0, -math.sin(a), math.cos(a)]))
    # "in" is towards the nose: the left eye sits at +x so looks to -x, the right eye to +x
    inward = apply_expressions(_neutral(1), MODEL, {"eyeLookIn_L": 1.0, "eyeLookIn_R": 1.0})
    assert_close(_rot(inward.eyes[0, :3]) @ Z, torch.tensor([-math.sin(a), 0.0, math.cos(a)]))
    assert_close(_rot(inward.eyes[0, 3:]) @ Z, torch.tensor([math.sin(a), 0.0, math.cos(a)]))
    out = apply_expressions(_neutral(1), MODEL, {"eyeLookOut_L": 0.5})
    assert_close(out.eyes, torch.tensor([[0.0, 0.5 * a, 0.0, 0.0, 0.0, 0.0]]))


def test_apply_expressions_unknown_name_lists_known_names() -> None:
    known = sorted({"mouthSmile_L", "browInnerUp", "cheekPuff"} | set(JOINT_EXPRESSIONS))
    assert expression_names(MODEL) == known
    msg = f"unknown expression 'nope' for fakehead; known: {', '.join(known)}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        apply_expressions(_neutral(), MODEL, {"nope": 1.0})


def test_apply_expressions_empty_name_of_unnamed_component_is_not_listed() -> None:
    assert "" not in expression_names(MODEL)


# --- head_rotation -------------------------------------------------------------------------------

def test_convention_head_yaw_90_turns_face_to_subjects_left() -> None:
    out = head_rotation(_neutral(), yaw_deg=90.0)
    for b in range(2):
        assert_close(_rot(out.neck[b]) @ Z, X, atol=1e-6, rtol=0)
    assert_close(out.neck, torch.tensor([[0.0, math.pi / 2, 0.0]]).expand(2, 3), atol=1e-6, rtol=0)


def test_convention_head_pitch_90_turns_face_down() -> None:
    out = head_rotation(_neutral(), pitch_deg=90.0)
    assert_close(_rot(out.neck[0]) @ Z, -Y, atol=1e-6, rtol=0)
    assert_close(out.neck[0], torch.tensor([math.pi / 2, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_head_rotation_composes_yaw_pitch_roll_and_keeps_other_fields() -> None:
    p = _neutral()
    out = head_rotation(p, yaw_deg=30.0, pitch_deg=20.0, roll_deg=-10.0)
    d = torch.deg2rad
    want = (_rot(d(torch.tensor([0.0, 30.0, 0.0]))) @ _rot(d(torch.tensor([20.0, 0.0, 0.0])))
            @ _rot(d(torch.tensor([0.0, 0.0, -10.0]))))
    assert_close(_rot(out.neck[1]), want, atol=1e-6, rtol=0)
    for f in ("shape", "expr", "rotation", "jaw", "eyes", "translation"):
        assert_close(getattr(out, f), getattr(p, f), rtol=0, atol=0)


def test_head_rotation_half_turn_and_zero() -> None:
    out = head_rotation(_neutral(1), yaw_deg=180.0)
    assert_close(_rot(out.neck[0]) @ Z, -Z, atol=1e-6, rtol=0)
    assert_close(out.neck[0].norm(), torch.tensor(math.pi), atol=1e-6, rtol=0)
    assert_close(head_rotation(_neutral(1)).neck, torch.zeros(1, 3), rtol=0, atol=0)


def test_posed_adds_joint_angles_in_degrees_on_top_of_expressions(openhead):
    import math

    from engine.expressions import Pose, posed
    from engine.headmodel.base import HeadModel

    model = HeadModel(openhead)
    p = posed(model.neutral(), model, {"mouthSmile_L": 0.5, "jawOpen": 1.0},
              Pose(head=(30.0, 0.0, 0.0), neck=(0.0, 10.0, 0.0), jaw=(5.0, 0.0), gaze=(0.0, -12.0)))
    assert float(p.expr[0, model.expr_names.index("mouthSmile_L")]) == pytest.approx(0.5)
    assert p.rotation[0].tolist() == pytest.approx([0.0, math.radians(30), 0.0], abs=1e-6)     # about +y
    assert p.neck[0].tolist() == pytest.approx([math.radians(10), 0.0, 0.0], abs=1e-6)       # about +x
    assert float(p.jaw[0, 0]) == pytest.approx(0.45 + math.radians(5), abs=1e-6)             # jawOpen + 5°
    assert p.eyes[0].tolist() == pytest.approx([math.radians(-12), 0, 0] * 2, abs=1e-6)     # both eyes, up
