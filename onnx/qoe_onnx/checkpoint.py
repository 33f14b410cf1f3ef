"""Reading a checkpoint folder (safetensors shards + config.json) with errors that say what
is wrong and where."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open


class CheckpointError(Exception):
    """A checkpoint that cannot be exported, with the reason."""


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not JSON ({e})") from e


def shard_files(folder: Path) -> list[Path]:
    """The safetensors files of the checkpoint: the index's shards, or model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: no weight_map ({e})") from e
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise CheckpointError(f"{folder}: shard {missing[0]} listed in {index.name} is missing")
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def load_tensors(folder: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Every tensor whose key starts with one of ``prefixes``."""
    out: dict[str, torch.Tensor] = {}
    for shard in shard_files(folder):
        try:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(prefixes):
                        out[key] = f.get_tensor(key)
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{shard}: cannot read ({e})") from e
    return out


def take(tensors: dict[str, torch.Tensor], prefix: str, module: torch.nn.Module, what: str) -> None:
    """Loads ``module`` from the tensors under ``prefix``; names a missing key or a shape
    mismatch."""
    expected = module.state_dict()
    state = {}
    for name, ref in expected.items():
        key = prefix + name
        if key not in tensors:
            if name.endswith("num_batches_tracked"):
                state[name] = ref  # not needed for inference
                continue
            raise CheckpointError(f"missing key {key} ({what})")
        value = tensors[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"shape mismatch for {key} ({what}): checkpoint has {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )
        state[name] = value.to(ref.dtype)
    module.load_state_dict(state, strict=True)
