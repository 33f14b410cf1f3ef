#!/usr/bin/env bash
# The plugin as a user installs it: `meson setup/compile/install` into a scratch prefix, then
# from that prefix alone, with no ORT_DYLIB_PATH, no GST_QOE_BUNDLE_PATH and no --bundle:
# gst-inspect finds the element, a gst-launch pipeline with bundle=micro-vqa2-streaming and
# qoe-probe both score a real encoded video, with the bundle and ONNX Runtime the install
# put under the prefix; a bundle name that is nowhere fails with a message naming the places
# looked. Run by tests/run.sh; about 4 minutes from a cold cargo cache.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "meson-install: $*" >&2; exit 1; }

meson setup "$scratch/build" --prefix="$scratch/prefix" >"$scratch/setup.log" 2>&1 \
  || { cat "$scratch/setup.log" >&2; fail "meson setup failed"; }
meson compile -C "$scratch/build" >/dev/null
meson install -C "$scratch/build" >/dev/null
plugin=$(find "$scratch/prefix" -name libgstqoe.so)
probe="$scratch/prefix/bin/qoe-probe"
runtime=$(find "$scratch/prefix" -path '*/gst-qoe/libonnxruntime.so*' | head -n 1)
bundle=$(find "$scratch/prefix" -path '*/gst-qoe/bundles/micro-vqa2-streaming/bundle.json' | head -n 1)
[ -n "$plugin" ] && [ -x "$probe" ] || fail "the plugin or qoe-probe is missing under $scratch/prefix"
[ -n "$runtime" ] || fail "no ONNX Runtime installed under <libdir>/gst-qoe"
[ -n "$bundle" ] || fail "no default bundle installed under <datadir>/gst-qoe/bundles"
bundle=$(dirname "$bundle")

# Only what the prefix gives: no runtime or bundle variables, the registry of this run only.
installed() {
  env -u ORT_DYLIB_PATH -u GST_QOE_BUNDLE_PATH GST_PLUGIN_PATH="$(dirname "$plugin")" \
    GST_REGISTRY="$scratch/registry.bin" "$@"
}
installed gst-inspect-1.0 qoemonitor >/dev/null || fail "gst-inspect-1.0 does not find qoemonitor"
"$probe" --help >/dev/null

# A real encoded video (H.264 in MP4, 12 s of moving content).
clip="$scratch/clip.mp4"
gst-launch-1.0 -q videotestsrc pattern=ball num-buffers=360 \
  ! video/x-raw,width=640,height=360,framerate=30/1 ! x264enc speed-preset=veryfast \
  ! mp4mux ! filesink location="$clip"

# gst-launch: a quality message, from the installed bundle on the installed runtime.
installed env GST_DEBUG=qoemonitor:4 GST_DEBUG_NO_COLOR=1 gst-launch-1.0 -m \
  filesrc location="$clip" ! decodebin ! videoconvert \
  ! qoemonitor bundle=micro-vqa2-streaming leaky=false ! fakesink >"$scratch/launch.out" 2>"$scratch/launch.err" \
  || { cat "$scratch/launch.out" "$scratch/launch.err" >&2; fail "gst-launch with bundle=micro-vqa2-streaming failed"; }
grep -q 'qoe-quality' "$scratch/launch.out" || fail "gst-launch: no qoe-quality message"
grep -q "Bundle micro-vqa2-streaming ($bundle) on cpu, ONNX Runtime from $runtime" "$scratch/launch.err" \
  || { grep 'Bundle ' "$scratch/launch.err" >&2; fail "gst-launch: not the installed bundle and runtime"; }
echo "meson-install: gst-launch scored with $bundle on $runtime"

# qoe-probe with no --bundle: the default bundle.
installed env GST_DEBUG=qoemonitor:4 GST_DEBUG_NO_COLOR=1 "$probe" "$clip" >"$scratch/probe.out" 2>"$scratch/probe.err" \
  || { cat "$scratch/probe.out" "$scratch/probe.err" >&2; fail "qoe-probe failed"; }
grep -Eq '^ *quality: [0-9]+ windows, mean' "$scratch/probe.out" \
  || { cat "$scratch/probe.out" >&2; fail "qoe-probe printed no quality"; }
grep -q "Bundle micro-vqa2-streaming ($bundle) on cpu, ONNX Runtime from $runtime" "$scratch/probe.err" \
  || fail "qoe-probe: not the installed bundle and runtime"
echo "meson-install: qoe-probe:$(grep -E '^ *quality: ' "$scratch/probe.out")"

# A name that is nowhere: exit 1 and the places looked, among them the installed folder.
if installed gst-launch-1.0 videotestsrc num-buffers=5 ! qoemonitor bundle=no-such-bundle ! fakesink \
  >"$scratch/missing.out" 2>&1; then
  fail "bundle=no-such-bundle did not fail"
fi
grep -q "no bundle named no-such-bundle in .*$(dirname "$bundle")" "$scratch/missing.out" \
  || { cat "$scratch/missing.out" >&2; fail "bundle=no-such-bundle: the error does not name the places looked"; }
echo "meson install: ok ($plugin, $probe, $runtime, $bundle)"
