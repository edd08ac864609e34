"""The panel's tables, without a window."""
from __future__ import annotations

from engine.refine.config import load_refine_config
from spatialavatar_app.app.panel import REFINE_SCHEDULES


def test_every_refine_schedule_is_a_bundled_preset_and_its_label_says_what_it_runs():
    assert list(REFINE_SCHEDULES.values()) == ["fast", "default", "residual", "polish"]
    for label, preset in REFINE_SCHEDULES.items():
        cfg = load_refine_config(preset)
        assert f"({cfg.iterations / 1000:g}K it, {cfg.resolution} px" in label
        assert (cfg.residual_features > 0) == ("residual" in label)
