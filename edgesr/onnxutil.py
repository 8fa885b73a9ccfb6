"""ONNX facts every area agrees on, without torch: the output names of the model I/O convention, the
standard operator domains, and the operator inventory of a graph."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

__all__ = ["STANDARD_DOMAINS", "output_names", "op_counts", "strip_source_locations"]

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


def strip_source_locations(proto) -> int:
    """Remove what an exporter records about the Python source it traced: per-node stack traces, module
    names and class hierarchies (``pkg.torch.onnx.*`` metadata) and node doc strings. They name files and
    line numbers of the machine that exported, so without this the same model exported from two checkouts,
    or after an edit to a comment, would be two different artifacts (content hashes). Returns the number of
    entries removed. Graph-level metadata (edgesr's scales, source hash) is kept."""
    removed = 0

    def graphs(g):
        yield g
        for n in g.node:
            for a in n.attribute:
                if a.g.node:
                    yield from graphs(a.g)
                for sub in a.graphs:
                    yield from graphs(sub)

    for g in graphs(proto.graph):
        for n in g.node:
            keep = [m for m in n.metadata_props if not m.key.startswith("pkg.torch")]
            removed += len(n.metadata_props) - len(keep) + (1 if n.doc_string else 0)
            del n.metadata_props[:]
            n.metadata_props.extend(keep)
            n.doc_string = ""
    return removed
