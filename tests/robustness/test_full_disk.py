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


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_full_disk_keeps_the_earlier_file(tmp_path, kind):
    out = tmp_path / {"bundle": "a.savatar", "ply": "a.ply", "refine checkpoint": "a.ckpt", "video": "a.mp4"}[kind]
    out.write_bytes(b"the user's earlier file")
    script = textwrap.dedent(f"""
        import json, resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from engine.headmodel.openhead import load_head_model
        model = load_head_model()
        OUT = Path({str(out)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
    """) + textwrap.indent(textwrap.dedent(WRITERS[kind]).strip(), "    ") + textwrap.dedent("""
        except OSError as e:
            print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        else:
            print(json.dumps({"error": None}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["error"] is not None, "the write succeeded under a 200 KB file-size limit"
    assert str(out) in res["message"] and "could not be written" in res["message"], res
    assert out.read_bytes() == b"the user's earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
