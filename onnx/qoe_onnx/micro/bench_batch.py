"""What batching saves in the default bundle's decoder: one decoder_score call of B rows
against B calls of one row, alternately, on one ONNX Runtime thread.

    python -m qoe_onnx.micro.bench_batch [--bundle models/micro-vqa2-streaming] [--tokens 21,30,45]

Rows are random embeddings after the cached prompt opening (the real prefix's token rows), as
many new tokens as a window carries: 21 with the UGC prompt, about 45 with the streaming
prompt's stall sentence. Prints the time of one row alone and the gain of each batch size, and
the largest logit difference between a row batched and alone; then the same gain for the
bundle's keyframe encoders (random pictures of their input size).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from . import smollm
    from .spec import PREFIX

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("models/micro-vqa2-streaming"))
    ap.add_argument("--tokens", default="21,30,45")
    ap.add_argument("--batches", default="1,2,4,8,16,32")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    decoder = ort.InferenceSession(str(args.bundle / "decoder_score.onnx"), so, providers=["CPUExecutionProvider"])
    embed = ort.InferenceSession(str(args.bundle / "embed_tokens.onnx"), so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(args.bundle / "tokenizer.json"))
    past_names = [i.name for i in decoder.get_inputs() if i.name.startswith("past_key_values.")]
    prefix = embed.run(None, {"rows": np.array(tok.encode(PREFIX).ids, np.int64)})[0]
    empty = {n: np.zeros((1, 3, 0, 64), np.float32) for n in past_names}
    mask = {"attention_mask": np.ones((1, len(prefix)), np.int64)}
    past = decoder.run(None, {"inputs_embeds": prefix[None], **mask, **empty})[1:]
    p = past[0].shape[2]
    rng = np.random.default_rng(0)

    def call(rows: list[np.ndarray]) -> np.ndarray:
        embeds, m = smollm.left_padded(rows, p)
        feeds = {"inputs_embeds": embeds, "attention_mask": m}
        feeds.update({n: np.repeat(v, len(rows), axis=0) for n, v in zip(past_names, past)})
        return decoder.run(["level_logits"], feeds)[0]

    def timed(f, rounds: int) -> float:
        f()
        started = time.perf_counter()
        for _ in range(rounds):
            f()
        return (time.perf_counter() - started) / rounds

    batches = [int(b) for b in args.batches.split(",")]
    print(f"decoder_score of {args.bundle}, {p}-token cached opening, one thread; gain = B calls of one row / one call of B rows")
    print("| new tokens | one row | " + " | ".join(f"B = {b}" for b in batches) + " | largest difference |")
    print("|---|---|" + "---|" * len(batches) + "---|")
    for n in [int(t) for t in args.tokens.split(",")]:
        cells, difference = [], 0.0
        for b in batches:
            rows = [rng.normal(0, 0.05, (n, prefix.shape[1])).astype(np.float32) for _ in range(b)]
            rounds = 3 if b <= 8 else 1
            batched = timed(lambda: call(rows), rounds)
            alone = timed(lambda: [call([r]) for r in rows], rounds)
            if b == 1:
                one = alone
            cells.append(f"{alone / batched:.2f}×")
            together = call(rows)
            for i, r in enumerate(rows):
                difference = max(difference, float(np.abs(together[i] - call([r])[0]).max()))
        print(f"| {n} | {one * 1000:.0f} ms | " + " | ".join(cells) + f" | {difference:.1e} |", flush=True)

    # The keyframe encoders take a batch of keyframes already: would merging streams' help?
    print("keyframe encoders: one call of B keyframes against B calls of one")
    print("| graph | one keyframe | " + " | ".join(f"B = {b}" for b in batches[1:]) + " |")
    print("|---|---|" + "---|" * len(batches[1:]))
    for graph in sorted(args.bundle.glob("**/keyframe_encoder.onnx")):
        encoder = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
        shape = [d for d in encoder.get_inputs()[0].shape[1:]]
        cells = []
        for b in batches[1:]:
            pixels = rng.uniform(-1, 1, (b, *shape)).astype(np.float32)
            batched = timed(lambda: encoder.run(None, {"pixel_values": pixels}), 3)
            alone = timed(lambda: [encoder.run(None, {"pixel_values": p[None]}) for p in pixels], 3)
            cells.append(f"{alone / batched:.2f}×")
        one = timed(lambda: encoder.run(None, {"pixel_values": pixels[:1]}), 5)
        print(f"| {graph.relative_to(args.bundle)} | {one * 1000:.1f} ms | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
