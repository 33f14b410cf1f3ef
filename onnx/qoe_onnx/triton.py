"""Writes a Triton / KServe v2 model repository from a gst-qoe bundle: one server model per
graph of the bundle, which `qoemonitor inference-server=…` and `qoe-probe --inference-server`
then run remotely.

    python -m qoe_onnx.triton --bundle models/micro-vqa2-streaming --out REPO
    tritonserver --model-repository=REPO …

Each model is named `gstqoe-<digest>-<part>` (an ensemble member's `role@member` becomes
`role.member`). The digest is SHA-256 over the manifest and every graph file, the same as
the Rust side computes (`qoe_model::remote::bundle_digest`), so a probe refuses a server that
holds another bundle's graphs.

Backends:
- `onnxruntime` (default): Triton's ONNX Runtime backend runs `model.onnx` (NVIDIA's container,
  CPU or GPU; TensorRT can be enabled in the config's optimization section).
- `python`: a `model.py` that runs `model.onnx` with the `onnxruntime` package inside Triton's
  python backend, for servers built without the ONNX Runtime backend (as in this project's CI,
  which starts the `tritonserver` of PyPI's nvidia-pytriton).

Graphs whose inputs and outputs all lead with the same named dimension (the keyframe
encoders: one item per keyframe; a batching `decoder_score`: one row per window) get
`max_batch_size` and dynamic batching, so that the server merges different probes' requests
(Triton merges requests of equal shapes); the others take whole tensors (`max_batch_size: 0`).
Needs only the standard library.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

MANIFEST = "bundle.json"
DIGEST_DIGITS = 16
DATATYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "float16": "TYPE_FP16", "int32": "TYPE_INT32"}

PYTHON_MODEL = '''"""gst-qoe graph {part} of bundle {bundle} on onnxruntime, inside Triton's python backend."""
import json
import os

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(config.get("parameters", {{}}).get("threads", {{}}).get("string_value", "0"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feed = {{name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}}
                values = self.session.run(self.outputs, feed)
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name, np.ascontiguousarray(v)) for name, v in zip(self.outputs, values)]))
            except Exception as e:  # one bad request fails alone
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
'''


class RepositoryError(Exception):
    pass


def file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def external_data(graph: Path) -> Path:
    """Where `qoe_onnx.export --external-data` keeps a graph's weights."""
    return graph.with_name(graph.name + ".data")


def bundle_digest(bundle: Path) -> str:
    """SHA-256 over the manifest's bytes, then per part in name order: name, NUL, the graph
    file's SHA-256 and, when it has one, its external data file's."""
    manifest_path = bundle / MANIFEST
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    outer = hashlib.sha256(raw)
    for name in sorted(manifest["parts"]):
        graph = bundle / manifest["parts"][name]["file"]
        outer.update(name.encode())
        outer.update(b"\0")
        outer.update(file_sha256(graph))
        if external_data(graph).is_file():
            outer.update(file_sha256(external_data(graph)))
    return outer.hexdigest()


def model_name(digest: str, part: str) -> str:
    return f"gstqoe-{digest[:DIGEST_DIGITS]}-{part.replace('@', '.')}"


def batches(part: dict) -> bool:
    """Whether every input and output leads with the same named dimension (rank 2 or more)."""
    tensors = part["inputs"] + part["outputs"]
    first = {t["shape"][0] if t["shape"] else None for t in tensors}
    return len(first) == 1 and isinstance(next(iter(first)), str) and all(len(t["shape"]) >= 2 for t in tensors)


def dims(shape: list, skip_first: bool) -> str:
    values = [d if isinstance(d, int) else -1 for d in shape]
    return "[ " + ", ".join(str(v) for v in (values[1:] if skip_first else values)) + " ]"


def tensor_block(tensors: list, skip_first: bool, where: str) -> str:
    lines = []
    for t in tensors:
        if t["dtype"] not in DATATYPES:
            raise RepositoryError(f"{where}: {t['name']} has dtype {t['dtype']}, which this writer does not map")
        lines.append(f'  {{ name: "{t["name"]}" data_type: {DATATYPES[t["dtype"]]} dims: {dims(t["shape"], skip_first)} }}')
    return ",\n".join(lines)


def config(name: str, part: dict, backend: str, bundle_name: str, digest: str, instances: int,
           max_batch: int, threads: int, where: str) -> str:
    batched = batches(part) and max_batch > 0
    text = [f'name: "{name}"', f'backend: "{backend}"', f"max_batch_size: {max_batch if batched else 0}"]
    text.append("input [\n" + tensor_block(part["inputs"], batched, where) + "\n]")
    text.append("output [\n" + tensor_block(part["outputs"], batched, where) + "\n]")
    if batched:
        text.append("dynamic_batching { max_queue_delay_microseconds: 2000 }")
    text.append(f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]")
    for key, value in [("gst_qoe_bundle", bundle_name), ("gst_qoe_digest", digest), ("threads", str(threads))]:
        text.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(text) + "\n"


def place(src: Path, dst: Path) -> None:
    """Hard-links `src` to `dst` (graphs are hundreds of MB), copying across filesystems."""
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_repository(bundle: Path, out: Path, backend: str = "onnxruntime", instances: int = 1,
                     max_batch: int = 64, threads: int = 0) -> list[str]:
    """Writes one model per graph of `bundle` into `out`; returns the model names."""
    manifest_path = bundle / MANIFEST
    if not manifest_path.is_file():
        raise RepositoryError(f"{manifest_path}: no bundle manifest here")
    try:
        manifest = json.loads(manifest_path.read_text())
        parts = manifest["parts"]
        bundle_name = manifest["name"]
    except (ValueError, KeyError) as e:
        raise RepositoryError(f"{manifest_path}: not a gst-qoe bundle manifest: {e}") from e
    for part in parts.values():
        graph = bundle / part["file"]
        if not graph.is_file():
            raise RepositoryError(f"{graph}: missing (named by {manifest_path})")
    digest = bundle_digest(bundle)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for part_name in sorted(parts):
        part = parts[part_name]
        name = model_name(digest, part_name)
        folder = out / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(
            config(name, part, backend, bundle_name, digest, instances, max_batch, threads,
                   f"{manifest_path}: parts.{part_name}"))
        graph = bundle / part["file"]
        place(graph, folder / "1" / "model.onnx")
        if external_data(graph).is_file():  # found by the name the graph records
            place(external_data(graph), folder / "1" / external_data(graph).name)
        model_py = folder / "1" / "model.py"
        if backend == "python":
            model_py.write_text(PYTHON_MODEL.format(part=part_name, bundle=bundle_name))
        elif model_py.exists():
            model_py.unlink()
        names.append(name)
        print(f"{name}: {part_name} ({part['file']})", file=sys.stderr)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle folder")
    parser.add_argument("--out", required=True, type=Path, help="the model repository to write (created)")
    parser.add_argument("--backend", choices=["onnxruntime", "python"], default="onnxruntime")
    parser.add_argument("--instances", type=int, default=1, help="instances of each model (instance_group count)")
    parser.add_argument("--max-batch", type=int, default=64,
                        help="max_batch_size of graphs that batch (0: no server-side batching)")
    parser.add_argument("--threads", type=int, default=0,
                        help="python backend: ONNX Runtime intra-op threads per instance (0: its default)")
    args = parser.parse_args(argv)
    try:
        names = write_repository(args.bundle, args.out, args.backend, args.instances, args.max_batch, args.threads)
    except (RepositoryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(names)} models to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
