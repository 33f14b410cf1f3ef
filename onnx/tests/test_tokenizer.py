"""The rebuilt Qwen2 tokenizer gives the spec's ids and agrees with tiktoken."""

import random
import unicodedata

import pytest
import tiktoken
from tokenizers import Tokenizer

from qoe_onnx import tokenizer as qt

# vqa2-inference-spec.md section 7 and 8.
SPEC_IDS = {
    "\n": [198],
    "system": [8948],
    "user": [872],
    "assistant": [77091],
    "You are a helpful assistant.": [2610, 525, 264, 10950, 17847, 13],
    "The quality of the video is": [785, 4271, 315, 279, 2766, 374],
    "How would you rate the quality of this video?\n": [4340, 1035, 498, 4379, 279, 4271, 315, 419, 2766, 5267],
    "The key frames of this video are:\n": [785, 1376, 14087, 315, 419, 2766, 525, 510],
    ". And the motion feature of the video is\n": [13, 1597, 279, 11379, 4565, 315, 279, 2766, 374, 198],
    ". How would you rate the quality of this video?": [13, 2585, 1035, 498, 4379, 279, 4271, 315, 419, 2766, 30],
    " high": [1550],
    " good": [1661],
    " fair": [6624],
    " poor": [7852],
    " low": [3347],
    " excellent": [9073],
    " bad": [3873],
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n": [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198],
    "<|im_start|>user": [151644, 872],
    "<|im_start|>assistant": [151644, 77091],
}


@pytest.fixture(scope="module")
def tok(qwen_tokenizer_path):
    return Tokenizer.from_file(str(qwen_tokenizer_path))


@pytest.fixture(scope="module")
def reference(qwen_tokenizer_path):
    ranks = qt.load_ranks(qwen_tokenizer_path.parent / "qwen.tiktoken")
    return tiktoken.Encoding(
        "qwen", pat_str=qt.QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens=qt.SPECIAL_TOKENS
    )


@pytest.mark.parametrize("text,ids", SPEC_IDS.items())
def test_spec_ids(tok, text, ids):
    assert tok.encode(text).ids == ids


def _samples(n: int) -> list[str]:
    rng = random.Random(7)
    pieces = [
        "The quality of the video is", " high", "  ", "\n\n", "\t", "1234567", "3.14", "x²", "ümlaut", "naïve",
        "日本語のテキスト", "中文视频质量", "한국어", "🙂👍🏽", "don't", "WE'LL", "<html>", "fn main() {}", "    indent",
        "stall 1.25 s", "-", "?\n", "ÀÉÎ", "\u00a0", "Ωμέγα", "Привет", "السلام", "a" * 40, " " * 17,
    ]
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))))
    # Every byte-level edge: single characters across the planes.
    out += [chr(c) for c in range(0x20, 0x3000, 7)]
    return out


def test_agrees_with_tiktoken(tok, reference):
    mismatches = []
    for text in _samples(3000):
        text = unicodedata.normalize("NFC", text)  # the JSON tokenizer normalises, tiktoken does not
        if tok.encode(text).ids != reference.encode(text, allowed_special="all"):
            mismatches.append(text)
    assert not mismatches, mismatches[:5]


def test_decodes_back(tok):
    text = "How would you rate the quality of this video?\nThe quality of the video is high"
    assert tok.decode(tok.encode(text).ids) == text


def test_bad_rank_file_is_named(tmp_path):
    bad = tmp_path / "qwen.tiktoken"
    bad.write_text("SGVsbG8= 0\nnot-a-line\n")
    with pytest.raises(ValueError, match=r"qwen.tiktoken:2"):
        qt.load_ranks(bad)
