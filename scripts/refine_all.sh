#!/usr/bin/env bash
# Refine every video in a folder with a preset, then evaluate each on its held-out frames
# (docs/refine.md's tables). Usage: scripts/refine_all.sh [VIDEO_DIR] [OUT_DIR] [PRESET]
set -euo pipefail
videos=${1:-../shared/data/videos}
out=${2:-out/refine_all}
preset=${3:-default}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
for v in "$videos"/*.mp4; do
  name=$(basename "$v" .mp4)
  echo "== $name" >&2
  /usr/bin/time -f "refine wall %e s" "$py" main.py refine "$v" --out "$out/$name.savatar" --preset "$preset" \
    > "$out/$name.refine.log" 2>&1
  "$py" main.py eval refine "$out/$name.savatar" "$v" --side-by-side "$out/$name.heldout.mp4" \
    > "$out/$name.eval.log" 2>&1
  grep -E "held-out|feed-forward|refined" "$out/$name.eval.log" >&2
done
