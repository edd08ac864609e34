"""The gl backend drawing in the stage window's own OpenGL context, under Xvfb (Mesa llvmpipe):
its picture against the reference renderer, and the automatic choice. The app runs in a
subprocess (tests/app/gl_stage_app.py): Mesa takes no GLX window in a process that already
holds the headless EGL context of the gl renderer tests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spatialavatar_app.app.stage_gl import is_hardware, use_stage_gl

DRIVER = Path(__file__).parent / "gl_stage_app.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory, xvfb_display):
    import os

    out = tmp_path_factory.mktemp("gl_stage")
    proc = subprocess.run([sys.executable, str(DRIVER), str(out)], env={**os.environ, "DISPLAY": xvfb_display},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_the_stage_gl_picture_matches_the_reference_renderer(run):
    assert run["backend"] == "gl (in the stage)" and run["events"][0].startswith("ready: gl (in the stage)")
    for name in ("rest", "moved"):
        r = run[name]
        assert r["size"] == [192, 192] and r["coverage"] > 0.2
        assert r["mean"] <= 2.0, r              # the tolerance of the gl backend's own tests, 2/255 mean
        assert r["max"] <= 16.0, r


def test_on_llvmpipe_the_automatic_choice_keeps_the_native_renderer(run):
    assert "llvmpipe" in run["gl_renderer"] and run["auto_uses_gl"] is False


@pytest.mark.parametrize("name,hardware", [("llvmpipe (LLVM 15.0.6, 256 bits)", False), ("softpipe", False),
                                           ("Software Rasterizer", False), ("swrast", False),
                                           ("NVIDIA GeForce RTX 3090/PCIe/SSE2", True),
                                           ("Mesa Intel(R) UHD Graphics 620 (KBL GT2)", True),
                                           ("AMD Radeon RX 6800 (radeonsi, navi21, LLVM 15.0.7, DRM 3.49)", True),
                                           ("Apple M2", True), ("", False)])
def test_hardware_gl_renderers_are_told_from_software_ones(name, hardware):
    assert is_hardware(name) is hardware


def test_the_choice_follows_the_request_then_the_device_and_the_gl_renderer():
    import torch

    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert use_stage_gl(None, "NVIDIA GeForce RTX 3090/PCIe/SSE2", cpu)        # a GPU's OpenGL, no CUDA torch
    assert not use_stage_gl(None, "NVIDIA GeForce RTX 3090/PCIe/SSE2", cuda)   # gsplat renders there instead
    assert not use_stage_gl(None, "llvmpipe (LLVM 15.0.6, 256 bits)", cpu)
    assert use_stage_gl("gl", "llvmpipe (LLVM 15.0.6, 256 bits)", cpu)          # --renderer gl overrides
    assert not use_stage_gl("native", "Apple M2", cpu)
