#!/usr/bin/env bash
# Reproduce models/network_cpu_small.pt (the network trained on one CPU): track the shared videos and
# portrait groups into clips, train the cpu-small configuration with lp_d3_woman held out
# entirely, plot the curve, and evaluate both generators on the held-out video.
# Usage: scripts/train_cpu_small.sh [DATA_DIR] [OUT_DIR]   (~70 min on 2 cores; resumable)
set -euo pipefail
data=${1:-../shared/data}
out=${2:-out/train}
py=${PYTHON:-.venv/bin/python}
clips="$out/clips"
mkdir -p "$out"
p="$data/portraits"
groups=(group:portrait_obama="$p/obama_1.jpg,$p/obama_2.jpg" group:portrait_rose_leslie="$p/rose_leslie_1.jpg,$p/rose_leslie_2.jpg"
        group:portrait_st_woman_a="$p/st_woman_a_happy.png,$p/st_woman_a_sad.png")
for f in "$p"/*; do
  case "$(basename "$f")" in obama_*|rose_leslie_*|st_woman_a_*) ;; *) groups+=("group:portrait_$(basename "${f%.*}")=$f");; esac
done
"$py" main.py train prepare "$data"/videos/*.mp4 "${groups[@]}" --data "$clips"
"$py" main.py train phase1 --preset cpu-small --data "$clips" --out "$out/cpu_small" --holdout lp_d3_woman \
  2>&1 | tee -a "$out/cpu_small.log"
"$py" scripts/plot_training.py "$out/cpu_small/log.jsonl" "$out/cpu_small/curve.png"
for g in projective network; do
  "$py" main.py eval ff "$data/videos/lp_d3_woman.mp4" --generator $g --checkpoint "$out/cpu_small/network.pt" \
    --targets 20 --json "$out/eval_ff_$g.json" | tee "$out/eval_ff_$g.log"
done
