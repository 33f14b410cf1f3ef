#!/usr/bin/env bash
# A Triton Inference Server on this machine's CPU, from PyPI (nvidia-pytriton ships tritonserver
# with its python backend; no container, no GPU). It is how this project tests remote
# inference; a GPU pool runs NVIDIA's container instead (README, "Running a GPU pool").
#
#   pipelines/triton-server.sh setup              # .cache/triton: the server and onnxruntime
#   pipelines/triton-server.sh repo BUNDLE REPO [ARGS]  # a python-backend repository of BUNDLE
#                                                 # (ARGS: more options of qoe_onnx.triton)
#   pipelines/triton-server.sh serve REPO [PORT [GRPC_PORT]]  # HTTP on 127.0.0.1:PORT (8000),
#                                                 # gRPC on GRPC_PORT (8001), in the foreground
#
# Then: qoe-probe --bundle BUNDLE --inference-server http://127.0.0.1:PORT CLIP
#   (or grpc://127.0.0.1:GRPC_PORT)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.cache/triton"
site="$venv/lib/python3.11/site-packages"

usage() { sed -n '6,11p' "$0" | sed 's/^# *//' >&2; exit 2; }

case "${1:-}" in
  setup)
    # The python backend's stub links Debian's libpython3.11: the venv must be Debian's Python.
    python=/usr/bin/python3
    [ -x "$python" ] || { echo "error: $python missing (apt install python3 python3-venv)" >&2; exit 1; }
    if [ ! -x "$venv/bin/python" ]; then
      "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir \
      nvidia-pytriton==0.7.0 onnxruntime==1.31.1
    backends="$venv/backends/python"
    mkdir -p "$backends"
    cp "$site"/pytriton/tritonserver/backends/python/{libtriton_python.so,triton_python_backend_utils.py} "$backends/"
    cp "$site"/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub "$backends/"
    echo "triton: $("$site"/pytriton/tritonserver/bin/tritonserver --version 2>/dev/null | head -1 || echo installed) in $venv" >&2
    ;;
  repo)
    [ $# -ge 3 ] || usage
    [ -x "$venv/bin/python" ] || { echo "error: $venv missing; run $0 setup" >&2; exit 1; }
    PYTHONPATH="$root/onnx" "$venv/bin/python" -m qoe_onnx.triton --bundle "$2" --out "$3" --backend python "${@:4}"
    ;;
  serve)
    [ $# -ge 2 ] || usage
    port="${3:-8000}"
    grpc_port="${4:-8001}"
    [ -x "$site/pytriton/tritonserver/bin/tritonserver" ] || { echo "error: no tritonserver in $venv; run $0 setup" >&2; exit 1; }
    # The stub finds its packages through the python3 on PATH, not PYTHONPATH.
    export PATH="$venv/bin:$PATH"
    export LD_LIBRARY_PATH="$site/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    exec "$site/pytriton/tritonserver/bin/tritonserver" --model-repository="$2" \
      --backend-directory="$venv/backends" --http-address=127.0.0.1 --http-port="$port" \
      --grpc-address=127.0.0.1 --grpc-port="$grpc_port" --allow-metrics=false \
      --log-verbose=0
    ;;
  *) usage ;;
esac
