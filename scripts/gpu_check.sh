#!/usr/bin/env bash
# The CUDA path, checked on a Linux machine with an NVIDIA GPU, CUDA's compiler (nvcc) and a CUDA
# build of PyTorch already installed, and no network. It never replaces torch or numpy.
#
#   bash scripts/gpu_check.sh [--wheels DIR]
#
# 1. A virtual environment .venv-gpu that sees the system's packages (its torch), with the
#    project's pure-Python requirements added when missing: from the wheels in DIR (pip
#    --no-index --find-links DIR), else they must be installed already.
# 2. gsplat's first CUDA build, timed; the gsplat backend tests on the GPU; `bench render
#    --backends gsplat native` at 256² and 512²; scripts/gpu_check.py (gsplat against native,
#    a 300-step refine on a clip it renders itself with known parameters, drive on that clip:
#    no mediapipe needed); the app for about 20 s under Xvfb on the gsplat backend (bench ui).
# 3. One table; exit 0 when every step passed, 1 when one failed, 2 when there is no CUDA.
# Logs: out/gpu_check/*.log. PYTHON=... picks the interpreter that has the CUDA torch.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    *) echo "usage: bash scripts/gpu_check.sh [--wheels DIR]" >&2; exit 64 ;;
  esac
done

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "gpu_check: no CUDA here ($PY: torch is missing, or torch.cuda.is_available() is False); nothing to check"
  exit 2
fi

LOG=out/gpu_check
mkdir -p "$LOG"
T_START=$(date +%s)
[ -x .venv-gpu/bin/python ] || "$PY" -m venv --system-site-packages .venv-gpu
VPY=.venv-gpu/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# module -> PyPI name of what the checked commands import (torch, numpy, OpenCV come from the system)
NEEDS="gsplat:gsplat ninja:ninja jaxtyping:jaxtyping rich:rich tyro:tyro tqdm:tqdm smplx:smplx plyfile:plyfile
imageio:imageio imageio_ffmpeg:imageio-ffmpeg skimage:scikit-image scipy:scipy xatlas:xatlas packaging:packaging
pytest:pytest hypothesis:hypothesis dearpygui:dearpygui glfw:glfw moderngl:moderngl PIL:pillow"
missing=()
for pair in $NEEDS; do
  "$VPY" -c "import ${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "$WHEELS" ]; then
    echo "installing from $WHEELS: ${missing[*]}"
    "$VPY" -m pip install -q --no-index --find-links "$WHEELS" "${missing[@]}" >"$LOG/install.log" 2>&1 \
      || { echo "gpu_check: could not install ${missing[*]} from $WHEELS (see $LOG/install.log)"; exit 1; }
  else
    echo "gpu_check: missing Python packages: ${missing[*]}; pass --wheels DIR with their wheels" >&2
    exit 1
  fi
fi
"$VPY" -c "import torch; assert torch.cuda.is_available(), 'the venv lost the CUDA torch'" || exit 1

declare -a NAMES RESULTS SECS WHAT
run_step() {            # run_step NAME SUMMARY_CMD -- COMMAND...
  local name=$1 summary=$2; shift 3
  local t0=$(date +%s%N)
  "$@" >"$LOG/$name.log" 2>&1
  local rc=$?
  local ds=$(( ($(date +%s%N) - t0) / 100000000 ))
  NAMES+=("$name"); SECS+=("$((ds / 10)).$((ds % 10))")
  if [ $rc = 0 ]; then RESULTS+=("ok"); else RESULTS+=("FAIL"); fi
  WHAT+=("$(eval "$summary" 2>/dev/null | head -c 300)")
}

run_step build "echo \"gsplat's CUDA extension ready (built now when it was not cached)\"" -- \
  "$VPY" -c "from engine.render.gsplat_backend import load_gsplat; load_gsplat()"
run_step gsplat_tests "tail -1 $LOG/gsplat_tests.log" -- \
  "$VPY" -m pytest -q -p no:cacheprovider tests/engine/render/test_gsplat_backend.py tests/test_device.py --device cuda
run_step bench_render "grep -E '(gsplat|native) +(256|512)² forward ' $LOG/bench_render.log | awk '{printf \"%s %s %s %s ms; \", \$1, \$2, \$3, \$5}'" -- \
  "$VPY" main.py bench render --device cuda --backends gsplat native --sizes 256 512 --runs 20
run_step check "grep -E '^(resolve|render|clip|refine|drive) ' $LOG/check.log | cut -c 26- | tr '\n' ';'" -- \
  "$VPY" scripts/gpu_check.py --device cuda --steps 300
if command -v Xvfb >/dev/null; then
  Xvfb :97 -screen 0 1600x1000x24 >/dev/null 2>&1 &
  XPID=$!
  sleep 1
  run_step app "grep -E '^ +(256|512) ' $LOG/app.log | awk '{printf \"%s²: UI %s FPS, avatar %s FPS; \", \$1, \$2, \$3}'" -- \
    env DISPLAY=:97 "$VPY" main.py bench ui --device cuda --sizes 256 512 --seconds 10
  kill $XPID 2>/dev/null
else
  NAMES+=("app"); RESULTS+=("FAIL"); SECS+=("0.0"); WHAT+=("no Xvfb on this machine (apt-get install xvfb)")
fi

echo
printf '%-13s %-6s %8s  %s\n' step result seconds measured
fail=0
for i in "${!NAMES[@]}"; do
  printf '%-13s %-6s %8s  %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECS[$i]}" "${WHAT[$i]}"
  [ "${RESULTS[$i]}" = ok ] || fail=1
done
echo "total $(( $(date +%s) - T_START )) s; logs in $LOG/"
exit $fail
