"""Opens the real app under X with the gl backend drawing in the stage's own context, and writes
what the tests check (run in a subprocess by tests/app/test_gl_stage.py):

    python tests/app/gl_stage_app.py OUT_DIR

result.json: the stage's GL_RENDERER, the automatic choice for it, and the mean/max absolute
difference (0-255 levels, inside the alpha) of the stage's gl picture against the reference
renderer's frame of the same posed Gaussians and camera, at rest and after a slider move;
stage.png: the window as shown."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(out: Path) -> None:
    import imageio.v3 as iio

    from engine.device import HOST
    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model
    from engine.render.reference import ReferenceRenderer
    from engine.service import AvatarService
    from spatialavatar_app.app.app import App
    from spatialavatar_app.app.stage_gl import use_stage_gl

    out.mkdir(parents=True, exist_ok=True)
    model = load_head_model()
    app = App(AvatarService(model, plain_avatar(model), renderer="native"), resolution=192, stage_size=(256, 256),
              stage_renderer="gl")
    app.open()
    res = {"gl_renderer": app.stage.gl_renderer, "auto_uses_gl": use_stage_gl(None, app.stage.gl_renderer, HOST),
           "backend": app.backend, "events": app.events[:1]}
    reference = ReferenceRenderer()

    def compare(name: str) -> None:
        app.settle()
        for _ in range(3):
            app.step()
        shown = app.last_frame                                  # read back from the stage's framebuffer
        with torch.no_grad():
            g, cam = app.service.pose()
            want = reference.render(g, cam)
        inside = want.alpha > 0.02
        diff = (torch.cat([shown.rgb, shown.alpha[..., None]], -1) -
                torch.cat([want.rgb, want.alpha[..., None]], -1)).abs()[inside] * 255
        res[name] = {"mean": float(diff.mean()), "max": float(diff.max()), "size": list(shown.alpha.shape),
                     "coverage": float(inside.float().mean())}

    compare("rest")
    app.view.set_weight("jawOpen", 0.8)
    app.view.set_pose("neck", 0, 25.0)
    compare("moved")
    iio.imwrite(out / "stage.png", app.stage.read())
    app.close()
    (out / "result.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
