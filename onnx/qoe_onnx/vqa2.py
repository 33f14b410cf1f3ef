"""The VQA² model (LLaVA-OneVision-Qwen2 + SlowFast motion branch) as separate PyTorch parts,
loaded straight from a checkpoint folder with the real key layout (spec sections 4-6, 10).

No LLaVA-NeXT code is used: SigLIP and Qwen2 come from transformers, the fast pathway from
:mod:`qoe_onnx.slowfast`, the projectors are two Linear layers with an exact GELU between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config, SiglipVisionConfig
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model
from transformers.models.siglip.modeling_siglip import SiglipVisionModel

from . import checkpoint as ck
from .slowfast import FEATURES, FastPathway

VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
# SigLIP so400m-patch14-384, as LLaVA-OneVision builds it locally (spec section 4). A
# checkpoint's config.json may carry "vision_config" to override it (the tiny test
# checkpoints do); the real VQA² configs only name the tower.
SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
)
MOTION_POSITIONS = 2000
POOLED_GRID = 14  # 27x27 patches pooled to ceil(27/2) = 14 per side


@dataclass
class VQA2Config:
    vision: dict
    vision_layers_kept: int
    mm_hidden_size: int
    llm: dict
    extra: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return self.llm["hidden_size"]

    @property
    def motion_positions(self) -> int:
        # 2000 in VQA²; the tiny test checkpoints declare fewer ("motion_positions").
        return self.extra.get("motion_positions", MOTION_POSITIONS)

    @property
    def grid(self) -> int:
        return self.vision["image_size"] // self.vision["patch_size"]

    @classmethod
    def from_json(cls, config: dict, path: str = "config.json") -> "VQA2Config":
        def need(key: str):
            if key not in config:
                raise ck.CheckpointError(f"{path}: missing field {key}")
            return config[key]

        projector = config.get("mm_projector_type", "mlp2x_gelu")
        if projector != "mlp2x_gelu":
            raise ck.CheckpointError(f"{path}: mm_projector_type {projector!r} is not supported (mlp2x_gelu only)")
        pool = config.get("mm_spatial_pool_mode", "bilinear")
        if pool != "bilinear":
            raise ck.CheckpointError(f"{path}: mm_spatial_pool_mode {pool!r} is not supported (bilinear only)")
        vision = {**SO400M, **config.get("vision_config", {})}
        llm = {
            k: need(k)
            for k in (
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "vocab_size",
            )
        }
        llm.update(
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=config.get("rope_theta", 1e6),
            max_position_embeddings=config.get("max_position_embeddings", 32768),
        )
        # LLaVA-OneVision drops SigLIP's last layer (spec section 4).
        return cls(vision, vision["num_hidden_layers"] - 1, need("mm_hidden_size"), llm, config)


def mlp2x_gelu(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_out), nn.GELU(), nn.Linear(dim_out, dim_out))


class KeyframeEncoder(nn.Module):
    """``pixel_values`` [K, 3, S, S] → ``keyframe_embeds`` [K, 196, H]: SigLIP without its last
    layer and without post-LN, the projector on all patches, then bilinear 27×27 → 14×14."""

    def __init__(self, cfg: VQA2Config) -> None:
        super().__init__()
        vcfg = SiglipVisionConfig(**{**cfg.vision, "num_hidden_layers": cfg.vision_layers_kept}, vision_use_head=False)
        vcfg._attn_implementation = "eager"
        self.vision = SiglipVisionModel(vcfg)
        self.mm_projector = mlp2x_gelu(cfg.mm_hidden_size, cfg.hidden_size)
        self.grid = cfg.grid
        self.pooled = (self.grid + 1) // 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = self.vision.embeddings(pixel_values)
        for layer in self.vision.encoder.layers:
            h = layer(h, attention_mask=None)
        h = self.mm_projector(h)  # the projector runs before pooling
        k, _, c = h.shape
        h = h.view(k, self.grid, self.grid, c).permute(0, 3, 1, 2)
        h = F.interpolate(h, size=(self.pooled, self.pooled), mode="bilinear", align_corners=False)
        return h.permute(0, 2, 3, 1).reshape(k, self.pooled * self.pooled, c)


class MotionProjector(nn.Module):
    """``motion_feat`` [T, 256] and ``positions`` [T] → ``motion_embeds`` [T, H]."""

    def __init__(self, cfg: VQA2Config) -> None:
        super().__init__()
        self.position_embedding = nn.Embedding(cfg.motion_positions, FEATURES)
        self.projector = mlp2x_gelu(FEATURES, cfg.hidden_size)

    def forward(self, motion_feat: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.projector(motion_feat + self.position_embedding(positions))


class ScoreDecoder(nn.Module):
    """``inputs_embeds`` [B, S, H] and ``attention_mask`` [B, S] → ``level_logits`` [B, L] at
    the last position: Qwen2 and only the level words' rows of ``lm_head`` (spec section 9).
    Rows are windows of any streams, left-padded to the longest (mask 0); positions count
    each row's real tokens, so a row scores as it would alone."""

    def __init__(self, llm: Qwen2Model, level_rows: torch.Tensor) -> None:
        super().__init__()
        self.llm = llm
        self.level_head = nn.Linear(level_rows.shape[1], level_rows.shape[0], bias=False)
        with torch.no_grad():
            self.level_head.weight.copy_(level_rows)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # An explicit mask (all ones for one row) also keeps transformers off its
        # packed-sequence detection, which does not export.
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.int64)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=positions,
                          use_cache=False).last_hidden_state
        return self.level_head(hidden[:, -1])


