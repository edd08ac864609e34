"""The panel's tables, without a window."""
from __future__ import annotations

from engine.refine.config import load_refine_config, stages
from spatialavatar_app.app.panel import REFINE_SCHEDULES


def test_every_refine_schedule_is_a_bundled_preset_and_its_label_says_what_it_runs():
    assert list(REFINE_SCHEDULES.values()) == ["fast", "default", "residual", "quality", "polish"]
    for label, preset in REFINE_SCHEDULES.items():
        plan = stages(load_refine_config(preset))
        assert "; ".join(f"{c.iterations / 1000:g}K it, {c.resolution} px" for c in plan) in label
        assert (plan[0].residual_features > 0) == ("residual" in label)
        assert (len(plan) > 1) == ("then" in label)
