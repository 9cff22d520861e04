#!/usr/bin/env bash
# A screenshot of the demo's HTML report in headless Chromium (Debian's package; installed with
# apt-get when missing), for docs/images and for looking at the report as a reader would.
#   bash scripts/report_screenshot.sh [REPORT.html] [OUT.png]   (default: demo_output/report.html docs/images/report.png)
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-demo_output/report.html}
OUT=${2:-docs/images/report.png}
if ! command -v chromium >/dev/null 2>&1; then
  echo "[screenshot] installing chromium (apt-get)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1200,2500 --screenshot="$OUT" "file://$(realpath "$REPORT")" 2>/dev/null
echo "[screenshot] $OUT"