class GenerateDecoder(nn.Module):
    """One step of generation with a KV cache (spec section 11, ``decoder_model_merged``):
    ``inputs_embeds`` [1, S, H], ``attention_mask`` [1, P+S], ``position_ids`` [1, S] and
    ``past_key_values.{i}.key/value`` [1, KV, P, D] → ``logits`` [1, S, rows] and
    ``present.{i}.key/value`` [1, KV, P+S, D]. ``rows`` are the vocabulary rows the bundle
    keeps (all of them, or a subset)."""

    def __init__(self, llm: Qwen2Model, head_rows: torch.Tensor) -> None:
        super().__init__()
        self.llm = llm
        self.head = nn.Linear(head_rows.shape[1], head_rows.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(head_rows)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[i], past[i + 1]) for i in range(0, len(past), 2)])
        out = self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (self.head(out.last_hidden_state), *present)


def qwen2_config(cfg: VQA2Config) -> Qwen2Config:
    q = Qwen2Config(**cfg.llm, tie_word_embeddings=False, use_sliding_window=False)
    q._attn_implementation = "eager"
    return q


@dataclass
class VQA2:
    cfg: VQA2Config
    keyframe: KeyframeEncoder
    image_newline: torch.Tensor
    motion: FastPathway
    motion_projector: MotionProjector
    llm: Qwen2Model
    lm_head: torch.Tensor

    def level_rows(self, token_ids: list[int]) -> torch.Tensor:
        return self.lm_head[token_ids]


def build(cfg: VQA2Config) -> VQA2:
    """The parts with fresh weights (for the tiny test checkpoints)."""
    return VQA2(
        cfg,
        KeyframeEncoder(cfg).eval(),
        torch.zeros(cfg.hidden_size),
        FastPathway().eval(),
        MotionProjector(cfg).eval(),
        Qwen2Model(qwen2_config(cfg)).eval(),
        torch.zeros(cfg.llm["vocab_size"], cfg.hidden_size),
    )


def state_dict(model: VQA2) -> dict[str, torch.Tensor]:
    """The checkpoint layout of a LLaVA-OneVision-Qwen2 VQA² model."""
    out = {}
    vision = SiglipVisionModel(
        SiglipVisionConfig(**{**model.cfg.vision, "num_hidden_layers": model.cfg.vision_layers_kept}, vision_use_head=False)
    )
    vision.load_state_dict(model.keyframe.vision.state_dict())
    for k, v in vision.state_dict().items():
        out[VISION_PREFIX + k] = v
    for k, v in model.keyframe.mm_projector.state_dict().items():
        out["model.mm_projector." + k] = v
    out["model.image_newline"] = model.image_newline
    for k, v in model.motion.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            out["model.slowfast." + k] = v
    out["model.slowfast.position_embedding.weight"] = model.motion_projector.position_embedding.weight
    for k, v in model.motion_projector.projector.state_dict().items():
        out["model.slowfast_projector." + k] = v
    for k, v in model.llm.state_dict().items():
        out["model." + k] = v
    out["lm_head.weight"] = model.lm_head
    return {k: v.detach().contiguous() for k, v in out.items()}


def load(folder: Path) -> VQA2:
    """Loads every part from a checkpoint folder; errors name the file, key or shape."""
    cfg = VQA2Config.from_json(ck.read_config(folder), str(folder / "config.json"))
    tensors = ck.load_tensors(folder, ("model.", "lm_head."))
    model = build(cfg)
    ck.take(tensors, VISION_PREFIX + "embeddings.", model.keyframe.vision.embeddings, "SigLIP embeddings")
    ck.take(tensors, VISION_PREFIX + "encoder.", model.keyframe.vision.encoder, "SigLIP encoder")
    ck.take(tensors, "model.mm_projector.", model.keyframe.mm_projector, "keyframe projector")
    ck.take(tensors, "model.slowfast.", model.motion, "SlowFast fast pathway")
    ck.take(tensors, "model.slowfast.position_embedding.", model.motion_projector.position_embedding, "motion positions")
    ck.take(tensors, "model.slowfast_projector.", model.motion_projector.projector, "motion projector")
    ck.take(tensors, "model.", model.llm, "Qwen2 decoder")
    for key in ("model.image_newline", "lm_head.weight"):
        if key not in tensors:
            raise ck.CheckpointError(f"missing key {key}")
    model.image_newline = tensors["model.image_newline"].float()
    model.lm_head = tensors["lm_head.weight"].float()
    if tuple(model.image_newline.shape) != (cfg.hidden_size,):
        raise ck.CheckpointError(
            f"shape mismatch for model.image_newline: {tuple(model.image_newline.shape)}, expected ({cfg.hidden_size},)"
        )
    if tuple(model.lm_head.shape) != (cfg.llm["vocab_size"], cfg.hidden_size):
        raise ck.CheckpointError(
            f"shape mismatch for lm_head.weight: {tuple(model.lm_head.shape)}, "
            f"expected ({cfg.llm['vocab_size']}, {cfg.hidden_size})"
        )
    return model
