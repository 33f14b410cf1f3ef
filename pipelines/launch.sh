#!/usr/bin/env bash
# Runs one of the example pipelines in this folder with gst-launch-1.0, printing the qoe-*
# messages as they come (-m):
#
#   bash pipelines/launch.sh file URI=file:///srv/video.mp4
#   bash pipelines/launch.sh rtsp-camera URI=rtsp://camera.local/stream STREAM=gate-1
#
# Each NAME.gst holds comment lines (#), `# default: VAR=value` lines, and one pipeline in
# gst-launch syntax with ${VAR} placeholders. The plugin is taken from QOE_PLUGIN_DIR, else
# from this checkout's target/release if built there, else from GStreamer's plugin path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=${1:?usage: launch.sh NAME [VAR=value ...]  (NAME: $(cd "$here" && ls *.gst | sed 's/\.gst$//' | tr '\n' ' '))}
shift
file="$here/$name.gst"
[ -f "$file" ] || { echo "launch.sh: no pipeline '$name' ($file)" >&2; exit 2; }

declare -A vars
while read -r assignment; do vars[${assignment%%=*}]=${assignment#*=}; done \
  < <(sed -n 's/^# default: *//p' "$file")
for assignment in "$@"; do
  case "$assignment" in
    *=*) vars[${assignment%%=*}]=${assignment#*=} ;;
    *) echo "launch.sh: '$assignment' is not VAR=value" >&2; exit 2 ;;
  esac
done

pipeline=$(grep -v '^[[:space:]]*#' "$file" | tr '\n' ' ')
for var in "${!vars[@]}"; do pipeline=${pipeline//\$\{$var\}/${vars[$var]}}; done
# A variable set empty (BUNDLE=) drops the property it fills: the element's default holds.
pipeline=$(sed -E 's/ [a-z-]+=( |$)/ /g' <<<"$pipeline")
if [[ "$pipeline" =~ \$\{([A-Z0-9_]+)\} ]]; then
  echo "launch.sh: $name needs ${BASH_REMATCH[1]}=..." >&2; exit 2
fi

plugin_dir=${QOE_PLUGIN_DIR:-}
if [ -z "$plugin_dir" ] && [ -f "$here/../target/release/libgstqoe.so" ]; then plugin_dir="$here/../target/release"; fi
if [ -n "$plugin_dir" ]; then export GST_PLUGIN_PATH="$plugin_dir${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"; fi

# shellcheck disable=SC2086  # the pipeline is meant to be split into gst-launch arguments
exec gst-launch-1.0 -m -e $pipeline
