"""ONNX facts every area agrees on, without torch: the output names of the model I/O convention, the
standard operator domains, and the operator inventory of a graph."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

__all__ = ["STANDARD_DOMAINS", "output_names", "op_counts", "strip_source_locations", "shuffle_as_conv_transpose",
           "keep_outputs", "one_output",
           "pad_image_tail", "shuffle_nodes", "u8s8_pair_sum_max", "INT16_MAX"]

STANDARD_DOMAINS = {"", "ai.onnx"}
"""Operators from these domains run in ONNX Runtime, TensorRT and OpenVINO; anything else is vendor-specific."""


def output_names(scales: list[int]) -> list[str]:
    """``sr`` for one scale, ``sr_x2``, ``sr_x4`` ... for several (the model I/O convention)."""
    return ["sr"] if len(scales) == 1 else [f"sr_x{s}" for s in scales]


def keep_outputs(graph, keep: set[str]) -> None:
    """Remove, in place, the nodes and initializers that none of the ``keep`` tensors depends on (the heads of
    the outputs left out); the caller sets ``graph.output``."""
    needed, live = set(keep), []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed |= set(node.input)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    used = {i for n in graph.node for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def one_output(source, index: int) -> bytes:
    """The graph ``source`` (a path or serialized bytes) with only its output ``index`` and what it depends on:
    what a runtime runs for one head of a multi-scale artifact. Needs the ``onnx`` package."""
    import onnx

    proto = onnx.load_from_string(source) if isinstance(source, (bytes, bytearray)) else onnx.load(str(source))
    out = proto.graph.output[index]
    keep = onnx.ValueInfoProto()
    keep.CopyFrom(out)
    keep_outputs(proto.graph, {out.name})
    del proto.graph.output[:]
    proto.graph.output.append(keep)
    return proto.SerializeToString()


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


def shuffle_as_conv_transpose(proto) -> int:
    """Replace every DepthToSpace (pixel shuffle) of ``proto`` in place with the ConvTranspose that computes
    exactly the same rearrangement: C input channels to C / r^2 outputs, kernel r x r, stride r, weights 1
    where input channel c r^2 + p r + q meets output pixel (p, q) of colour c (CRD order; DCR: (p r + q)
    C/r^2 + c), 0 elsewhere. Sums of one term: bit-exact. ONNX Runtime's CPU DepthToSpace is a generic 6-D
    transpose; this ConvTranspose ran 3x faster (2.0 vs 6.0 ms for 12 x 360 x 640 -> 3 x 720 x 1280, one
    interleaved run, 2 threads). Needs the channel count: from shape inference, which edgesr's exports carry.
    Returns the number of nodes replaced."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(proto)
    channels, dtypes = {}, {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[vi.name] = dims[1].dim_value
            dtypes[vi.name] = vi.type.tensor_type.elem_type
    replaced = 0
    nodes = list(proto.graph.node)
    for i, n in enumerate(nodes):
        if n.op_type != "DepthToSpace" or n.domain not in STANDARD_DOMAINS:
            continue
        c_in = channels.get(n.input[0])
        if c_in is None or dtypes.get(n.input[0]) not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        r = next(a.i for a in n.attribute if a.name == "blocksize")
        mode = next((a.s.decode() for a in n.attribute if a.name == "mode"), "DCR")
        c_out = c_in // (r * r)
        w = np.zeros((c_in, c_out, r, r), np.float32)
        for c in range(c_out):
            for p in range(r):
                for q in range(r):
                    src = c * r * r + p * r + q if mode == "CRD" else (p * r + q) * c_out + c
                    w[src, c, p, q] = 1.0
        name = f"{n.name or n.output[0]}_shuffle_weight"
        if dtypes[n.input[0]] == onnx.TensorProto.FLOAT16:  # an FP16 graph: the weights in its type (0/1: exact)
            w = w.astype(np.float16)
        proto.graph.initializer.append(numpy_helper.from_array(w, name))
        conv = helper.make_node("ConvTranspose", [n.input[0], name], list(n.output), name=n.name or None,
                                kernel_shape=[r, r], strides=[r, r])
        proto.graph.node.remove(n)
        proto.graph.node.insert(i, conv)
        replaced += 1
    if replaced:
        onnx.checker.check_model(proto)
    return replaced


_ANCHOR_OPS = {"Unsqueeze", "Expand", "Reshape", "Shape", "Concat", "Constant", "Tile", "Gather", "Slice", "Cast"}


def _shuffle_weight(c_in: int, c_used: int, r: int, mode: str):
    import numpy as np

    c_out = c_used // (r * r)
    w = np.zeros((c_in, c_out, r, r), np.float32)
    for c in range(c_out):
        for p in range(r):
            for q in range(r):
                w[c * r * r + p * r + q if mode == "CRD" else (p * r + q) * c_out + c, c, p, q] = 1.0
    return w


def pad_image_tail(proto, multiple: int = 16) -> int:
    """Give every image-producing convolution (Conv -> [Add anchor] -> DepthToSpace) a multiple of
    ``multiple`` output channels, in place, computing the same image:

    * the conv's extra output channels have zero weights and biases;
    * the anchor (the LR input repeated r^2 times along channels: ``repeat_interleave`` exported as
      Unsqueeze/Expand/Reshape) becomes a 1x1 Conv of ``lr`` with 0/1 weights, zero on the extra channels
      (also where the conv needs no padding, e.g. x4's 48 channels: OpenVINO runs the exported anchor of a
      quantized graph unfaithfully);
    * the DepthToSpace becomes the ConvTranspose of :func:`shuffle_as_conv_transpose`, with zero rows for
      the extra channels.

    Why: ONNX Runtime's INT8 convolution (NHWC) ran the 12-channel image conv of a 16-channel x2 student in
    6.3 ms against 2.5 ms for each 16-channel body conv; padded to 16 it took 2.4 ms, and the INT8 student
    ran 1.15x faster (18.5 -> 16.0 ms, same Set5 PSNR to 0.001 dB). The export stage checks the result
    against PyTorch (parity). Returns the number of image convs rewritten."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    graph_inputs = {i.name for i in g.input}
    padded = 0
    for d2s in [n for n in g.node if n.op_type == "DepthToSpace" and n.domain in STANDARD_DOMAINS]:
        found = _image_tail(g, d2s, producer, inits, graph_inputs)
        if found is not None and _pad_image_tail_at(g, d2s, *found, inits, multiple):
            padded += 1
    if padded:
        _drop_unused(proto)
    return padded


def _anchor_source(tensor: str, producer: dict, inits: dict, graph_inputs: set) -> str | None:
    """The graph input ``tensor`` is computed from through data-movement ops only, else None."""
    seen, stack, source = set(), [tensor], None
    while stack:
        t = stack.pop()
        if t in graph_inputs:
            if source not in (None, t):
                return None
            source = t
            continue
        if t in inits or t == "" or t in seen:
            continue
        seen.add(t)
        n = producer.get(t)
        if n is None or n.op_type not in _ANCHOR_OPS:
            return None
        stack.extend(n.input)
    return source


def _image_tail(g, d2s, producer: dict, inits: dict, graph_inputs: set):
    """(conv, add or None, anchor input or None) of an image tail ``Conv -> [Add anchor] -> d2s`` that
    :func:`pad_image_tail` can rewrite, else None."""
    add = producer.get(d2s.input[0])
    conv, anchor = None, None
    if add is not None and add.op_type == "Conv":
        conv = add
        add = None
    elif add is not None and add.op_type == "Add":
        for i, t in enumerate(add.input):
            p = producer.get(t)
            if p is not None and p.op_type == "Conv":
                conv, other = p, add.input[1 - i]
                anchor = _anchor_source(other, producer, inits, graph_inputs)
                if anchor is None:
                    conv = None
                break
    if conv is None or conv.input[1] not in inits:
        return None
    consumers = [n for n in g.node for t in n.input if t == conv.output[0]]
    if len(consumers) != 1 or (add is not None and sum(t == add.output[0] for n in g.node for t in n.input) != 1):
        return None  # the conv's (or the sum's) channels are read elsewhere too: padding would change that
    return conv, add, anchor


def _pad_image_tail_at(g, d2s, conv, add, anchor: str | None, inits: dict, multiple: int) -> bool:
    """The rewrite of one image tail (see :func:`pad_image_tail`); False when there is nothing to do."""
    import numpy as np
    from onnx import helper, numpy_helper

    r = next(a.i for a in d2s.attribute if a.name == "blocksize")
    mode = next((a.s.decode() for a in d2s.attribute if a.name == "mode"), "DCR")
    w = numpy_helper.to_array(inits[conv.input[1]])
    c = w.shape[0]
    cp = -(-c // multiple) * multiple
    if (cp == c and anchor is None) or (mode != "CRD" and anchor is not None):
        return False  # already a multiple and nothing to rewrite; or an anchor layout this rewrite does not know
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(
        np.concatenate([w, np.zeros((cp - c,) + w.shape[1:], w.dtype)]), conv.input[1]))
    if cp > c and len(conv.input) > 2 and conv.input[2] in inits:
        b = numpy_helper.to_array(inits[conv.input[2]])
        inits[conv.input[2]].CopyFrom(numpy_helper.from_array(
            np.concatenate([b, np.zeros(cp - c, b.dtype)]), conv.input[2]))
    base = d2s.name or d2s.output[0]
    if add is not None:
        colours = c // (r * r)
        wa = np.zeros((cp, colours, 1, 1), np.float32)
        for j in range(c):
            wa[j, j // (r * r), 0, 0] = 1.0  # repeat_interleave: channel j <- colour j // r^2
        g.initializer.append(numpy_helper.from_array(wa, f"{base}_anchor_weight"))
        anchor_out = f"{base}_anchor"
        idx = list(g.node).index(add)
        g.node.insert(idx, helper.make_node("Conv", [anchor, f"{base}_anchor_weight"], [anchor_out],
                                            name=f"{base}_anchor_conv", kernel_shape=[1, 1]))
        add.input[1 - list(add.input).index(conv.output[0])] = anchor_out
    g.initializer.append(numpy_helper.from_array(_shuffle_weight(cp, c, r, mode), f"{base}_shuffle_weight"))
    idx = list(g.node).index(d2s)
    g.node.remove(d2s)
    g.node.insert(idx, helper.make_node("ConvTranspose", [d2s.input[0], f"{base}_shuffle_weight"], list(d2s.output),
                                        name=d2s.name or None, kernel_shape=[r, r], strides=[r, r]))
    return True


def _drop_unused(proto) -> None:
    """Drop what only fed the replaced anchors (their Expand/Reshape chains), then the stale shapes."""
    import onnx

    g = proto.graph
    while True:
        used = {t for n in g.node for t in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {t for n in g.node for t in n.input}
    for i in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(i)
    del g.value_info[:]
    onnx.checker.check_model(proto)


def unsigned_activations(proto) -> int:
    """Rewrite, in place, every signed (int8) activation quantizer of a Q/DQ graph as the unsigned one that gives
    the same values: QuantizeLinear(x, s, z) as uint8 with zero point z + 128 (its integers are the int8 ones plus
    128, the clamp [-128, 127] becomes [0, 255]) and the DequantizeLinear(s) that read it with the same zero point:
    (q + 128 - (z + 128)) s, the same floats. Weights (constant int8 tensors) stay signed. Returns the number of
    quantizers rewritten.

    Why: OpenVINO (2026.4, CPU) computes a Concat of signed INT8 activations feeding a convolution wrong (a 2 x 4
    channel Concat -> Conv: 20-40 % of the output's range against ONNX Runtime; with unsigned activations the
    same graph agrees to the last step), so the TensorRT form (symmetric signed activations) of any network with
    concatenations (IMDN, RFDN) lost 10+ dB there. The OpenVINO backend runs this form, in memory."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consts = set(inits) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    readers: dict[str, list] = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    new_zero: dict[str, str] = {}
    rewritten = 0
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.domain in STANDARD_DOMAINS]:
        if q.input[0] in consts or len(q.input) < 3 or inits.get(q.input[2]) is None \
                or inits[q.input[2]].data_type != TensorProto.INT8:
            continue
        dqs = readers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or d.domain not in STANDARD_DOMAINS or len(d.input) < 3
                          or d.input[2] != q.input[2] for d in dqs) or q.output[0] in {o.name for o in g.output}:
            continue  # read by something else than its dequantizers: its integers must stay as they are
        zp = q.input[2]
        if zp not in new_zero:
            z = numpy_helper.to_array(inits[zp]).astype(np.int16) + 128
            new_zero[zp] = f"{zp}_as_uint8"
            g.initializer.append(numpy_helper.from_array(z.astype(np.uint8), new_zero[zp]))
        for n in (q, *dqs):
            n.input[2] = new_zero[zp]
        rewritten += 1
    if rewritten:
        used = {t for n in g.node for t in n.input}
        for i in [i for i in g.initializer if i.name in new_zero and i.name not in used]:
            g.initializer.remove(i)
        del g.value_info[:]  # the quantized tensors' element types changed
    return rewritten


