"""A full disk (RLIMIT_FSIZE in a child process) while writing each kind of output: the write
fails with an OSError naming the file, the file that was there is byte for byte as it was, and
no temporary file is left beside it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WRITERS = {
    "bundle": """
        from engine.generator.plain import plain_avatar
        from engine.io import save_avatar
        save_avatar(plain_avatar(model), OUT)""",
    "ply": """
        from engine.animate import AnimatedAvatar
        from engine.generator.plain import plain_avatar
        from engine.io import export_ply
        a = AnimatedAvatar(plain_avatar(model), model)
        export_ply(a.gaussians(a.neutral()), OUT)""",
    "refine checkpoint": """
        import torch
        from engine.refine.config import RefineConfig
        from engine.refine.refiner import _save_checkpoint
        maps = {"color": torch.rand(3, 256, 256), "opacity": torch.rand(1, 256, 256)}
        opt = torch.optim.Adam([torch.zeros(8, requires_grad=True)])
        _save_checkpoint(OUT, maps, opt, 1000, RefineConfig())""",
    "video": """
        import numpy as np
        from engine.io.media import write_video
        rng = np.random.default_rng(0)
        write_video(OUT, (rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(200)), 25.0)""",
}


OUTS = {"bundle": "a.savatar", "ply": "a.ply", "refine checkpoint": "a.ckpt", "video": "a.mp4"}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    """One child process tries every writer under a 200 KB file-size limit, each over an earlier
    file of the user's: {kind: {"error", "message"}}."""
    folder = tmp_path_factory.mktemp("disk")
    for name in OUTS.values():
        (folder / name).write_bytes(b"the user's earlier file")
    body = ""
    for kind, code in WRITERS.items():
        body += (f"OUT = Path({str(folder / OUTS[kind])!r})\ntry:\n"
                 + textwrap.indent(textwrap.dedent(code).strip(), "    ") + "\n"
                 + f"except OSError as e:\n    results[{kind!r}] = {{'error': type(e).__name__, 'message': str(e)}}\n"
                 + f"else:\n    results[{kind!r}] = {{'error': None, 'message': ''}}\n")
    script = textwrap.dedent(f"""
        import json, resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from engine.headmodel.openhead import load_head_model
        model = load_head_model()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        results = {{}}
    """) + body + "\nprint(json.dumps(results))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_full_disk_keeps_the_earlier_file(written, kind):
    folder, results = written
    out, res = folder / OUTS[kind], results[kind]
    assert res["error"] is not None, "the write succeeded under a 200 KB file-size limit"
    assert str(out) in res["message"] and "could not be written" in res["message"], res
    assert out.read_bytes() == b"the user's earlier file"
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTS.values())       # no temporary file left
