"""`python main.py track`: portraits and videos to head parameters, camera and mattes."""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

from spatialavatar_app.cmd_shared import OnHeadModel


@dataclass
class Track(OnHeadModel):
    """Track portraits and videos: head-model parameters, camera and person matte for every frame.

    Writes <out>/<name>.npz (VHAP-style keys: rotation, translation, neck_pose, jaw_pose, eyes_pose,
    shape, expr, K, image_size, bbox, timestep_id, plus found/flagged/error_px/landmarks) and
    <name>_mattes.npz per sequence (a portrait's at its size, a video's at most 512 px a side). A bad
    input is reported and skipped; the batch goes on."""

    inputs: tyro.conf.Positional[list[Path]]
    """Portrait images and/or videos."""
    out: Path = Path("out/track")
    """Output folder."""
    same_person: bool = False
    """Fit the given portraits (1-4) together as one person with a shared shape; otherwise each
    portrait is its own sequence."""
    overlay: bool = False
    """Also write the fitted mesh drawn over the input: <name>_overlay.png or .mp4."""
    report: bool = False
    """Print a table of landmark reprojection error (pixels at 512 px image size) and speed."""
    max_frames: Optional[int] = None
    """Track at most this many frames of each video."""

    def run(self) -> None:
        from engine.io.media import MediaError, is_video

        model = self.load_model()
        videos = [p for p in self.inputs if is_video(p)]
        images = [p for p in self.inputs if not is_video(p)]
        jobs = [("video", [p]) for p in videos]
        if self.same_person and images:
            if len(images) > 4:
                raise ValueError(f"--same-person takes 1 to 4 portraits, got {len(images)}")
            jobs.insert(0, ("portraits", images))
        else:
            jobs = [("portrait", [p]) for p in images] + jobs
        rows, failed, taken = [], [], set()
        for kind, paths in jobs:
            name = paths[0].stem if len(paths) == 1 else "_".join(p.stem for p in paths)
            base, n = name, 2
            while name in taken:            # a/clip.mp4 and b/clip.mp4 must not write the same file
                name, n = f"{base}-{n}", n + 1
            taken.add(name)
            try:
                rows.append(self._one(kind, paths, model, name))
            except MediaError as e:
                failed.append(str(e))
                print(f"skipped {e}", file=sys.stderr)
        if self.report:
            print_report(rows)
        print(f"tracked {len(rows)} of {len(jobs)} inputs into {self.out}" + (f"; {len(failed)} skipped" if failed else ""))
        if not rows:
            raise SystemExit(1)

    def _one(self, kind: str, paths: list[Path], model, name: str) -> dict:
        from tqdm import tqdm

        from engine.track.tracker import track_portraits, track_video

        t0 = time.perf_counter()
        bar = tqdm(desc=f"tracking {paths[0].name}", unit="frame", leave=False)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            if kind == "video":
                tracked = dataclasses.replace(track_video(paths[0], model, progress=progress,
                                                          max_frames=self.max_frames), name=name)
            else:
                tracked = track_portraits(paths, model, progress=progress, name=name)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        for w in tracked.warnings:
            print(f"warning: {w}", file=sys.stderr)
        tracked.save(self.out)
        if self.overlay:
            write_overlays(tracked, model, self.out)
        err = tracked.error_px[tracked.found]
        return {"name": tracked.name, "kind": kind, "frames": len(tracked.found), "found": int(tracked.found.sum()),
                "flagged": int(tracked.flagged.sum()), "mean": float(err.mean()), "max": float(err.max()),
                "fps": len(tracked.found) / seconds}


def write_overlays(tracked, model, out: Path) -> None:
    """<name>_overlay.png per portrait or <name>_overlay.mp4 for a video."""
    from engine.io.media import VideoReader, read_image, write_video
    from engine.track.overlay import draw_overlay

    def frame(i: int, rgb: np.ndarray) -> np.ndarray:
        det = tracked.landmarks[i] if tracked.found[i] else None
        return draw_overlay(rgb, model, tracked.params.frame(i), tracked.K[i], det, tracked.fitted[i])

    if len(tracked.sources) == 1 and tracked.fps is not None:
        with VideoReader(tracked.sources[0]) as video:
            frames = (frame(i, rgb) for i, rgb in zip(range(len(tracked.found)), video))
            write_video(out / f"{tracked.name}_overlay.mp4", frames, tracked.fps)
        return
    import imageio.v3 as iio

    from engine.atomic import atomic_path

    for i, src in enumerate(tracked.sources):
        suffix = "" if len(tracked.sources) == 1 else f"_{i}"
        with atomic_path(out / f"{tracked.name}{suffix}_overlay.png") as tmp:
            iio.imwrite(tmp, frame(i, read_image(src)))


def print_report(rows: list[dict]) -> None:
    """The landmark-error table: pixels at 512 px image size, over frames where a face was found."""
    head = f"{'input':<28} {'kind':<9} {'frames':>6} {'found':>6} {'flagged':>7} {'mean px':>8} {'max px':>7} {'FPS':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name'][:28]:<28} {r['kind']:<9} {r['frames']:>6} {r['found']:>6} {r['flagged']:>7} "
              f"{r['mean']:>8.2f} {r['max']:>7.2f} {r['fps']:>6.1f}")
    print("(errors: mean distance of the fitted model's 478 landmarks to FaceMesh's, in pixels of the "
          "image scaled to 512 px on its longer side; FPS includes reading, detection, matting and fitting)")
