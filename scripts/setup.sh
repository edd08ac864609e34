#!/usr/bin/env bash
# Install SpatialAvatar-0 into ./.venv (idempotent: a second run only checks).
#   bash scripts/setup.sh          # the program
#   bash scripts/setup.sh --test   # the program, the test tools and the virtual screen for window tests
# System libraries are installed with apt-get when run as root and missing; otherwise the
# missing ones are named so you can install them.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need_pkgs=()
ldconfig -p 2>/dev/null | grep -q 'libGL.so.1 ' || need_pkgs+=(libgl1)      # OpenCV, OpenGL display
ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 ' || need_pkgs+=(libegl1)    # headless OpenGL
[ $want_test = 1 ] && ! command -v Xvfb >/dev/null && need_pkgs+=(xvfb)     # window tests
[ $want_test = 1 ] && ! command -v chromium >/dev/null && need_pkgs+=(chromium)   # the web player's browser tests
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "warning: please install these system packages: ${need_pkgs[*]} (e.g. sudo apt-get install ${need_pkgs[*]})" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
# mediapipe 0.10.21 is the last release whose wheel ships the FaceMesh and segmentation
# models; --no-deps because its other dependencies (jax, sentencepiece, sounddevice) are
# never imported by FaceMesh and its numpy pin is already satisfied above.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps mediapipe==0.10.21
