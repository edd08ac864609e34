"""A private X server for the tests that open real windows."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def xvfb_display():
    """DISPLAY of a fresh Xvfb (1600x1000x24), stopped after the session."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (scripts/setup.sh installs it with apt)")
    for n in range(140, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{n}").exists():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.skip(f"Xvfb :{n} did not start")
    yield f":{n}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def display_env(xvfb_display):
    return {**os.environ, "DISPLAY": xvfb_display}
