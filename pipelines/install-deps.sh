#!/usr/bin/env bash
# Installs what gst-qoe needs on Debian 12 (bookworm): GStreamer 1.22 with its development
# files and plugins, FFmpeg (test and demo videos), meson, and for the tests the RTSP server
# library (a local stand-in for cameras), Prometheus (a real scraper), rsvg-convert (reports
# rendered as a viewer sees them) and Python's venv (the
# onnx/ exporters, whose PyTorch comes from PyPI in tests/run.sh; g++ and Python's headers for
# torch.compile, which the micro training compiles its steps with). Needs root (or sudo).
# Rust >= 1.92 must already be installed (rustup); Debian's own cargo is too old.
set -euo pipefail

packages=(
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev pkg-config
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  libgstrtspserver-1.0-dev prometheus
  ffmpeg meson ninja-build python3-pip python3-venv unzip curl librsvg2-bin
  g++ python3-dev
)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gst-qoe: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "gst-qoe: cargo not found; install Rust >= 1.92 with rustup first" >&2
  exit 1
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "$rust_minor" -lt 92 ]; then
  echo "gst-qoe: $(rustc --version) is too old; Rust >= 1.92 is needed (edition 2024)" >&2
  exit 1
fi
echo "gst-qoe: dependencies ready ($(gst-launch-1.0 --version | head -1), $(rustc --version))" >&2
