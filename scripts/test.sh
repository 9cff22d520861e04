#!/usr/bin/env bash
# The test suite, as CI runs it: set-up, a virtual display (Xvfb + Mesa) for the napari widget
# tests, then pytest. Extra arguments go to pytest (e.g. scripts/test.sh tests/core -x).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=0
command -v xvfb-run >/dev/null 2>&1 || need_apt=1
for pkg in libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libdbus-1-3 libfontconfig1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  echo "[test] installing Xvfb and Mesa (apt-get)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 \
    libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
    libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libdbus-1-3 libfontconfig1 >/dev/null
fi
bash scripts/setup.sh
export MPLBACKEND=Agg
exec xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python -m pytest -ra "$@"
