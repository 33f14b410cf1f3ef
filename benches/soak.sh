#!/usr/bin/env bash
# Soak: a live 640x360 30 fps stream (videotestsrc, x264, decoded) watched by qoemonitor with
# the default bundle at default settings, its metrics endpoint scraped every second, for
# DURATION seconds (default 1800). Prints the process's resident memory every INTERVAL
# seconds (default 60) and, at the end, the growth from the first sample after warm-up (the
# second one) to the last: the goal is flat within 5 %.
#
#   bash benches/soak.sh [DURATION] [INTERVAL]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-1800}
interval=${2:-60}
ORT_DYLIB_PATH=$(bash pipelines/model-runtime.sh)
export ORT_DYLIB_PATH
bundle=$(bash pipelines/default-bundle.sh)
cargo build --release --quiet -p gst-plugin-qoe
port=$((20000 + RANDOM % 20000))
GST_PLUGIN_PATH=$PWD/target/release gst-launch-1.0 -q \
  videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 \
  ! x264enc tune=zerolatency speed-preset=ultrafast ! avdec_h264 \
  ! qoemonitor stream-id=soak bundle="$bundle" metrics-address=127.0.0.1:$port \
  ! fakesink sync=true >/dev/null &
pid=$!
trap 'kill $pid $scraper 2>/dev/null || true' EXIT
(
  while kill -0 $pid 2>/dev/null; do
    curl -s -o /dev/null "http://127.0.0.1:$port/metrics" || true
    sleep 1
  done
) &
scraper=$!
echo "soak: $duration s of live 640x360 30 fps with $(basename "$bundle"), RSS every $interval s"
samples=()
start=$(date +%s)
while :; do
  sleep "$interval"
  kill -0 $pid 2>/dev/null || { echo "soak: the pipeline ended early" >&2; exit 1; }
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  elapsed=$(( $(date +%s) - start ))
  frames=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^qoe_frames_total/ {print $2}')
  scored=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^qoe_windows_scored_total/ {print $2}')
  printf '%6d s  RSS %8d kB  frames %8s  windows scored %6s\n' "$elapsed" "$rss" "$frames" "$scored"
  samples+=("$rss")
  [ "$elapsed" -ge "$duration" ] && break
done
if [ ${#samples[@]} -ge 3 ]; then
  first=${samples[1]}
  last=${samples[-1]}
  echo "soak: RSS from ${first} kB (after warm-up) to ${last} kB: $(awk -v a="$first" -v b="$last" 'BEGIN {printf "%+.1f %%", 100 * (b - a) / a}')"
fi
