"""The model bundle: a folder with ``bundle.json``, ONNX graphs, raw constant tensors and a
tokenizer. ``onnx/README.md`` documents every field; :func:`validate` checks a bundle the way
the Rust runtime does, with errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMAT = "gst-qoe-bundle"
FORMAT_VERSION = 1  # what a bundle is written as unless it has an ensemble
# Version 2 adds "ensemble": member NAME's graphs are the parts ROLE@NAME for each of
# MEMBER_ROLES, the level probabilities averaged over the members (a version-1 reader would
# ignore the field and score with one model).
ENSEMBLE_FORMAT_VERSION = 2
# Version 3 adds parts' "batch": the graph takes rows of any streams in one call, every tensor
# leading with one named dimension, and a batching decoder_score takes "attention_mask" (a
# version-2 reader would not feed it).
BATCH_FORMAT_VERSION = 3
NEWEST_FORMAT_VERSION = BATCH_FORMAT_VERSION
MEMBER_ROLES = ("keyframe_encoder", "motion_encoder", "motion_projector")
MANIFEST = "bundle.json"
# level-logits: softmax over the level words' logits at one position, weighted sum (VQA²);
# generated-number: the answer is generated and its first number read (LMM-VQA);
# quality-head: a head scores each keyframe, averaged (CP-LLM); none: explanations only.
SCORE_MODES = ("level-logits", "generated-number", "quality-head", "none")
DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}
ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64"}


class BundleError(Exception):
    """A bundle that cannot be used, with the file and field at fault."""


def tensor(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def write_raw(folder: Path, file: str, array: np.ndarray) -> dict:
    """A constant tensor as raw little-endian values, described for the manifest."""
    array = np.ascontiguousarray(array)
    dtype = {np.dtype(v): k for k, v in DTYPES.items()}[array.dtype]
    (folder / file).write_bytes(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return {"file": file, "shape": list(array.shape), "dtype": dtype}


def read_raw(folder: Path, spec: dict) -> np.ndarray:
    path = folder / spec["file"]
    data = np.frombuffer(path.read_bytes(), dtype=np.dtype(DTYPES[spec["dtype"]]).newbyteorder("<"))
    expected = int(np.prod(spec["shape"]))
    if data.size != expected:
        raise BundleError(f"{path}: {data.size} values, the manifest's shape {spec['shape']} needs {expected}")
    return data.reshape(spec["shape"])


def load(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        raise BundleError(f"{folder}: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: not JSON ({e})") from e
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: field format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") not in range(1, NEWEST_FORMAT_VERSION + 1):
        raise BundleError(
            f"{path}: field format_version is {manifest.get('format_version')!r}; "
            f"this reader knows 1 to {NEWEST_FORMAT_VERSION}"
        )
    _check_ensemble(path, manifest)
    return manifest


def models(manifest: dict) -> list[str]:
    """The part-name suffix of each model a bundle scores with: "" for its own graphs, then
    "@NAME" for each ensemble member."""
    return [""] + [f"@{name}" for name in manifest.get("ensemble", [])]


def _check_ensemble(where: Path, manifest: dict) -> None:
    """The checks the Rust reader makes of "ensemble" (crates/qoe-model/src/bundle.rs)."""
    ensemble, parts = manifest.get("ensemble", []), manifest.get("parts", {})
    for role in parts:
        base, _, member = role.partition("@")
        if member and (base not in MEMBER_ROLES or member not in ensemble):
            raise BundleError(f"{where}: parts.{role}: {member!r} is not in ensemble, or {base} is not one of "
                              f"a member's graphs ({', '.join(MEMBER_ROLES)})")
    if not ensemble:
        return
    if manifest["format_version"] < ENSEMBLE_FORMAT_VERSION:
        raise BundleError(f"{where}: ensemble needs format_version {ENSEMBLE_FORMAT_VERSION}")
    if (manifest.get("score") or {}).get("mode") != "level-logits" or {"quality_head", "visual_projector"} & set(parts):
        raise BundleError(f"{where}: ensemble is for VQA² bundles scored by level-logits")
    for i, name in enumerate(ensemble):
        if not isinstance(name, str) or not name or "@" in name or "/" in name or name in ensemble[:i]:
            raise BundleError(f"{where}: ensemble[{i}] {name!r} must be a new, non-empty name without @ or /")
        for role in MEMBER_ROLES:
            if role not in parts or f"{role}@{name}" not in parts:
                raise BundleError(f"{where}: ensemble member {name!r} needs parts.{role} and parts.{role}@{name}")
            # The models' features are kept side by side and cut apart by equal widths.
            own, member = parts[role], parts[f"{role}@{name}"]
            if (own.get("inputs"), own.get("outputs")) != (member.get("inputs"), member.get("outputs")):
                raise BundleError(f"{where}: parts.{role}@{name} must declare the inputs and outputs of parts.{role}")


def _check_io(path: Path, field: str, declared: list[dict], actual: list) -> None:
    names = [d["name"] for d in declared]
    got = [a.name for a in actual]
    if names != got:
        raise BundleError(f"{path}: {field} are {got}, the manifest declares {names}")
    for d, a in zip(declared, actual):
        dtype = ONNX_DTYPES.get(a.type.tensor_type.elem_type, str(a.type.tensor_type.elem_type))
        if dtype != d["dtype"]:
            raise BundleError(f"{path}: {field[:-1]} {d['name']} is {dtype}, the manifest declares {d['dtype']}")
        dims = [x.dim_param or x.dim_value for x in a.type.tensor_type.shape.dim]
        if len(dims) != len(d["shape"]):
            raise BundleError(f"{path}: {field[:-1]} {d['name']} has rank {len(dims)}, the manifest declares {d['shape']}")
        for got_dim, want in zip(dims, d["shape"]):
            if isinstance(want, int) and isinstance(got_dim, int) and got_dim != want:
                raise BundleError(f"{path}: {field[:-1]} {d['name']} has shape {dims}, the manifest declares {d['shape']}")


def validate(folder: Path) -> dict:
    """Loads and checks a bundle: every file present and readable, every graph's inputs and
    outputs as declared, the tokenizer loadable, the level ids consistent with it."""
    import onnx
    from tokenizers import Tokenizer

    manifest = load(folder)
    where = folder / MANIFEST
    for name, part in manifest.get("parts", {}).items():
        path = folder / part.get("file", "")
        if not part.get("file") or not path.exists():
            raise BundleError(f"{where}: parts.{name}.file {part.get('file')!r} does not exist")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise BundleError(f"{path}: not a readable ONNX model ({e})") from e
        _check_io(path, "inputs", part["inputs"], list(model.graph.input))
        _check_io(path, "outputs", part["outputs"], list(model.graph.output))
    for name, spec in manifest.get("constants", {}).items():
        if not (folder / spec["file"]).exists():
            raise BundleError(f"{where}: constants.{name}.file {spec['file']!r} does not exist")
        read_raw(folder, spec)
    tokenizer_path = folder / manifest["tokenizer"]
    try:
        tok = Tokenizer.from_file(str(tokenizer_path))
    except Exception as e:
        raise BundleError(f"{tokenizer_path}: the tokenizer does not load ({e})") from e
    score = manifest.get("score") or {}
    if score.get("mode") not in SCORE_MODES:
        raise BundleError(f"{where}: score.mode is {score.get('mode')!r}; known modes: {', '.join(SCORE_MODES)}")
    if score.get("part") and score["part"] not in manifest.get("parts", {}):
        raise BundleError(f"{where}: score.part {score['part']!r} is not one of the parts")
    if score.get("mode") == "level-logits":
        for level in score["levels"]:
            ids = tok.encode(level["word"]).ids
            if ids != [level["token_id"]]:
                raise BundleError(
                    f"{where}: score.levels word {level['word']!r} has token_id {level['token_id']}, the tokenizer says {ids}"
                )
    return manifest
