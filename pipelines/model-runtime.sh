#!/usr/bin/env bash
# What quality scoring needs at run time, without PyTorch: ONNX Runtime (the PyPI wheel's
# libonnxruntime.so, loaded by the plugin through ORT_DYLIB_PATH) in .cache/venv, and the
# tokenizer.json of the committed tiny bundles (rebuilt here from the Qwen2 vocabulary in
# PyPI's dashscope wheel, not committed: 5 MB). Prints the library's path, for
#   export ORT_DYLIB_PATH=$(bash pipelines/model-runtime.sh)
# --library-only: the library alone, without the test fixtures (meson's install).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
# The same pins as onnx/requirements.txt, for the packages the runtime side uses.
grep -E '^(onnxruntime|tokenizers|tiktoken|numpy|pillow)==' onnx/requirements.txt | sed 's/ *#.*//' >"$pins"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir -r "$pins" >&2
if [ "${1:-}" != "--library-only" ]; then
  PYTHONPATH=onnx "$venv/bin/python" -m qoe_onnx.fixtures --out tests/fixtures --tokenizers >&2
fi
lib=$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
[ -f "$lib" ] || { echo "model-runtime.sh: libonnxruntime.so not found in $venv" >&2; exit 1; }
echo "$lib"
