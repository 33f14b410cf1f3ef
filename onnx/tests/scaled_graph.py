"""A second model for ensemble tests: an ONNX graph with every float weight scaled, so that a
bundle's model and this copy score apart.

    python onnx/tests/scaled_graph.py IN.onnx OUT.onnx [FACTOR]   # FACTOR 1.5 by default
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_scaled(source: Path, out: Path, factor: float = 1.5) -> None:
    """OUT: SOURCE with every float initializer times FACTOR."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(source))
    for init in graph.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(graph, str(out))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    write_scaled(Path(sys.argv[1]), Path(sys.argv[2]), *(float(f) for f in sys.argv[3:]))
