"""Named expressions: ARKit-style names to `HeadParams`.

Blendshape names map to the head model's expression components; a few names are joint
motions instead, as in ARKit: ``jawOpen`` opens the jaw joint, ``eyeLook{Up,Down,In,Out}_{L,R}``
turn the eyes. Weight 1 is the full expression.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from engine.headmodel.base import HeadModel
from engine.types import HeadParams

JAW_OPEN_RAD = 0.45   # jawOpen = 1 opens the jaw by this angle
EYE_LOOK_RAD = 0.45   # eyeLook* = 1 turns the eye by this angle


def _joint_axes() -> dict[str, tuple[str, int, float]]:
    """name -> (HeadParams field, component, radians at weight 1)."""
    out = {"jawOpen": ("jaw", 0, JAW_OPEN_RAD)}
    for side, off, inward in (("L", 0, -1.0), ("R", 3, 1.0)):
        out[f"eyeLookUp_{side}"] = ("eyes", off + 0, -EYE_LOOK_RAD)
        out[f"eyeLookDown_{side}"] = ("eyes", off + 0, EYE_LOOK_RAD)
        out[f"eyeLookIn_{side}"] = ("eyes", off + 1, inward * EYE_LOOK_RAD)
        out[f"eyeLookOut_{side}"] = ("eyes", off + 1, -inward * EYE_LOOK_RAD)
    return out


JOINT_EXPRESSIONS = _joint_axes()


LOCAL_PREFIX = "local_"   # OpenHead's tracking modes: accepted, but not listed for people to pick

EXPRESSION_GROUPS = (("Eyes", ("eye",)), ("Brows", ("brow",)), ("Mouth", ("mouth",)), ("Jaw", ("jaw",)),
                     ("Cheeks / nose", ("cheek", "nose")))
"""How the app's panel and the web page group the named expressions: (label, name prefixes)."""
POSE_SLIDERS = (  # (label, Pose field, index, range in degrees)
    ("head yaw", "head", 0, 60), ("head pitch", "head", 1, 40), ("head roll", "head", 2, 40),
    ("neck yaw", "neck", 0, 50), ("neck pitch", "neck", 1, 35), ("neck roll", "neck", 2, 30),
    ("jaw open", "jaw", 0, 25), ("jaw sideways", "jaw", 1, 10),
    ("gaze yaw", "gaze", 0, 30), ("gaze pitch", "gaze", 1, 25))
"""The joint-angle sliders of the app's panel and the web page (`Pose`'s fields, degrees)."""


def group_expressions(names: list[str]) -> list[tuple[str, list[str]]]:
    """(group label, expression names) in panel order; names no group claims go to "Other"."""
    out, taken = [], set()
    for label, prefixes in EXPRESSION_GROUPS:
        sel = [n for n in names if n.startswith(prefixes) and n not in taken]
        taken.update(sel)
        out.append((label, sel))
    rest = [n for n in names if n not in taken]
    if rest:
        out.append(("Other", rest))
    return [(label, sel) for label, sel in out if sel]


def expression_names(model: HeadModel) -> list[str]:
    """The named expressions of ``model`` (blendshapes and joint motions) for people to pick."""
    return sorted(set(n for n in model.expr_names if n and not n.startswith(LOCAL_PREFIX)) | set(JOINT_EXPRESSIONS))


