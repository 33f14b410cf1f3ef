"""Scoring with a bundle on ONNX Runtime, driven by ``bundle.json`` alone: the executable
description of what the Rust runtime does. Tests compare it with :mod:`qoe_onnx.reference`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from . import bundle
from .reference import fill, keyframe_indices, motion_indices, preprocess, preprocess_normalised, stall_text


class Runner:
    def __init__(self, folder: Path, threads: int = 2) -> None:
        self.folder = folder
        self.manifest = bundle.validate(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.sessions = {
            name: ort.InferenceSession(str(folder / part["file"]), options, providers=["CPUExecutionProvider"])
            for name, part in self.manifest["parts"].items()
        }
        self.tokenizer = Tokenizer.from_file(str(folder / self.manifest["tokenizer"]))
        self.constants = {k: bundle.read_raw(folder, v) for k, v in self.manifest["constants"].items()}
        vocab = self.manifest["vocabulary"] or {"rows": "none"}
        self.rows = None
        if vocab["rows"] == "subset":
            self.rows = {int(t): i for i, t in enumerate(self.constants[vocab["rows_constant"]])}

    def run(self, part: str, **inputs) -> np.ndarray:
        return self.sessions[part].run(None, inputs)[0]

    def embed(self, ids: list[int]) -> np.ndarray:
        if self.rows is not None:
            missing = [i for i in ids if i not in self.rows]
            if missing:
                raise bundle.BundleError(f"token {missing[0]} is not in this bundle's vocabulary subset")
            ids = [self.rows[i] for i in ids]
        return self.run("token_embedding", rows=np.array(ids, dtype=np.int64))

    def sequence(self, frames: np.ndarray, fps: float, stall: dict | None = None, question: str = "") -> dict:
        """The embedded prompt with its keyframe and motion blocks."""
        m = self.manifest
        size = m["preprocess"]["keyframe_encoder"]["size"][0]
        motion = m["sampling"]["motion"]
        kf_idx = keyframe_indices(len(frames), fps)
        mo_idx = motion_indices(len(frames), motion["stride"], motion["trim_before_stride"], motion["multiple"])
        if not mo_idx:
            raise ValueError(f"{len(frames)} frames give no motion frames under this bundle's sampling {motion}")
        keyframe_embeds = self.run("keyframe_encoder", pixel_values=preprocess(frames[kf_idx], size).numpy())
        kf_block = np.concatenate([keyframe_embeds.reshape(-1, keyframe_embeds.shape[-1]), self.constants["image_newline"][None]])
        pixels = preprocess(frames[mo_idx], size).numpy()
        motion_feat = self.run("motion_encoder", frames=pixels.transpose(1, 0, 2, 3)[None])
        motion_embeds = self.run(
            "motion_projector", motion_feat=motion_feat, positions=np.arange(len(mo_idx), dtype=np.int64)
        )
        blocks = {"keyframes": kf_block, "motion": motion_embeds}
        prompt = m["prompt"]
        fields = {
            "K": len(kf_idx),
            "T": len(mo_idx),
            "question": question,
            "stall": stall_text(prompt["stall_format"], stall, prompt["stall_text"]),
        }
        pieces = []
        for segment in prompt["segments"]:
            if "embed" in segment:
                pieces.append(blocks[segment["embed"]])
            else:
                ids = self.tokenizer.encode(fill(segment["text"], fields)).ids
                if ids:
                    pieces.append(self.embed(ids))
        return {
            "sequence": np.concatenate(pieces),
            "keyframe_embeds": keyframe_embeds,
            "motion_feat": motion_feat,
            "motion_embeds": motion_embeds,
        }

    def pixels(self, part: str, frames: np.ndarray) -> np.ndarray:
        pre = self.manifest["preprocess"][part]
        return preprocess_normalised(frames, pre["size"][0], pre["mean"], pre["std"]).numpy()

    def score(self, frames: np.ndarray, fps: float, stall: dict | None = None, question: str = "") -> dict:
        mode = self.manifest["score"]["mode"]
        if mode == "quality-head":
            return self.score_with_head(frames, fps)
        if mode == "generated-number":
            return self.score_by_answer(frames, fps)
        if mode != "level-logits":
            raise bundle.BundleError(f"{self.folder}: this bundle does not score (score.mode {mode!r})")
        built = self.sequence(frames, fps, stall, question)
        sequence = built["sequence"]
        score = self.manifest["score"]
        # Under a causal mask nothing after the logit position affects it.
        keep = len(sequence) + score["logit_position"] + 1
        embeds = sequence[None, :keep]
        # A batching decoder takes a mask: one row, every token real.
        mask = ({"attention_mask": np.ones(embeds.shape[:2], np.int64)}
                if any(i["name"] == "attention_mask" for i in self.manifest["parts"]["decoder_score"]["inputs"]) else {})
        logits = self.run("decoder_score", inputs_embeds=embeds, **mask)[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        weights = np.array([level["weight"] for level in score["levels"]])
        return {
            "score": float(probs @ weights),
            "probabilities": probs.tolist(),
            "level_logits": logits.tolist(),
            "keyframe_embeds": built["keyframe_embeds"],
            "motion_feat": built["motion_feat"],
            "motion_embeds": built["motion_embeds"],
            "sequence_length": len(sequence),
        }

    def score_with_head(self, frames: np.ndarray, fps: float) -> dict:
        """CP-LLM: both encoders on each keyframe, the head's per-frame scores, their mean."""
        kf = keyframe_indices(len(frames), fps)
        high = self.run("high_level_encoder", pixel_values=self.pixels("high_level_encoder", frames[kf]))
        low = self.run("low_level_encoder", pixel_values=self.pixels("low_level_encoder", frames[kf]))
        per_frame = self.run("quality_head", high_level=high, low_level=low)
        return {"score": float(per_frame.astype(np.float64).mean()), "frame_scores": per_frame, "keyframe_indices": kf}

    def lmm_visual(self, frames: np.ndarray, fps: float) -> np.ndarray:
        from .families import lmm_chunk_indices, lmm_keyframe_indices

        count = self.manifest["sampling"]["keyframes"]["count"]
        kf = lmm_keyframe_indices(len(frames), fps, count)
        chunks = lmm_chunk_indices(len(frames), fps)
        clip_tokens = self.run("keyframe_encoder", pixel_values=self.pixels("keyframe_encoder", frames[kf]))
        chunk_pixels = np.stack([self.pixels("motion_encoder", frames[c]).transpose(1, 0, 2, 3) for c in chunks])
        motion_tokens = self.run("motion_encoder", chunks=chunk_pixels)
        per_frame = motion_tokens[[min(i, len(chunks) - 1) for i in range(count)]]
        return self.run("visual_projector", clip_tokens=clip_tokens, motion_tokens=per_frame)

    def score_by_answer(self, frames: np.ndarray, fps: float) -> dict:
        """LMM-VQA: the answer is generated; its first number is the score."""
        from .families import parse_number

        visual = self.lmm_visual(frames, fps)
        pieces = []
        for segment in self.manifest["prompt"]["segments"]:
            pieces.append(visual if "embed" in segment else self.embed(self.tokenizer.encode(segment["text"]).ids))
        score = self.manifest["score"]
        ids = self.greedy(np.concatenate(pieces), score["max_new_tokens"])
        text = self.tokenizer.decode(ids)
        return {"score": parse_number(text, *score["range"]), "generated_ids": ids, "text": text, "visual": visual}

    def generate(
        self, frames: np.ndarray, fps: float, question: str, max_new_tokens: int = 32, step_logits: list | None = None
    ) -> list[int]:
        """Greedy generation with the KV cache: a prefill, then one token per step. Each step's
        logits (over the bundle's vocabulary rows) go to ``step_logits`` if given."""
        return self.greedy(self.sequence(frames, fps, None, question)["sequence"], max_new_tokens, step_logits)

    def greedy(self, sequence: np.ndarray, max_new_tokens: int, step_logits: list | None = None) -> list[int]:
        part = self.manifest["parts"]["decoder_generate"]
        past_specs = [i for i in part["inputs"] if i["name"].startswith("past_key_values.")]
        past = {i["name"]: np.zeros([1, i["shape"][1], 0, i["shape"][3]], np.float32) for i in past_specs}
        rows = None if self.rows is None else {row: token for token, row in self.rows.items()}
        eos = set(self.manifest["decoder"]["generation"]["eos_token_ids"])
        embeds, start, out = sequence[None], 0, []
        for _ in range(max_new_tokens):
            total = start + embeds.shape[1]
            results = self.sessions["decoder_generate"].run(
                None,
                {
                    "inputs_embeds": embeds.astype(np.float32),
                    "attention_mask": np.ones((1, total), np.int64),
                    "position_ids": np.arange(start, total, dtype=np.int64)[None],
                    **past,
                },
            )
            row = int(np.argmax(results[0][0, -1]))
            if step_logits is not None:
                step_logits.append(results[0][0, -1])
            token = row if rows is None else rows[row]
            if token in eos:
                break
            out.append(token)
            past = {spec["name"]: results[1 + k] for k, spec in enumerate(past_specs)}
            embeds, start = self.embed([token])[None], total
        return out
