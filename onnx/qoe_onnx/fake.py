"""Tiny random checkpoints with the real VQA² key layout and config fields, for tests.

The decoder is hidden 64 with 2 layers, SigLIP is width 32 with 3 layers (2 kept), the 27×27
patch grid at 384 px is kept, and the SlowFast fast pathway has its real shapes. Weights are
random with a fixed seed; BatchNorm statistics are random too, so that folding them matters.

    python -m qoe_onnx.fake --out .cache/fake/vqa2-tiny --tokenizer tokenizer.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from . import vqa2

TINY_VQA2_CONFIG = {
    "architectures": ["LlavaQwenForCausalLM"],
    "model_type": "llava",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 152064,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "image_token_index": 151646,
    "mm_hidden_size": 32,
    "motion_positions": 256,
    "mm_projector_type": "mlp2x_gelu",
    "mm_spatial_pool_mode": "bilinear",
    "mm_newline_position": "one_token",
    "mm_patch_merge_type": "spatial_unpad",
    "mm_vision_tower": "google/siglip-so400m-patch14-384",
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "image_size": 384,
        "patch_size": 14,
    },
}


def randomize_module(module: nn.Module, g: torch.Generator) -> None:
    """Random weights that keep activations of order one: 1-D weights (norm scales) near 1,
    matrices and biases small, 3-D convolutions scaled by fan-in, random BatchNorm statistics
    (so that folding them matters)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.dim() > 1 else 0.1))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, nn.Conv3d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (0.5 / m.weight[0].numel()) ** 0.5)


def randomize(model: vqa2.VQA2, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for module in [model.keyframe, model.motion, model.motion_projector, model.llm]:
        randomize_module(module, g)
    model.image_newline = torch.randn(model.cfg.hidden_size, generator=g)
    model.lm_head = torch.randn(model.cfg.llm["vocab_size"], model.cfg.hidden_size, generator=g) * 0.5


def write_vqa2(folder: Path, tokenizer_json: Path, seed: int = 0, config: dict | None = None) -> Path:
    """A tiny VQA² checkpoint in two safetensors shards with an index, config.json and
    tokenizer.json."""
    config = config or TINY_VQA2_CONFIG
    model = vqa2.build(vqa2.VQA2Config.from_json(config))
    randomize(model, seed)
    tensors = vqa2.state_dict(model)
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(tensors)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(tokenizer_json, folder / "tokenizer.json")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json (python -m qoe_onnx.tokenizer)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_vqa2(args.out, args.tokenizer, args.seed)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
