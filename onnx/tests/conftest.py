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


@pytest.fixture(scope="session")
def tiny_checkpoint(qwen_tokenizer_path, tmp_path_factory) -> Path:
    from qoe_onnx import fake

    return fake.write_vqa2(tmp_path_factory.mktemp("ckpt") / "vqa2-tiny", qwen_tokenizer_path, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from qoe_onnx import vqa2

    return vqa2.load(tiny_checkpoint)


@pytest.fixture(scope="session")
def export_bundle(tiny_checkpoint, tmp_path_factory):
    """Exports the tiny checkpoint (once per set of options)."""
    from qoe_onnx import export

    made = {}

    def make(variant="ugc", dtype="fp32", stall_format="none", external_data=False):
        key = (variant, dtype, stall_format, external_data)
        if key not in made:
            out = tmp_path_factory.mktemp("bundle") / f"{variant}-{dtype}-{stall_format}"
            export.export(tiny_checkpoint, out, variant, dtype, True, stall_format, external_data)
            made[key] = out
        return made[key]

    return make