def parse_weights(text: str) -> dict[str, float]:
    """``"jawOpen=0.6,mouthSmile_L=0.5"`` -> {"jawOpen": 0.6, "mouthSmile_L": 0.5}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expression {item!r} needs a weight, as in {item}=0.5")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"expression {name.strip()!r}: weight {value!r} is not a number") from None
        if not math.isfinite(weight):
            raise ValueError(f"expression {name.strip()!r}: weight {value!r} is not a finite number")
        out[name.strip()] = weight
    return out


def apply_expressions(params: HeadParams, model: HeadModel, weights: dict[str, float]) -> HeadParams:
    """``params`` with the named expressions applied to every frame of the batch.

    A blendshape's weight is *set*; a joint expression (jawOpen, eyeLook*) is *added* to the
    joint's current rotation, so it composes with a tracked or posed jaw and gaze."""
    expr, jaw, eyes = params.expr.clone(), params.jaw.clone(), params.eyes.clone()
    joints = {"jaw": jaw, "eyes": eyes}
    for name, w in weights.items():
        if name in JOINT_EXPRESSIONS:
            field, k, rad = JOINT_EXPRESSIONS[name]
            joints[field][:, k] += w * rad
        elif name in model.expr_names:
            expr[:, model.expr_names.index(name)] = w
        else:
            raise ValueError(f"unknown expression {name!r} for {model.name}; known: {', '.join(expression_names(model))}")
    return dataclasses.replace(params, expr=expr, jaw=jaw, eyes=eyes)


def _axis_angle(yaw_deg: float, pitch_deg: float, roll_deg: float) -> torch.Tensor:
    """Axis-angle [3] of yaw (about +y) then pitch (about +x) then roll (about +z), in degrees.
    Cached by value: a dragged expression slider re-poses with the same angles every frame, and
    the rotation maths is ~1 ms of small torch ops each time."""
    return torch.tensor(_axis_angle_values(float(yaw_deg), float(pitch_deg), float(roll_deg)))


@functools.lru_cache(maxsize=256)
def _axis_angle_values(yaw_deg: float, pitch_deg: float, roll_deg: float) -> tuple[float, float, float]:
    from engine.rotations import axis_angle_to_rotmat, rotmat_to_quat

    R = torch.eye(3)
    for axis, deg in (((0.0, 1.0, 0.0), yaw_deg), ((1.0, 0.0, 0.0), pitch_deg), ((0.0, 0.0, 1.0), roll_deg)):
        R = R @ axis_angle_to_rotmat(torch.deg2rad(torch.tensor([axis]) * deg))[0]
    q = rotmat_to_quat(R)
    angle = 2 * torch.atan2(q[1:].norm(), q[0])
    return tuple((q[1:] / q[1:].norm().clamp_min(1e-12) * angle).tolist())


def head_rotation(params: HeadParams, yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> HeadParams:
    """``params`` with the neck turned by yaw (left +), pitch (down +) and roll, in degrees."""
    neck = _axis_angle(yaw_deg, pitch_deg, roll_deg).expand_as(params.neck).to(params.neck)
    return dataclasses.replace(params, neck=neck)


@dataclass(frozen=True)
class Pose:
    """Joint angles in degrees on top of named expressions: what the app's pose sliders hold."""

    head: tuple[float, float, float] = (0.0, 0.0, 0.0)   # global yaw (left +), pitch (down +), roll
    neck: tuple[float, float, float] = (0.0, 0.0, 0.0)   # neck yaw, pitch, roll
    jaw: tuple[float, float] = (0.0, 0.0)                # jaw open (+), sideways (subject's left +)
    gaze: tuple[float, float] = (0.0, 0.0)               # both eyes: yaw (subject's left +), pitch (down +)


def posed(params: HeadParams, model: HeadModel, weights: dict[str, float], pose: Pose = Pose()) -> HeadParams:
    """``params`` with the named expressions set (`apply_expressions`) and ``pose`` added to the
    head, neck, jaw and eye joints."""
    out = apply_expressions(params, model, weights)
    rotation = out.rotation + _axis_angle(*pose.head).to(out.rotation)
    neck = out.neck + _axis_angle(*pose.neck).to(out.neck)
    jaw = out.jaw + torch.deg2rad(torch.tensor([pose.jaw[0], pose.jaw[1], 0.0])).to(out.jaw)
    eye = _axis_angle(pose.gaze[0], pose.gaze[1], 0.0).to(out.eyes)
    return dataclasses.replace(out, rotation=rotation, neck=neck, jaw=jaw, eyes=out.eyes + torch.cat([eye, eye]))
