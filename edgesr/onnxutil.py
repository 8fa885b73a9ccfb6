"""ONNX facts every area agrees on, without torch: the output names of the model I/O convention, the
standard operator domains, and the operator inventory of a graph."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

__all__ = ["STANDARD_DOMAINS", "output_names", "op_counts"]

STANDARD_DOMAINS = {"", "ai.onnx"}
"""Operators from these domains run in ONNX Runtime, TensorRT and OpenVINO; anything else is vendor-specific."""


def output_names(scales: list[int]) -> list[str]:
    """``sr`` for one scale, ``sr_x2``, ``sr_x4`` ... for several (the model I/O convention)."""
    return ["sr"] if len(scales) == 1 else [f"sr_x{s}" for s in scales]


def op_counts(model) -> dict[str, int]:
    """Operator type -> count over the main graph of an ONNX file or ``ModelProto``; operators outside the
    standard domains are named ``domain.Type``."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(Path(model)))
    return dict(sorted(Counter(n.op_type if n.domain in STANDARD_DOMAINS else f"{n.domain}.{n.op_type}"
                               for n in proto.graph.node).items()))
