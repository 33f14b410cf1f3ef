#!/usr/bin/env bash
# The pipeline first (#35): a live 1280x720 30 fps stream (videotestsrc, x264, decoded)
# watched by qoemonitor with the default bundle, while LOADERS other pipelines (default 2) on
# the same machine score a real clip (bigbuckbunny.mp4, 720p) with the same bundle as fast
# as they can (leaky=false, no sync, looped). Prints, for each arm, the frames the live
# element saw in every 5 s interval, their average and the lowest, its stalls (there is no
# real stall: any is false) and its windows scored and dropped. Goal: average >= 29.8 fps,
# no 5 s interval below 29, no stall.
#
#   bash benches/under_load.sh [SECONDS] [ARM ...]
#
# An arm is LABEL=PROPERTIES, the qoemonitor properties of the live and the loading
# pipelines (default: the default settings, then model-priority=low, then model-priority=normal
# with threads=2, ONNX Runtime's own default on 2 cores). BASELINE_PLUGIN_PATH, if set, adds
# an arm "baseline" that runs another build of the plugin (a checkout's target/release) at its
# defaults, to compare with in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-45}
shift || true
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=("default=" "low=model-priority=low" "normal=model-priority=normal threads=2")
loaders=${LOADERS:-2}
ORT_DYLIB_PATH=$(bash pipelines/model-runtime.sh)
export ORT_DYLIB_PATH
bundle=$(bash pipelines/default-bundle.sh)
videos=$(bash pipelines/sample-videos.sh)
cargo build --release --quiet -p gst-plugin-qoe
plugin=$PWD/target/release
[ -n "${BASELINE_PLUGIN_PATH:-}" ] && arms=("baseline=" "${arms[@]}")

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop_all EXIT

# One arm: prints its line of figures.
run_arm() {
  local label=$1 props=$2 path=$plugin
  [ "$label" = baseline ] && path=$BASELINE_PLUGIN_PATH
  for _ in $(seq "$loaders"); do
    (
      while :; do
        GST_PLUGIN_PATH=$path gst-launch-1.0 -q filesrc location="$videos/bigbuckbunny.mp4" \
          ! decodebin ! qoemonitor bundle="$bundle" leaky=false $props ! fakesink sync=false \
          >/dev/null 2>&1 || sleep 1
      done
    ) &
    pids+=($!)
  done
  local port=$((20000 + RANDOM % 20000))
  GST_PLUGIN_PATH=$path gst-launch-1.0 -q \
    videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
    ! x264enc tune=zerolatency speed-preset=ultrafast ! avdec_h264 \
    ! qoemonitor stream-id=live bundle="$bundle" metrics-address=127.0.0.1:$port $props \
    ! fakesink sync=true >/dev/null 2>&1 &
  pids+=($!)
  local series='stream="live"'
  metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1{$series}" '$1 == m {print $2}'; }
  sleep 15 # start-up: three processes load the model at once; not counted
  local previous now since at rates=() t=0
  previous=$(metric qoe_frames_total)
  since=$(date +%s.%N)
  while [ "$t" -lt "$seconds" ]; do
    sleep 5
    t=$((t + 5))
    now=$(metric qoe_frames_total)
    at=$(date +%s.%N)
    rates+=("$(awk -v a="$previous" -v b="$now" -v s="$since" -v e="$at" 'BEGIN {printf "%.1f", (b - a) / (e - s)}')")
    previous=$now
    since=$at
  done
  local stalls scored dropped
  stalls=$(metric qoe_stalls_total)
  scored=$(metric qoe_windows_scored_total)
  dropped=$(metric qoe_windows_dropped_total)
  stop_all
  printf '%-9s avg %5s fps  lowest 5 s %5s  stalls %s  windows scored %s dropped %s  [%s]  (%s)\n' \
    "$label" \
    "$(printf '%s\n' "${rates[@]}" | awk '{s += $1} END {printf "%.2f", s / NR}')" \
    "$(printf '%s\n' "${rates[@]}" | sort -g | head -n 1)" \
    "${stalls:-0}" "${scored:-0}" "${dropped:-0}" "${rates[*]}" "${props:-defaults}"
}

echo "under load: live 720p30 with $(basename "$bundle") beside $loaders scoring pipelines, $seconds s an arm, $(nproc) cores"
for arm in "${arms[@]}"; do
  run_arm "${arm%%=*}" "${arm#*=}"
done
