#!/usr/bin/env bash
# Renders a training report with headless Chromium into a PNG, for the README (run by hand; no
# test or CI step needs a browser).
#
#   scripts/report-screenshot.sh [REPORT_HTML] [OUTPUT_PNG]
#
# Defaults: runs/sentiment/report.html (left by `bertcls train --config configs/sentiment.toml`)
# into docs/report.png. Needs Debian's `chromium` (apt-get install -y chromium). WIDTH and
# HEIGHT set the window in CSS pixels (default 1280 x 3000: the whole page of a run with
# validation at two charts a row).
set -euo pipefail

report=${1:-runs/sentiment/report.html}
out=${2:-docs/report.png}
width=${WIDTH:-1280}
height=${HEIGHT:-3000}

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "error: no Chromium found; on Debian: apt-get install -y chromium" >&2
    exit 1
fi
if [ ! -f "$report" ]; then
    echo "error: $report not found; train first (bertcls train --config configs/sentiment.toml)" >&2
    exit 1
fi

# A private, throw-away profile: nothing of the user's browser is read or changed.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Chromium's sandbox refuses to run as root (containers); elsewhere it stays on.
sandbox=()
if [ "$(id -u)" = 0 ]; then
    sandbox=(--no-sandbox)
fi
mkdir -p "$(dirname "$out")"
"$browser" --headless "${sandbox[@]}" --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$profile" --window-size="$width,$height" \
    --screenshot="$(realpath "$out")" "file://$(realpath "$report")" 2>/dev/null
echo "$out"
