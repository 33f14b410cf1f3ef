import sys
from pathlib import Path

import pytest

ONNX_DIR = Path(__file__).resolve().parents[1]
REPO = ONNX_DIR.parent
sys.path.insert(0, str(ONNX_DIR))

CACHE = REPO / ".cache"


@pytest.fixture(scope="session")
def qwen_tokenizer_path() -> Path:
    """The Qwen2 tokenizer.json rebuilt from dashscope's ranks (made once, cached)."""
    from qoe_onnx import tokenizer

    out = CACHE / "qwen-tokenizer" / "tokenizer.json"
    if not out.exists():
        tokenizer.write(out, CACHE / "qwen-tokenizer")
    return out