def shuffle_nodes(proto) -> list[str]:
    """Names of the ConvTranspose nodes that are pixel shuffles (0/1 weights, one 1 per input channel at
    most): exact rearrangements that a quantizer must leave in float."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    names = []
    for n in proto.graph.node:
        if n.op_type != "ConvTranspose" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if np.isin(w, (0.0, 1.0)).all() and (w.reshape(w.shape[0], -1).sum(axis=1) <= 1).all():
            names.append(n.name)
    return names


INT16_MAX = 32767


def u8s8_pair_sum_max(proto) -> int:
    """The largest |a1*w1 + a2*w2| a uint8-activation x int8-weight convolution of the graph can form from two
    products (raw integers: a in [0, 255], w its weight's quantized value): x86 CPUs without VNNI add such pairs
    in a saturating int16 (``vpmaddubsw``), so a graph whose bound exceeds 32,767 can compute wrongly there.
    2 x 255 x 127 = 64,770 with 8-bit weights, 2 x 255 x 64 = 32,640 with 7-bit ones. 0: no such convolution."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    worst = 0
    for n in proto.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose") or len(n.input) < 2:
            continue
        w_dq, x_dq = producer.get(n.input[1]), producer.get(n.input[0])
        if not (w_dq and x_dq and w_dq.op_type == x_dq.op_type == "DequantizeLinear" and w_dq.input[0] in inits):
            continue
        x_q = producer.get(x_dq.input[0])
        zp_name = x_dq.input[2] if len(x_dq.input) > 2 else ""
        act_dtype = numpy_helper.to_array(inits[zp_name]).dtype if zp_name in inits else np.dtype(np.uint8)
        if x_q is None or act_dtype != np.uint8:
            continue
        w = numpy_helper.to_array(inits[w_dq.input[0]])
        if w.dtype == np.int8:
            worst = max(worst, 2 * 255 * int(np.abs(w.astype(np.int32)).max()))
    return worst
