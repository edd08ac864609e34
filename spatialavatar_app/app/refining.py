"""The refine controller: refine the avatar on the loaded video (a preset of presets/refine),
with progress, ETA, a live preview and Cancel; the result and its tracking are saved to the
export folder and the held-out PSNR is shown."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.service import RefineResult
from spatialavatar_app.app.opening import RefinedOn

if TYPE_CHECKING:
    from spatialavatar_app.app.app import App


@dataclass(frozen=True)
class Refined:
    result: RefineResult
    path: Path          # where the refined avatar was saved (its tracking beside it)
    video: Path


class RefineController:
    def __init__(self, app: "App") -> None:
        self.app = app

    def set_preset(self, preset: str) -> None:
        self.app.state.refine = replace(self.app.state.refine, preset=preset)

    def set_from_current(self, on: bool) -> None:
        self.app.state.refine = replace(self.app.state.refine, from_current=bool(on))

    def start(self, iterations: int | None = None) -> None:
        """Refine on the loaded video with the state's preset. Preset "polish" continues the avatar
        the last refine made on this video, on the tracking it trained on (from the current avatar)."""
        app = self.app
        if app.state.video is None:
            app.status("load a video first (Open video... or drop one on the stage)", error=True)
            return
        video, out_dir = app.state.video, app.state.export_dir
        preset, from_current = app.state.refine.preset, app.state.refine.from_current
        overrides = {} if iterations is None else {"iterations": iterations}
        tracking = None
        if preset == "polish":
            refined_on = app.opening.refined_on
            if refined_on is None or refined_on.video_stem != video.stem:
                app.status(f"polish continues an avatar refined on {video.name}: refine it with the full "
                           "schedule first", error=True)
                return
            tracking, from_current = refined_on.tracking, True
        service = app.service

        def work(r) -> Refined:
            def progress(stage, fraction, step):
                if step is None:
                    r.progress(fraction, stage)
                else:
                    r.progress(fraction, f"refining {step.iteration}/{step.total}", step)
            out_dir.mkdir(parents=True, exist_ok=True)
            result = service.refine_video(video, preset, from_current, progress, r.cancel,
                                          out_dir / f"{video.stem}.refine.ckpt", tracking, **overrides)
            base = f"{video.stem}.{'polished' if preset == 'polish' else 'refined'}"
            path, n = out_dir / f"{base}.savatar", 2
            while path.exists():                 # a later refine never replaces an earlier one
                path, n = out_dir / f"{base}-{n}.savatar", n + 1
            service.save_refined(path, result.tracking)
            return Refined(result, path, video)

        app.start_job("refine", work, f"refining on {video.name} ({preset}) ...", self._done)

    def _done(self, done: Refined) -> None:
        app, result = self.app, done.result
        app.opening.refined_on = RefinedOn(done.video.stem, result.tracking)
        app.opening.avatar_changed([app.opening.video_thumb])
        app.view.push_pose()
        app.panel.update_result(summary(result, done.path))
        app.status("refined: " + summary(result, done.path))

    def cancel(self) -> None:
        jobs = self.app.jobs
        if jobs.busy:
            jobs.cancel()
            self.app.status(f"cancelling {jobs.current} ...")
        else:
            self.app.status("nothing to cancel")


def summary(result: RefineResult, path: Path) -> str:
    """The held-out PSNR line the panel shows for a finished refine."""
    head = f"{result.psnr_start:.2f} -> {result.psnr_refined:.2f} dB"
    text = (f"held-out PSNR {result.portrait_start:.2f} -> {result.portrait_refined:.2f} dB in the portrait "
            f"matte, {head} in the head-and-neck matte" if result.portrait_start is not None else
            f"held-out PSNR {head}")
    return text + f" ({result.frames} frames at {result.width}x{result.height}); saved {path}"
