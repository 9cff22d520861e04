#!/usr/bin/env bash
# The main job: set-up, then the demo on the bundled real data (extra arguments go to `demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/napari-seg-box demo "$@"
